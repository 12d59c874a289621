"""Helpers several test modules share: tiny adapters, their file metadata, and running the CLI in-process."""

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from solo_cli import fingerprint
from solo_cli.cli import app
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
from solo_cli.engine.adapter_file import AdapterInfo

REPO = Path(__file__).resolve().parent.parent
PLAN = [(-1, 2), (0, 3), (1, 3)]
runner = CliRunner()


def make_adapter(model, gate="learned", plan=PLAN, rank=4, seed=0, source_norm="none"):
    torch.manual_seed(seed)
    config = AdapterConfig(
        plan, rank, gate, homotopy_steps=10, hidden_size=fingerprint(model).hidden_size, source_norm=source_norm
    )
    return SoloAdapter(config)


def perturb(adapter, scale=0.5):
    """Make every connection do something (t != 0, B != 0), as after training."""
    with torch.no_grad():
        for conn in adapter.connections.values():
            conn.B.normal_(std=scale)
            if conn.gate is not None:
                conn.gate.fill_(0.7)
    return adapter


def inputs(batch=2, length=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 300, (batch, length), generator=g)


def info_for(model, adapter):
    return AdapterInfo(
        config=adapter.config,
        fingerprint=fingerprint(model),
        base_model="tiny",
        base_revision="abc",
        data_format="completion",
        chat_template=True,
        training={"steps": 3, "final_loss": 1.5},
    )


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def assert_one_line(lines, *needles):
    """Exactly one error line, holding every needle, and no traceback anywhere."""
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path) -> tuple[list[dict], str]:
    """A JSONL file's checked rows (their format's fields) and their format, read as `solo train --data FILE` reads them."""
    rows = load_rows(path)
    return list(rows.rows()), rows.fmt


def encode_rows(rows: list[dict], fmt: str, tokenizer, **settings):
    """``rows`` (of format ``fmt``) encoded by the product's one path: a JSONL file, read and checked, tokenized by
    ``encode_rowset`` with ``settings`` (chat_template, train_on_prompt, max_len, context); the examples as a list."""
    import dataclasses
    import tempfile

    from solo_cli.data.split_encoding import encode_rowset

    with tempfile.TemporaryDirectory() as folder:
        rowset = load_rows(write_jsonl(Path(folder) / "rows.jsonl", rows))
        assert rowset.fmt == fmt, f"the rows are {rowset.fmt} rows, not {fmt}"
        data = encode_rowset(rowset, tokenizer, **settings)
        return dataclasses.replace(data, examples=list(data.examples))


def load_rows(path):
    """The training split of ``path`` as `solo train --data PATH` loads it (a checked RowSet)."""
    from solo_cli.data.sources import load_source
    from solo_cli.data.spec import DataSpec

    return load_source(DataSpec(path)).train


def micro_batches(examples, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1, lengths=None):
    """The sampler's stream one micro-batch a step from step ``start``, as process ``rank`` of ``world_size`` trains it:
    the trainer's path, :func:`step_batches` of the global batch and then the process's :func:`rank_share`."""
    from solo_cli.training.sampler import rank_share, step_batches

    for step in step_batches(examples, batch_size * world_size, seed, start, lengths=lengths):
        yield rank_share(step[0], rank, batch_size)


def write_rows(path: Path, rows: list) -> Path:
    """``rows`` as the file ``path``'s suffix says: JSON lines, a JSON list, CSV or Parquet."""
    import pandas as pd

    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path
