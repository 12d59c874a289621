"""The encoded examples of a split as a read-only sequence over their Arrow dataset.

Training indexes examples (``examples[i]``), counts them (``len``), slices them (validation's
first rows, each process's share) and iterates over them. :class:`ExampleView` does all of that
reading rows from the memory-mapped Arrow file on demand, so a million examples are not a
million Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .encode import Example

_BATCH = 1000


class ExampleView(Sequence):
    """:class:`Example` items read from a dataset with ``input_ids``, ``labels`` and ``truncated`` columns.

    ``rows`` (a ``range``) picks the dataset's rows this view shows; a slice of a view is a view.
    """

    def __init__(self, dataset, rows: range | None = None) -> None:
        self.dataset = dataset if dataset.format["type"] is None else dataset.with_format(None)  # plain lists
        self._rows = range(len(dataset)) if rows is None else rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return ExampleView(self.dataset, self._rows[key])
        row = self.dataset[self._rows[key]]  # the range raises IndexError past either end
        return Example(row["input_ids"], row["labels"], row["truncated"])

    def __iter__(self) -> Iterator[Example]:
        for start in range(0, len(self._rows), _BATCH):
            batch = self.dataset[self._rows[start : start + _BATCH]]
            yield from map(Example, batch["input_ids"], batch["labels"], batch["truncated"])

    def lengths(self) -> list[int]:
        """Every example's token count, read from the Arrow column in one pass (no Example is built)."""
        import pyarrow.compute as pc

        column = self.dataset.with_format("arrow")["input_ids"]  # the dataset's rows, in its order
        counts = pc.list_value_length(column).to_pylist()
        return [counts[i] for i in self._rows]

    def __repr__(self) -> str:
        return f"ExampleView({len(self)} examples)"
