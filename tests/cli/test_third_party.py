"""Other packages' warnings and log lines stay off solo's stderr: in the run folder's third_party.log, shown with
--verbose, and an error record always shown (issue 28, item 11)."""

import itertools
import logging
import warnings

import pytest
from typer.testing import CliRunner

from solo_cli.cli import app, third_party
from solo_cli.training.run_folder import RunFolder

TRUST = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face Hub is in offline mode."
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def noisy_run(monkeypatch):
    """A run whose libraries talk while the model loads (before the run folder is written) and while it saves."""
    import solo_cli.training.run as run_module

    real_prepare, real_save = run_module.prepare, RunFolder.save_adapter

    runs = itertools.count(1)

    def prepare(*args, **kwargs):
        logging.getLogger("kernels._internals.hf_hub").warning(TRUST)
        # numbered: python shows a warning once per place and text, and this process runs train twice
        warnings.warn(f"a library's load-time UserWarning ({next(runs)})", UserWarning, stacklevel=1)
        return real_prepare(*args, **kwargs)

    def save_adapter(self, *args, **kwargs):
        logging.getLogger("transformers.modeling_utils").error("an error a library logged")
        logging.getLogger("bitsandbytes.backends").warning("a late bitsandbytes note")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(run_module, "prepare", prepare)
    monkeypatch.setattr(RunFolder, "save_adapter", save_adapter)


def test_train_keeps_other_packages_lines_in_the_run_folder_and_shows_them_with_verbose(
    noisy_run, tiny_model_dir, tiny_data, tmp_path
):
    out = tmp_path / "run"
    flags = ["--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--max-steps", 1, "--connections", "top:1"]
    result = invoke("train", *flags)
    assert result.exit_code == 0, result.output
    for quiet in (TRUST, "load-time UserWarning", "late bitsandbytes note"):
        assert quiet not in result.stderr, result.stderr
    assert "an error a library logged" in result.stderr  # an error is never only in a file
    log = (out / "third_party.log").read_text()
    for kept in (TRUST, "UserWarning: a library's load-time UserWarning", "an error a library logged", "late bitsandbytes note"):
        assert kept in log, log
    assert "WARNING kernels._internals.hf_hub: Skipping" in log

    result = invoke("train", *flags, "--overwrite", "--verbose")
    assert result.exit_code == 0, result.output
    for shown in (TRUST, "UserWarning: a library's load-time UserWarning", "late bitsandbytes note"):
        assert shown in result.stderr, result.stderr
    assert "adapter: " in result.stdout and TRUST not in result.stdout  # solo's own output stays apart
    assert (out / "third_party.log").read_text().count(TRUST) == 1  # --overwrite replaced the run's log


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_generate_and_eval_show_other_packages_lines_only_with_verbose(command, tiny_model_dir, tiny_data, monkeypatch):
    from solo_cli.cli import evaluate, generate

    module = generate if command == "generate" else evaluate
    real = module.load_target

    def load_target(*args):
        logging.getLogger("huggingface_hub.utils._http").warning("a retried HTTP request")
        return real(*args)

    monkeypatch.setattr(module, "load_target", load_target)
    args = ["--max-new-tokens", 2, "hello"] if command == "generate" else ["--data", tiny_data / "valid.jsonl", "--no-generate"]
    for verbose in ([], ["--verbose"]):
        result = invoke(command, "--model", tiny_model_dir, *args, *verbose)
        assert result.exit_code == 0, result.output
        assert ("a retried HTTP request" in result.stderr) == bool(verbose), result.stderr


def test_a_package_with_a_console_handler_of_its_own_is_routed_then_restored():
    """transformers (and torch, datasets, huggingface_hub) print through their own stderr handler: set aside for the
    command, put back after it."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("x")  # transformers attaches its handler
    library = logging.getLogger("transformers")
    before = (list(library.handlers), library.propagate)
    assert any(type(h) is logging.StreamHandler for h in library.handlers)
    with third_party.captured() as sink:
        third_party.route()
        assert not any(type(h) is logging.StreamHandler for h in library.handlers) and library.propagate
        logging.getLogger("transformers.generation").error("routed to the sink")
        warnings.warn("a warning inside the command", FutureWarning, stacklevel=1)
        logging.getLogger("solo_cli.anything").error("solo's own logger is not third-party")
    assert (list(library.handlers), library.propagate) == before
    held = "".join(sink.pending)
    assert "ERROR transformers.generation: routed to the sink" in held and "FutureWarning: a warning inside" in held
    assert "solo's own" not in held and warnings.showwarning is not sink.showwarning
