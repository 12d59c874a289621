"""The encoded examples of a split as a read-only sequence over their Arrow dataset.

Training indexes examples (``examples[i]``), counts them (``len``), slices them (validation's
first rows, each process's share) and iterates over them. :class:`ExampleView` does all of that
reading rows from the memory-mapped Arrow file on demand, so a million examples are not a
million Python objects. :class:`PairView` does the same for preference pairs, which may also
carry their reference log-probabilities (one array beside the Arrow file, not a column of it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .pairs import PairExample
from .row_encoding import Example

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


_SIDES = ("chosen", "rejected")


class PairView(Sequence):
    """:class:`PairExample` items read from a dataset with ``chosen_*``/``rejected_*`` ``input_ids`` and ``labels``.

    ``references`` (a ``len(view) x 2`` tensor, or None) gives each pair of the view its reference
    log-probabilities (chosen, rejected); :meth:`with_references` makes a view that carries them.
    """

    def __init__(self, dataset, rows: range | None = None, references=None) -> None:
        self.dataset = dataset if dataset.format["type"] is None else dataset.with_format(None)
        self._rows = range(len(dataset)) if rows is None else rows
        self.references = references

    def __len__(self) -> int:
        return len(self._rows)

    def _pair(self, position: int, row: dict) -> PairExample:
        sides = (Example(row[f"{s}_input_ids"], row[f"{s}_labels"], row["truncated"]) for s in _SIDES)
        reference = None if self.references is None else tuple(float(v) for v in self.references[position])
        return PairExample(*sides, reference)

    def __getitem__(self, key):
        if isinstance(key, slice):
            references = None if self.references is None else self.references[key]
            return PairView(self.dataset, self._rows[key], references)
        position = range(len(self._rows))[key]  # IndexError past either end, as a list's
        return self._pair(position, self.dataset[self._rows[position]])

    def __iter__(self) -> Iterator[PairExample]:
        for start in range(0, len(self._rows), _BATCH):
            batch = self.dataset[self._rows[start : start + _BATCH]]
            for n in range(len(batch["truncated"])):
                yield self._pair(start + n, {name: values[n] for name, values in batch.items()})

    def lengths(self) -> list[int]:
        """Every pair's width in a batch (its longer side), read from the Arrow columns in one pass."""
        import pyarrow.compute as pc

        table = self.dataset.with_format("arrow")
        chosen, rejected = (pc.list_value_length(table[f"{s}_input_ids"]) for s in _SIDES)
        counts = pc.max_element_wise(chosen, rejected).to_pylist()
        return [counts[i] for i in self._rows]

    def with_references(self, references) -> PairView:
        """This view, its pairs carrying ``references`` (``len(self) x 2``: chosen, rejected)."""
        if references is not None and len(references) != len(self):
            raise ValueError(f"{len(references)} reference rows for {len(self)} pairs")
        return PairView(self.dataset, self._rows, references)

    def __repr__(self) -> str:
        return f"PairView({len(self)} pairs)"
