"""`solo train`'s options are TrainConfig's fields: each field is a flag with its help, and nothing else is."""

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest
import typer
from support import assert_one_line, run
from typer.main import get_command
from typer.testing import CliRunner

from solo_cli.cli import app
from solo_cli.cli.flags import config_parameters
from solo_cli.training.config import TrainConfig, option, option_of

OWN = {"config", "dry_run", "verbose"}  # the options of `solo train` that are not TrainConfig fields
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def train_options() -> dict:
    """The click parameters of `solo train`, by their Python name."""
    return {p.name: p for p in get_command(app).commands["train"].params}


def test_every_field_is_an_option_with_its_help():
    options = train_options()
    for name, f in FIELDS.items():
        assert name in options, f"TrainConfig.{name} is not a `solo train` option"
        assert options[name].help.startswith(option_of(f).help)


def test_help_shows_each_default_from_its_field():
    """`solo train --help` shows the defaults (as generate and eval do), read from TrainConfig's fields."""
    options = train_options()
    for name, value in {"rank": 3, "lr": 0.02, "batch_size": 8, "epochs": 1, "max_seq_length": 256, "gate": "schedule"}.items():
        assert options[name].help.endswith(f"  [default: {value}]"), options[name].help
    assert options["group_by_length"].help.endswith("[default: group-by-length]")
    assert options["packing"].help.endswith("[default: no-packing]")
    for quiet in ("overwrite", "eval_every", "output"):  # a switch, a default derived from others, one the help names
        assert "[default:" not in options[quiet].help, quiet
    squeezed = "".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "Peaklearningrate.[default:0.02]" in squeezed and "Rankofeveryconnection.[default:3]" in squeezed


def test_no_option_lacks_a_field():
    assert set(train_options()) - set(FIELDS) == OWN


def test_flag_spellings():
    options = train_options()
    assert options["output"].opts == ["--output", "-o"]
    assert options["model"].opts == ["--model", "-m"]
    assert options["chat_template"].opts == ["--chat-template"]
    assert options["chat_template"].secondary_opts == ["--no-chat-template"]
    assert options["max_seq_length"].opts == ["--max-seq-length"]
    for switch in ("overwrite", "grad_checkpoint", "train_on_prompt", "trust_remote_code"):
        assert options[switch].is_flag and not options[switch].secondary_opts, switch
    assert options["config"].opts == ["--config"] and options["dry_run"].opts == ["--dry-run"]


def test_help_lists_every_option_with_its_help():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    squeezed = "".join(result.output.split())  # help wraps lines (and inside --eval-every)
    for name, f in FIELDS.items():
        assert "".join(option_of(f).help.split()) in squeezed, name
    for flag in ("--config", "--dry-run", "--no-chat-template", "-o,", "-m,"):
        assert flag in result.output


def test_fields_are_none_unless_given(tiny_data, monkeypatch):
    """A flag left out reaches build_config as None, so the YAML file or the default applies."""
    import solo_cli.training.config as config_module

    seen = {}

    def stop(yaml_path, overrides):
        seen.update(overrides, yaml_path=yaml_path)
        raise typer.Exit(0)

    monkeypatch.setattr(config_module, "build_config", stop)
    result = CliRunner().invoke(app, ["train", "--data", tiny_data, "--rank", "3", "-o", "r", "--no-chat-template"])
    assert result.exit_code == 0, result.output
    assert set(seen) == set(FIELDS) | {"yaml_path"}
    assert (seen["rank"], seen["output"], seen["chat_template"], seen["data"]) == (3, "r", False, str(tiny_data))
    assert seen["lr"] is None and seen["overwrite"] is None and seen["yaml_path"] is None


def test_seed_out_of_range_is_refused_while_parsing(tmp_path):
    code, lines = run("train", "--seed", "-1", "-o", tmp_path / "r")
    assert code == 2
    assert_one_line(lines, "--seed -1: must be between 0 and 4294967295")


def test_a_new_field_is_a_new_flag():
    """What another engineer adds to TrainConfig (say --compile, --report-to) needs nothing more."""

    @dataclasses.dataclass
    class Newer(TrainConfig):
        compile: bool = option(False, "Compile the model first.")
        report_to: str | None = option(None, "Where to report metrics.", choices=("none", "wandb"))

    seen = {}

    def command(**options):
        seen.update(options)

    command.__signature__ = inspect.Signature(config_parameters(Newer))
    probe = typer.Typer(rich_markup_mode=None)
    probe.command()(command)
    probe.command("other")(lambda: None)  # two commands: typer keeps the command's name
    result = CliRunner().invoke(probe, ["command", "--compile", "--report-to", "wandb", "--rank", "5"])
    assert result.exit_code == 0, result.output
    assert (seen["compile"], seen["report_to"], seen["rank"], seen["lr"]) == (True, "wandb", 5, None)
    help_text = "".join(CliRunner().invoke(probe, ["command", "--help"]).output.split())
    assert "--compileCompilethemodelfirst." in help_text and "--report-to<str>Wheretoreportmetrics." in help_text


@pytest.mark.parametrize("flag", ["--log-every", "--max-eval-rows", "--max-grad-norm"])
def test_the_fields_that_were_yaml_only_are_flags_now(flag, tmp_path):
    code, lines = run("train", flag, "-3", "--data", "x.jsonl", "-o", tmp_path / "r")
    assert code == 2
    assert_one_line(lines, f"{flag} -")


def test_the_options_are_built_without_importing_torch():
    """`solo train --help` and usage errors stay quick: TrainConfig's module must not pull in torch."""
    code = "import sys, solo_cli.cli; from typer.main import get_command; get_command(solo_cli.cli.app); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


FLAG_VALUE_ERRORS = [
    (["train", "--seed", "-1", "--data", "x.jsonl"], "--seed -1"),
    (["train", "--lr", "5", "--data", "x.jsonl"], "--lr 5"),
    (["train", "--dtype", "fp8", "--data", "x.jsonl"], "--dtype 'fp8'"),
    (["train", "--batch-size", "0", "--data", "x.jsonl"], "--batch-size 0"),
    (["generate", "--top-p", "2", "hi"], "--top-p 2"),
    (["generate", "--dtype", "fp8", "hi"], "--dtype 'fp8'"),
    (["generate", "--device", "tpu", "hi"], "--device 'tpu'"),
    (["eval", "--data", "x.jsonl", "--batch-size", "0"], "--batch-size 0"),
    (["eval", "--data", "x.jsonl", "--device", "tpu"], "--device 'tpu'"),
]


def test_every_flag_value_error_comes_before_torch_is_imported():
    """A bad value is one line (exit 2) before torch, transformers or bitsandbytes are imported: within a second."""
    script = (
        "import io, json, sys, contextlib\n"
        "from solo_cli.cli import app\n"
        "heavy = ('torch', 'transformers', 'bitsandbytes')\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = app(args, standalone_mode=False)\n"
        "    print(json.dumps([code, err.getvalue(), [m for m in heavy if m in sys.modules]]))\n"
    )
    cases = json.dumps([args for args, _ in FLAG_VALUE_ERRORS])
    done = subprocess.run([sys.executable, "-c", script, cases], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    for (args, needle), (code, err, imported) in zip(FLAG_VALUE_ERRORS, results, strict=True):
        assert code == 2 and needle in err and err.count("error:") == 1, (args, err)
        assert imported == [], (args, imported)
