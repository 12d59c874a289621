"""What an output path may hold before solo writes there: solo replaces only what solo wrote.

``--overwrite`` replaces a run folder's outputs (``train -o``), an export (``merge --export``) or
an adapter file (``merge -o``), each recognised by what solo puts in it, and never the current
folder or a folder above it. ``generate``/``eval --output`` replace only predictions (and metrics)
files of the kind they write. Anything else at an output path is refused in one line (exit 2),
saying what is there, and is left as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import yaml

from ..errors import UsageError, param
from .atomic import is_stream

ADAPTER_FILENAME = "adapter.safetensors"  # what solo names an adapter file in a folder
ADAPTER_FORMAT = "solo-adapter"  # the ``format`` an adapter's safetensors header records
# What `solo train` writes into a run folder (besides its lock, .solo.lock).
RUN_FILES = (ADAPTER_FILENAME, "metrics.jsonl", "config.json", "loss.png", "README.md", "third_party.log")
RUN_FOLDERS = ("checkpoints", "best", "tensorboard")
_EVENTS = re.compile(r"^events\.out\.tfevents\.")  # TensorBoard's event files (--report-to tensorboard)
_STEP = re.compile(r"^step-\d+$")
_STAGING = re.compile(r"^\.step-\d+\.[a-z0-9_]{8}(\.tmp|\.old)?$")


def what_is_at(path: Path) -> str:
    """What is at ``path``, for a one-line message: a file and its size, or a folder and a few names."""
    if path.is_symlink() and not path.exists():
        return "a broken link"
    if path.is_file():
        return f"a file of {path.stat().st_size:,} bytes"
    if path.is_dir():
        try:
            names = sorted(p.name for p in path.iterdir())
        except OSError:
            return "a folder"
        if not names:
            return "an empty folder"
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return f"a folder holding {', '.join(names[:3])}{more}"
    return "something that is not a file or folder"


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        return None


def is_solo_adapter(path: Path) -> bool:
    """A safetensors file whose header says ``format: solo-adapter`` (the tensors are not read)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="numpy") as handle:  # the header only: no torch
            return (handle.metadata() or {}).get("format") == json.dumps(ADAPTER_FORMAT)
    except (SafetensorError, OSError, ValueError):
        return False


def is_run_config(path: Path) -> bool:
    """``config.json`` as `solo train` writes it: an object with ``solo_version`` at the top level."""
    value = _json(path) if path.is_file() else None
    return isinstance(value, dict) and "solo_version" in value


def is_export(path: str | Path) -> bool:
    """A folder `solo merge --export` wrote: its config.json carries the ``solo_adapter`` marker."""
    config = Path(path) / "config.json"
    value = _json(config) if config.is_file() else None
    return isinstance(value, dict) and isinstance(value.get("solo_adapter"), dict)


def is_solo_card(path: Path) -> bool:
    """A README.md model card solo wrote: YAML front matter with ``library_name: solo``."""
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        front = yaml.safe_load(text.split("---\n")[1]) if text.startswith("---\n") else None
    except (OSError, UnicodeDecodeError, IndexError, yaml.YAMLError, RecursionError, ValueError):
        return False
    return isinstance(front, dict) and front.get("library_name") == "solo"


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(_STEP.match(p.name) and (p / "trainer_state.json").is_file() for p in folder.iterdir())


def is_run_folder(path: Path) -> bool:
    """A folder `solo train` wrote: nothing at its output names that solo did not write, and a sign of a run.

    The signs: config.json with ``solo_version``, a solo adapter.safetensors or best/adapter.safetensors,
    or a checkpoints/step-N with its trainer_state.json.
    """
    if not path.is_dir():
        return False
    config, adapter, best = path / "config.json", path / "adapter.safetensors", path / "best" / "adapter.safetensors"
    if config.exists() and not is_run_config(config):
        return False
    if adapter.exists() and not is_solo_adapter(adapter):
        return False
    if (path / "README.md").exists() and not is_solo_card(path / "README.md"):
        return False
    if any((path / name).exists() and not (path / name).is_file() for name in RUN_FILES):
        return False
    if any((path / name).exists() and not (path / name).is_dir() for name in RUN_FOLDERS):
        return False
    return config.is_file() or adapter.is_file() or is_solo_adapter(best) or _has_checkpoint(path / "checkpoints")


def run_outputs(path: Path) -> list[str]:
    """The names `solo train` writes that are present in ``path``."""
    return [name for name in (*RUN_FILES, *RUN_FOLDERS) if (path / name).exists() or (path / name).is_symlink()]


