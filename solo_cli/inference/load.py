"""Loading a base model with an adapter attached, for generation and evaluation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.adapter import AttachedAdapter, attach
from ..engine.adapter_file import ADAPTER_FILENAME, AdapterInfo, load_adapter, read_info
from ..engine.blocks import fingerprint
from ..engine.models import DEFAULT_MODEL, LoadedModel, config_dtype, load_config, load_model
from ..engine.precision import Precision, resolve_precision
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
    written by ``solo merge --export`` loads as its base plus its own adapter, running none of its code,
    and ``dtype="auto"`` loads it in its own dtype (:func:`export_precision`).
    """
    precision = None
    if model and is_export(model):
        # A `solo merge --export` folder loads as its base class, never through its modeling_solo.py
        # (with trust_remote_code that code would add the connections a second time).
        trust_remote_code = False
        if adapter is None:
            adapter = str(Path(model) / ADAPTER_FILENAME)
        if dtype == "auto":
            precision = export_precision(model, device, quantize)
    info = read_info(adapter) if adapter else None
    name = model or (info.base_model if info else DEFAULT_MODEL)
    loaded = load_model(
        name,
        revision=revision,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        precision=precision,
        quantize=quantize,
    )
    result = InferenceModel(loaded)
    if adapter is None:
        return result
    return attach_adapter(result, adapter, model_name=name, force=force, info=info)


def export_precision(model: str, device: str, quantize: str = "none") -> Precision:
    """``--dtype auto`` for an export: the dtype it was saved in, which transformers loads it in, so that solo
    writes the words transformers does (auto's choice by this hardware could round differently)."""
    stored = config_dtype(load_config(model))
    precision = resolve_precision(stored, device, quantize=quantize)
    rest = precision.reason.removeprefix(f"{stored}: as asked")  # what the dtype leads to: loss scaling, quantization
    return dataclasses.replace(precision, reason=f"{stored}: the export's dtype, as transformers loads it{rest}")


def attach_adapter(
    result: InferenceModel, adapter: str, *, model_name: str, force: bool = False, info: AdapterInfo | None = None
) -> InferenceModel:
    """Attach ``adapter`` to ``result``'s loaded base, in place of the adapter it carries (if any).

    Refused (UsageError) as :func:`load_for_inference` refuses it, before the adapter in place is
    detached: an adapter whose base fingerprint differs from the model's (``model_name``) unless
    ``force``. ``info``: the adapter's header, if already read. Warnings and notes are appended.
    """
    loaded, name = result.loaded, model_name
    info = info or read_info(adapter)
    actual = fingerprint(loaded.model)
    if actual != info.fingerprint:
        message = (
            f"adapter {adapter} was trained on {info.base_model} ({info.fingerprint.describe()}) "
            f"but --model {name} is {actual.describe()}"
        )
        fits = actual.hidden_size == info.fingerprint.hidden_size and actual.num_blocks > max(
            j for _, j in info.config.connections
        )
        if not fits:  # --force could not help: suggest it only where it works
            raise UsageError(f"{message}; its connections cannot fit that model; pass the matching {param('model')}")
        if not force:
            raise UsageError(f"{message}; pass the matching {param('model')}, or {param('force')} to attach it anyway")
        result.warnings.append(f"{message}; attaching anyway because of --force")
    solo, info = load_adapter(adapter)
    result.notes.extend(_quantization_notes(info, loaded.precision.quantize))
    if result.handle is not None:
        result.handle.detach()
    result.handle = attach(loaded.model, solo)
    result.info = info
    return result


def _quantization_notes(info: AdapterInfo, loaded: str) -> list[str]:
    """An adapter trained over an nf4 base runs on the full-precision one and vice versa (same blocks, same shapes)."""
    trained = str(info.training.get("quantize", "none"))
    if trained == "mixed":  # a merge of adapters trained over different quantizations
        return ["note: the adapter merges adapters trained over differently quantized bases; outputs may differ slightly"]
    note = compatibility_note(trained, loaded)
    return [note] if note else []
