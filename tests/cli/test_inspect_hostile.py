"""`solo inspect` on hostile input: flags that would be ignored, bad choices, terminal escapes, absurd sizes."""

import pytest
from support import assert_one_line, info_for, make_adapter, perturb, run, runner
from tiny import HIDDEN, LAYERS, make_model

from solo_cli import save_adapter
from solo_cli.cli import app


@pytest.fixture
def adapter_file(tmp_path):
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule", plan=[(0, 3)]))
    return save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--connections", "0->3", "--rank", "3"], "--connections and --rank are"),
        (["--gate", "zero-init"], "--gate is"),
        (["--model", "m"], "--model is"),
        (["--trust-remote-code"], "--trust-remote-code is"),
        (["--rank", "0"], "--rank is"),
    ],
)
def test_plan_flags_beside_an_adapter_are_refused_naming_them(adapter_file, flags, named):
    code, lines = run("inspect", adapter_file, *flags)
    assert code == 2
    assert_one_line(lines, named, "costing a plan", "not for describing an adapter file")


def test_an_adapter_alone_is_still_described(adapter_file):
    code, lines = run("inspect", adapter_file)
    assert code == 0, lines


@pytest.mark.parametrize("gate", ["banana", "learned", ""])
def test_a_gate_that_is_not_a_choice_is_refused(tiny_model_dir, gate):
    code, lines = run("inspect", "--model", tiny_model_dir, "--gate", gate)
    assert code == 2
    assert_one_line(lines, "--gate", "schedule, zero-init")


def test_a_gate_holding_terminal_escapes_is_never_printed_raw(tiny_model_dir):
    evil = "\x1b]0;owned\x07\x1b[2J"
    result = runner.invoke(app, ["inspect", "--model", tiny_model_dir, "--gate", evil])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b" in result.output  # shown escaped, so the user sees what was typed


def test_the_plan_table_escapes_what_it_shows(monkeypatch, tiny_model_dir):
    """Every value of the plan report is escaped, not only those that pass the checks."""
    import solo_cli.cli.display as display
    import solo_cli.training.plan_cost as plan_cost

    real = plan_cost.plan_report

    def report(*args, **kwargs):
        rep = real(*args, **kwargs)
        rep["plan"]["gate"] = "\x1b[31mred"
        return rep

    monkeypatch.setattr(plan_cost, "plan_report", report)
    result = runner.invoke(app, ["inspect", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[31mred" in result.output
    assert display.clean("\x1b") == "\\x1b"


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("top:100000000", ["top:100000000", f"the model's {LAYERS} blocks", f"from 1 to {LAYERS}"]),
        (f"top:{LAYERS + 1}", [f"{LAYERS + 1} is more than the model's {LAYERS} blocks"]),
        ("top:1:100000000", ["is out of range"]),  # a long span builds no list: its one connection is refused
        ("chain:100000000", ["the plan has no connections"]),
        ("top:" + "9" * 5000, ["--connections", "is more than"]),
        ("0->" + "9" * 5000, ["--connections", "cannot parse"]),
    ],
)
def test_absurd_plan_sizes_are_refused_from_the_config(tiny_model_dir, spec, needles):
    code, lines = run("inspect", "--model", tiny_model_dir, "--connections", spec)
    assert code == 2
    assert_one_line(lines, "--connections", *needles)


def test_top_of_every_block_is_still_a_plan(tiny_model_dir):
    code, lines = run("inspect", "--model", tiny_model_dir, "--connections", f"top:{LAYERS}:1", "--json")
    assert code == 0, lines


@pytest.mark.parametrize("rank", [10**9, HIDDEN + 1])
def test_a_rank_above_the_hidden_size_is_refused(tiny_model_dir, rank):
    code, lines = run("inspect", "--model", tiny_model_dir, "--rank", rank)
    assert code == 2
    assert_one_line(lines, f"--rank {rank}", f"hidden size {HIDDEN}", f"--rank {HIDDEN} or less")


def test_a_rank_of_the_hidden_size_is_costed(tiny_model_dir):
    code, lines = run("inspect", "--model", tiny_model_dir, "--rank", HIDDEN, "--connections", "0->3")
    assert code == 0, lines
    assert f"{2 * HIDDEN * HIDDEN:,}" in "\n".join(lines)
