"""Training configuration: defaults, validation, YAML files and precedence (solo_cli/config.py)."""

import dataclasses
import math

import pytest

from solo_cli.errors import UsageError
from solo_cli.training.config import TrainConfig, build_config, load_yaml


def write_yaml(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- validate -----------------------------------------------------------------------------------


def test_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.validate() is cfg


def test_to_dict_has_every_field():
    assert set(TrainConfig().to_dict()) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize(
    "changes",
    [
        {"gate": "schedule"},
        {"gate": "zero-init"},
        {"schedule": "cosine"},
        {"schedule": "constant"},
        {"dtype": "bfloat16"},
        {"dtype": "float16"},
        {"device": "cpu"},
        {"device": "cuda"},
        {"device": "cuda:1"},
        {"device": "mps"},
        {"max_steps": 1, "eval_every": 1, "save_every": 1, "homotopy_steps": 1},
        {"warmup": 0, "max_eval_rows": 0, "weight_decay": 0.0, "label_smoothing": 0.0},
        {"label_smoothing": 0.99},
        {"rank": 1, "batch_size": 1, "grad_accum": 1, "max_seq_length": 1, "log_every": 1},
    ],
)
def test_good_values_pass(changes):
    TrainConfig(**changes).validate()


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"gate": "sometimes"}, "--gate"),
        ({"schedule": "exponential"}, "--schedule"),
        ({"dtype": "fp8"}, "--dtype"),
        ({"device": "tpu"}, "--device"),
        ({"rank": 0}, "--rank"),
        ({"batch_size": 0}, "--batch-size"),
        ({"grad_accum": -1}, "--grad-accum"),
        ({"max_seq_length": 0}, "--max-seq-length"),
        ({"log_every": 0}, "--log-every"),
        ({"max_steps": 0}, "--max-steps"),
        ({"eval_every": 0}, "--eval-every"),
        ({"save_every": -5}, "--save-every"),
        ({"homotopy_steps": 0}, "--homotopy-steps"),
        ({"epochs": 0.0}, "--epochs"),
        ({"lr": -1e-3}, "--lr"),
        ({"lr": 0.0}, "--lr"),
        ({"warmup": -1}, "--warmup"),
        ({"max_eval_rows": -1}, "--max-eval-rows"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
        ({"label_smoothing": -0.1}, "--label-smoothing"),
        ({"weight_decay": -0.01}, "--weight-decay"),
    ],
)
def test_bad_value_names_the_flag(changes, flag):
    with pytest.raises(UsageError, match=rf"^{flag} "):
        TrainConfig(**changes).validate()


def test_bad_value_message_shows_value_and_choices():
    with pytest.raises(UsageError, match=r"--gate 'sometimes': use one of schedule, zero-init"):
        TrainConfig(gate="sometimes").validate()
    with pytest.raises(UsageError, match=r"--rank 0: must be at least 1"):
        TrainConfig(rank=0).validate()


def test_several_bad_values_in_one_error():
    with pytest.raises(UsageError) as info:
        TrainConfig(gate="x", rank=0, lr=-1.0, dtype="int8", label_smoothing=1.0).validate()
    message = str(info.value)
    for flag in ("--gate", "--rank", "--lr", "--dtype", "--label-smoothing"):
        assert flag in message
    assert message.count(";") == 4
    assert info.value.exit_code == 2


def test_nan_learning_rate_is_rejected():
    with pytest.raises(UsageError, match="--lr"):
        TrainConfig(lr=math.nan).validate()


def test_negative_max_grad_norm_is_rejected():
    with pytest.raises(UsageError, match="--max-grad-norm"):
        TrainConfig(max_grad_norm=-1.0).validate()


@pytest.mark.parametrize("device", ["cudax", "cuda:abc"])
def test_malformed_cuda_device_is_rejected(device):
    with pytest.raises(UsageError, match="--device"):
        TrainConfig(device=device).validate()


# --- load_yaml ----------------------------------------------------------------------------------


def test_load_yaml_values(tmp_path):
    path = write_yaml(tmp_path, "rank: 8\ngate: schedule\nepochs: 2\nlr: 0.001\nchat_template: false\nrevision: null\n")
    values = load_yaml(path)
    assert values == {"rank": 8, "gate": "schedule", "epochs": 2.0, "lr": 0.001, "chat_template": False, "revision": None}
    assert isinstance(values["epochs"], float)


def test_load_yaml_empty_file(tmp_path):
    assert load_yaml(write_yaml(tmp_path, "")) == {}
    assert load_yaml(write_yaml(tmp_path, "# only a comment\n")) == {}


