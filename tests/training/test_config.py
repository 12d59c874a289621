"""Training configuration: defaults, validation, YAML files and precedence (solo_cli/config.py)."""

import dataclasses
import math
import re

import pytest

from solo_cli.errors import UsageError
from solo_cli.training.config import TrainConfig, build_config, load_yaml


def write_yaml(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(**changes) -> UsageError:
    """The error validate() raises for these values (``as_flags()``: how the CLI shows it)."""
    with pytest.raises(UsageError) as info:
        TrainConfig(**changes).validate()
    return info.value


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
        {"rank": 1, "batch_size": 1, "grad_accum": 1, "max_seq_length": 2, "log_every": 1},
        {"seed": 2**32 - 1, "lr": 1.0},
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
    error = refused(**changes)
    assert error.as_flags().startswith(f"{flag} ")
    assert error.message.startswith(flag.removeprefix("--").replace("-", "_") + " ")  # the library names the parameter


def test_bad_value_message_shows_value_and_choices():
    assert refused(gate="sometimes").as_flags() == "--gate 'sometimes': use one of schedule, zero-init"
    assert refused(rank=0).as_flags() == "--rank 0: must be at least 1"


def test_several_bad_values_in_one_error():
    error = refused(gate="x", rank=0, lr=-1.0, dtype="int8", label_smoothing=1.0)
    message = error.as_flags()
    for flag in ("--gate", "--rank", "--lr", "--dtype", "--label-smoothing"):
        assert flag in message
    assert message.count(";") == 4
    assert error.exit_code == 2


def test_nan_learning_rate_is_rejected():
    assert refused(lr=math.nan).as_flags().startswith("--lr nan")


def test_negative_max_grad_norm_is_rejected():
    assert refused(max_grad_norm=-1.0).as_flags().startswith("--max-grad-norm")


@pytest.mark.parametrize("device", ["cudax", "cuda:abc"])
def test_malformed_cuda_device_is_rejected(device):
    assert refused(device=device).as_flags().startswith("--device")


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
    with pytest.raises(UsageError, match=r"config .*config\.yaml: unknown keys bogus, learning_rate;"):
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
    with pytest.raises(UsageError, match=rf"config .*config\.yaml: {message}"):
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
    with pytest.raises(UsageError, match=r"config .*: expected a mapping"):
        load_yaml(write_yaml(tmp_path, "- rank\n- 4\n"))


def test_load_yaml_invalid_yaml(tmp_path):
    with pytest.raises(UsageError, match=r"config .*config\.yaml: not valid YAML"):
        load_yaml(write_yaml(tmp_path, "rank: [4\n"))


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"config .*nope\.yaml: cannot read it"):
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
    path = write_yaml(tmp_path, "gate: nope\n")  # a bad choice is refused by load_yaml (test_load_yaml_bad_choice...)
    with pytest.raises(UsageError, match=r"config .*config\.yaml: gate must be one of schedule, zero-init, got 'nope'"):
        build_config(path, {})
    with pytest.raises(UsageError) as info:  # the file's values get the flags' checks, and the file is named
        build_config(write_yaml(tmp_path, "rank: 0\n"), {})
    assert (
        info.value.as_flags() == f"--config {tmp_path / 'config.yaml'}: --rank 0: must be at least 1; fix the values in the file"
    )
    with pytest.raises(UsageError) as info:
        build_config(None, {"rank": 0})
    assert info.value.as_flags() == "--rank 0: must be at least 1"


def test_the_retired_learned_gate_is_refused_with_the_reason():
    message = refused(gate="learned").as_flags()
    assert re.fullmatch(r"--gate 'learned': the learned gate was retired .* use schedule or zero-init", message)


def test_bad_source_norm_names_the_flag():
    assert refused(source_norm="layer").as_flags() == "--source-norm 'layer': use one of rms, none"


def test_resume_and_overwrite_contradict():
    error = refused(resume="auto", overwrite=True)
    assert error.message.startswith("resume and overwrite contradict each other")
    assert error.as_flags().startswith("--resume and --overwrite contradict each other")


# --- the fields are the options -----------------------------------------------------------------


def test_every_field_declares_its_help():
    from solo_cli.training.config import option_of

    for f in dataclasses.fields(TrainConfig):
        assert option_of(f).help.strip().endswith("."), f"{f.name}: give it option(default, 'Help text.')"


@pytest.mark.parametrize(
    "text, message",
    [
        ("gate: sometimes\n", "gate must be one of schedule, zero-init, got 'sometimes'"),
        ("source-norm: layer\n", "source_norm must be one of rms, none, got 'layer'"),
        ("schedule: exponential\n", "schedule must be one of linear, cosine, constant, got 'exponential'"),
        ("dtype: fp8\n", "dtype must be one of auto, float32, bfloat16, float16, got 'fp8'"),
    ],
)
def test_load_yaml_bad_choice_names_the_key_and_the_choices(tmp_path, text, message):
    with pytest.raises(UsageError, match=rf"^config .*config\.yaml: {message}; fix the values in the file$"):
        load_yaml(write_yaml(tmp_path, text))


def test_load_yaml_lists_bad_choices_and_bad_types_in_one_error(tmp_path):
    with pytest.raises(UsageError) as info:
        load_yaml(write_yaml(tmp_path, "dtype: fp8\nrank: abc\nschedule: never\n"))
    assert str(info.value).count(" must be ") == 3


def test_load_yaml_leaves_the_retired_gate_to_validate_which_says_why(tmp_path):
    path = write_yaml(tmp_path, "gate: learned\n")
    assert load_yaml(path) == {"gate": "learned"}
    with pytest.raises(UsageError) as info:
        build_config(path, {})
    assert "the learned gate was retired" in info.value.as_flags()
