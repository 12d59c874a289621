"""--homotopy-fraction: the schedule gate's ramp as a share of the run (solo_cli/training/config.py ramp_steps)."""

import json

import pytest

from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.training.config import TrainConfig, build_config
from solo_cli.training.run import check_output, execute, prepare


@pytest.mark.parametrize(
    "values, steps, expected",
    [
        ({}, 658, 65),  # the default: 10% of the run, as before the option
        ({}, 5, 1),  # at least one step
        ({"homotopy_fraction": 0.3}, 658, 197),
        ({"homotopy_fraction": 0.7}, 90, 63),  # 90 x 0.7 is 62.999... in floating point
        ({"homotopy_fraction": 1.0}, 658, 658),
        ({"homotopy_steps": 40}, 658, 40),
    ],
)
def test_ramp_steps(values, steps, expected):
    assert TrainConfig(**values).validate().ramp_steps(steps) == expected


def test_the_default_is_ten_percent_rounded_down_for_every_run_length():
    cfg = TrainConfig()
    assert all(cfg.ramp_steps(steps) == max(1, steps // 10) for steps in range(1, 5000))


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, float("nan")])
def test_a_fraction_outside_0_1_is_refused_naming_the_flag(value):
    with pytest.raises(UsageError) as info:
        TrainConfig(homotopy_fraction=value).validate()
    assert info.value.as_flags().startswith("--homotopy-fraction ") and "must be in (0, 1]" in info.value.as_flags()


def test_fraction_and_steps_together_are_refused():
    with pytest.raises(UsageError) as info:
        TrainConfig(homotopy_fraction=0.3, homotopy_steps=20).validate()
    assert "--homotopy-fraction and --homotopy-steps both set the ramp's length; give one" in info.value.as_flags()


def test_yaml_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("homotopy-fraction: 0.3\nlr-b-ratio: 16\n")
    cfg = build_config(path, {})
    assert cfg.homotopy_fraction == 0.3 and cfg.lr_b_ratio == 16.0


def test_the_gate_ramps_over_the_fraction_of_the_run(tiny_model_dir, tiny_data, tmp_path):
    cfg = TrainConfig(
        data=str(tiny_data),
        output=str(tmp_path / "run"),
        connections="emb->2,1->3",
        rank=2,
        gate="schedule",
        homotopy_fraction=0.5,
        max_steps=10,
        batch_size=4,
        seed=0,
        chat_template=False,
        device="cpu",
    ).validate()
    run = prepare(cfg, load_model(tiny_model_dir))
    assert run.adapter.config.homotopy_steps == 5
    check_output(cfg)
    execute(run)
    gates = {
        r["step"]: r["gate"]
        for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "gate" in r
    }
    values = [gates[s] for s in sorted(gates)]
    assert values == sorted(values) and values[-1] == 1, gates  # a ramp up to t = 1
    # ramping for half the run's 10 steps: 4 or 5 logged steps below 1, whether step s trains at t = s/5 or (s+1)/5
    assert sum(v < 1 for v in values) in (4, 5), gates
    assert json.loads((tmp_path / "run" / "config.json").read_text())["homotopy_steps_resolved"] == 5


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--homotopy-fraction", "1.5"], ["--homotopy-fraction 1.5", "must be in (0, 1]"]),
        (["--lr-b-ratio", "0"], ["--lr-b-ratio 0.0", "must be a positive number"]),
        (["--homotopy-fraction", "0.3", "--homotopy-steps", "5"], ["--homotopy-fraction and --homotopy-steps"]),
    ],
)
def test_bad_flags_end_in_one_line_and_exit_2(tiny_data, tmp_path, flags, needles):
    from support import assert_one_line, run

    code, lines = run("train", "--data", tiny_data, "-o", tmp_path / "run", *flags)
    assert code == 2
    assert_one_line(lines, *needles)
    assert not (tmp_path / "run").exists()