def test_load_yaml_dashed_keys(tmp_path):
    path = write_yaml(tmp_path, "max-steps: 10\nbatch-size: 4\nlabel-smoothing: 0.1\n")
    assert load_yaml(path) == {"max_steps": 10, "batch_size": 4, "label_smoothing": 0.1}


def test_load_yaml_unknown_keys_are_listed(tmp_path):
    path = write_yaml(tmp_path, "rank: 4\nlearning_rate: 0.1\nbogus: 1\n")
    with pytest.raises(UsageError, match=r"--config .*config\.yaml: unknown keys bogus, learning_rate;"):
        load_yaml(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("rank: abc\n", "rank must be int, got 'abc'"),
        ("rank: 1.5\n", "rank must be int, got 1.5"),
        ("rank: true\n", "rank must be int, got True"),
        ("lr: fast\n", "lr must be float, got 'fast'"),
        ("epochs: yes\n", "epochs must be float, got True"),
        ("max_steps: ten\n", r"max_steps must be int or None, got 'ten'"),
        ("gate: 3\n", "gate must be str, got 3"),
        ("overwrite: 1\n", "overwrite must be bool, got 1"),
        ("connections: [1, 2]\n", r"connections must be str, got \[1, 2\]"),
    ],
)
def test_load_yaml_bad_types_name_the_key(tmp_path, text, message):
    with pytest.raises(UsageError, match=rf"--config .*config\.yaml: {message}"):
        load_yaml(write_yaml(tmp_path, text))


def test_load_yaml_reports_every_bad_type_at_once(tmp_path):
    path = write_yaml(tmp_path, "rank: abc\nbatch_size: many\n")
    with pytest.raises(UsageError) as info:
        load_yaml(path)
    assert "rank" in str(info.value)
    assert "batch_size" in str(info.value), f"only the first bad value is reported: {info.value}"


def test_load_yaml_accepts_exponent_learning_rates(tmp_path):
    path = write_yaml(tmp_path, "lr: 1e-3\n")
    try:
        values = load_yaml(path)
    except UsageError as exc:
        pytest.fail(f"`lr: 1e-3` is rejected: {exc}")
    assert values == {"lr": 1e-3}


def test_load_yaml_not_a_mapping(tmp_path):
    with pytest.raises(UsageError, match=r"--config .*: expected a mapping"):
        load_yaml(write_yaml(tmp_path, "- rank\n- 4\n"))


def test_load_yaml_invalid_yaml(tmp_path):
    with pytest.raises(UsageError, match=r"--config .*config\.yaml: not valid YAML"):
        load_yaml(write_yaml(tmp_path, "rank: [4\n"))


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"--config .*nope\.yaml: cannot read it"):
        load_yaml(tmp_path / "nope.yaml")


# --- build_config -------------------------------------------------------------------------------


def test_build_config_defaults():
    assert build_config(None, {}) == TrainConfig()


def test_build_config_precedence(tmp_path):
    path = write_yaml(tmp_path, "rank: 8\nlr: 0.01\ngate: schedule\n")
    cfg = build_config(path, {"rank": 4, "lr": None, "gate": None, "seed": 7})
    assert cfg.rank == 4  # flag beats YAML
    assert cfg.lr == 0.01  # None flag: YAML value kept
    assert cfg.gate == "schedule"
    assert cfg.seed == 7  # flag beats default
    assert cfg.batch_size == TrainConfig().batch_size  # neither: default


def test_build_config_false_override_is_given(tmp_path):
    path = write_yaml(tmp_path, "overwrite: true\ntrain_on_prompt: true\n")
    cfg = build_config(path, {"overwrite": False, "train_on_prompt": None})
    assert cfg.overwrite is False
    assert cfg.train_on_prompt is True


def test_build_config_validates(tmp_path):
    path = write_yaml(tmp_path, "gate: nope\n")
    with pytest.raises(UsageError, match="--gate 'nope'"):
        build_config(path, {})
    with pytest.raises(UsageError, match="--rank 0"):
        build_config(None, {"rank": 0})


def test_the_retired_learned_gate_is_refused_with_the_reason():
    with pytest.raises(UsageError, match=r"--gate 'learned': the learned gate was retired .* use schedule or zero-init"):
        TrainConfig(gate="learned").validate()


def test_bad_source_norm_names_the_flag():
    with pytest.raises(UsageError, match=r"--source-norm 'layer': use one of rms, none"):
        TrainConfig(source_norm="layer").validate()
