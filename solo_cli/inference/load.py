"""Loading a base model with an adapter attached, for generation and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..engine.adapter import AttachedAdapter, attach
from ..engine.adapter_file import ADAPTER_FILENAME, AdapterInfo, load_adapter, read_info
from ..engine.blocks import fingerprint
from ..engine.models import DEFAULT_MODEL, LoadedModel, load_model
from ..engine.quantization import compatibility_note
from ..errors import UsageError, param
from ..files.outputs import is_export


@dataclass
class InferenceModel:
    loaded: LoadedModel
    handle: AttachedAdapter | None = None
    info: AdapterInfo | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, for the CLI to show (an adapter over another quantization)


def load_for_inference(
    model: str | None,
    adapter: str | None = None,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    force: bool = False,
    quantize: str = "none",
) -> InferenceModel:
    """Load ``model`` (default: the adapter's base, else the built-in) and attach ``adapter``.

    An adapter whose base fingerprint differs from the model's is refused unless ``force``. A folder
    written by ``solo merge --export`` loads as its base plus its own adapter, running none of its code.
    """
    if model and is_export(model):
        # A `solo merge --export` folder loads as its base class, never through its modeling_solo.py
        # (with trust_remote_code that code would add the connections a second time).
        trust_remote_code = False
        if adapter is None:
            adapter = str(Path(model) / ADAPTER_FILENAME)
    info = read_info(adapter) if adapter else None
    name = model or (info.base_model if info else DEFAULT_MODEL)
    loaded = load_model(
        name, revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code, quantize=quantize
    )
    result = InferenceModel(loaded)
    if adapter is None:
        return result
    actual = fingerprint(loaded.model)
    if actual != info.fingerprint:
        message = (
            f"adapter {adapter} was trained on {info.base_model} ({info.fingerprint.describe()}) "
            f"but --model {name} is {actual.describe()}"
        )
        if not force:
            raise UsageError(f"{message}; pass the matching {param('model')}, or {param('force')} to attach it anyway")
        result.warnings.append(f"{message}; attaching anyway because of --force")
        if actual.hidden_size != info.fingerprint.hidden_size or actual.num_blocks <= max(j for _, j in info.config.connections):
            raise UsageError(f"{message}; the shapes cannot fit even with {param('force')}")
    solo, info = load_adapter(adapter)
    # an adapter trained over an nf4 base runs on the full-precision one and vice versa: same blocks, same shapes
    note = compatibility_note(str(info.training.get("quantize", "none")), loaded.precision.quantize)
    result.notes.extend([note] if note else [])
    result.handle = attach(loaded.model, solo)
    result.info = info
    return result
