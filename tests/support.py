"""Helpers several test modules share: tiny adapters, their file metadata, and running the CLI in-process."""

import torch
from typer.testing import CliRunner

from solo_cli import fingerprint
from solo_cli.cli import app
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
from solo_cli.engine.adapter_file import AdapterInfo

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