def remove_run_outputs(path: Path) -> None:
    """Delete what `solo train` wrote in the run folder ``path``, and nothing else found there."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    (path / "best" / "adapter.safetensors").unlink(missing_ok=True)
    tensorboard = path / "tensorboard"
    if tensorboard.is_dir() and not tensorboard.is_symlink():
        for child in tensorboard.iterdir():
            if _EVENTS.match(child.name) and child.is_file():
                child.unlink()
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir():
        for child in checkpoints.iterdir():
            if child.is_dir() and not child.is_symlink() and (_STEP.match(child.name) or _STAGING.match(child.name)):
                shutil.rmtree(child)
    for name in RUN_FOLDERS:
        try:
            (path / name).rmdir()  # only if empty: a file of the user's inside stays
        except OSError:
            pass


def refuse_current_folder(path: Path, flag: str) -> None:
    """No output that replaces a folder may be the current folder or a folder above it."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd:
        raise UsageError(f"{flag} {path}: is the current folder; solo never replaces it; choose another path")
    if resolved in cwd.parents:
        raise UsageError(f"{flag} {path}: is a folder above the current folder; solo never replaces it; choose another path")


def check_export_target(output: Path, overwrite: bool) -> None:
    """``merge --export``: a new folder, or (with --overwrite) an export solo wrote or an empty folder."""
    output = Path(output)
    if not (output.exists() or output.is_symlink()):
        return
    refuse_current_folder(output, "--export")
    if output.is_dir() and is_export(output):
        if not overwrite:
            raise UsageError(
                f"{param('export')} {output}: already exists (a solo export); choose a new folder or pass {param('overwrite')}"
            )
        return
    if output.is_dir() and not any(output.iterdir()):
        if not overwrite:
            raise UsageError(
                f"{param('export')} {output}: already exists (an empty folder); choose a new folder or pass {param('overwrite')}"
            )
        return
    raise UsageError(
        f"{param('export')} {output}: already exists and is not a solo export ({what_is_at(output)}); "
        "solo replaces only an export it wrote; choose another path"
    )


def check_adapter_target(output: Path, overwrite: bool) -> Path:
    """``merge -o``: the adapter file to write; an existing one is replaced only with --overwrite, and only
    if solo wrote it. Returns the file path (``output`` itself, or ``output/adapter.safetensors``)."""
    from .atomic import check_writable

    output = Path(output)
    target = output if output.suffix == ".safetensors" else output / ADAPTER_FILENAME
    if output.exists() and not output.is_dir() and output.suffix != ".safetensors":
        raise UsageError(
            f"{param('output')} {output}: already exists and is not a solo adapter ({what_is_at(output)}); "
            "solo replaces only an adapter it wrote; choose another path"
        )
    if target.exists() or target.is_symlink():
        if not is_solo_adapter(target):
            where = "" if target == output else f"{target} "
            raise UsageError(
                f"{param('output')} {output}: {where}already exists and is not a solo adapter ({what_is_at(target)}); "
                "solo replaces only an adapter it wrote; choose another path"
            )
        if not overwrite:
            raise UsageError(f"{param('output')} {output}: already exists; choose a new path or pass {param('overwrite')}")
    elif output.exists() and not overwrite:
        raise UsageError(f"{param('output')} {output}: already exists; choose a new path or pass {param('overwrite')}")
    check_writable(target, "--output")
    return target


def is_predictions(path: Path) -> bool:
    """JSONL as `solo generate --output` and `solo eval --output` write it: every line an object with "prediction"."""
    seen = False
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError, ValueError):
                    return False
                if not (isinstance(row, dict) and "prediction" in row):
                    return False
                seen = True
    except (OSError, UnicodeDecodeError):
        return False
    return seen


def is_eval_metrics(path: Path) -> bool:
    """The metrics `solo eval --output` writes beside its predictions: an object with "data" and "prompts"."""
    value = _json(path) if path.is_file() else None
    return isinstance(value, dict) and "data" in value and "prompts" in value


def refuse_input_as_output(output: Path, source: Path | None, source_flag: str) -> None:
    """``--output`` naming the file the command reads (``--input``/``--data``) would destroy the input."""
    if source is None or is_stream(output):
        return
    try:
        same = Path(source).is_file() and Path(output).exists() and os.path.samefile(source, output)
    except OSError:
        same = False
    if same:
        raise UsageError(
            f"{param('output')} {output}: is the {source_flag} file the command reads; choose another path for the output"
        )


def check_predictions_target(output: Path, metrics: Path | None = None) -> None:
    """``generate``/``eval --output``: an existing file is replaced only if it is predictions (metrics) solo wrote."""
    output = Path(output)
    for path, kind, ok in ((output, "predictions", is_predictions), (metrics, "metrics", is_eval_metrics)):
        if path is None or not (path.exists() or path.is_symlink()) or is_stream(path):
            continue
        if path.is_dir() or not ok(path):
            where = "" if path == output else f"{path} "
            raise UsageError(
                f"{param('output')} {output}: {where}already exists and is not a {kind} file solo wrote ({what_is_at(path)}); "
                f"solo replaces only its own {kind}; choose another path"
            )
