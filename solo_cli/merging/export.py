"""Exporting base + adapter as one standalone model folder.

A Solo connection is not a change to any existing weight matrix, so it cannot be folded into a
stock architecture. The export is the base model's own weights and config plus the adapter's
tensors, and code that transformers runs with ``trust_remote_code=True`` to add the connections,
so plain transformers loads the folder as one model. The code is solo's own
:mod:`solo_cli.engine.modeling_solo`, copied byte for byte (the one implementation of the
connection and its hooks), plus a generated ``solo_base.py`` of one import that names the base
class its ``SoloForCausalLM`` subclasses (the config's ``auto_map``). `solo` loads the folder
without running that code.

No loader may run the folder without its connections and say nothing. The config's
``architectures`` names ``SoloForCausalLM`` and its ``model_type`` is ``solo``, neither of which any
library ships: loaders that pick the class by that name (``transformers serve``, vLLM, llama.cpp's
and Ollama's converters) or by ``model_type`` (``AutoModelForCausalLM`` and ``pipeline`` without
``trust_remote_code``) refuse the folder instead of running the bare base, as they did while it
named the base's. ``AutoModelForCausalLM`` with ``trust_remote_code=True`` reads ``auto_map``
(``SoloConfig``, ``SoloForCausalLM``); solo reads the base's ``model_type`` from ``solo_adapter``
(:func:`solo_cli.engine.models.export_base_config`) and attaches the adapter itself.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..engine import modeling_solo
from ..engine.adapter_config import connection_key
from ..engine.adapter_file import ADAPTER_FILENAME, read_info, resolve_adapter_path
from ..engine.blocks import find_blocks
from ..engine.model_card import render_card
from ..engine.models import config_dtype, load_config, resolve_dtype
from ..engine.quantization import one_4bit_kernel
from ..errors import RuntimeFailure, UsageError, param
from ..files.atomic import atomic_dir, check_writable, write_error
from ..files.outputs import check_export_target
from ..inference.load import InferenceModel, export_precision, load_for_inference

MARKER = "solo_adapter"  # the config key that makes a folder a solo export
MODELING_FILE = "modeling_solo.py"
EXPORT_CLASS = "SoloForCausalLM"  # the export's model class, in modeling_solo.py: never a transformers class name
EXPORT_CONFIG = "SoloConfig"  # its config class, of model_type solo (modeling_solo.MODEL_TYPE): never a transformers one
# Largest logit difference allowed between the reloaded export and base + adapter, relative to the
# largest logit: float precision for float32 bases, a few roundings for half-precision ones.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}

BASE_FILE = "solo_base.py"  # the one generated line of code: which class modeling_solo.py builds on
BASE_TEMPLATE = '''"""The base class of this export: modeling_solo.py builds SoloForCausalLM on it (written by solo {version})."""

from transformers import {base_class} as Base
'''


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    greedy_equal: bool
    dtype: str = "float32"  # what the check compared in: the export's own dtype, which transformers loads it in
    auto_dtype: str = "float32"  # what `solo generate --dtype auto` computes in: the export's dtype (export_precision)


def stored_dtype(model: str, revision: str | None, trust_remote_code: bool) -> str:
    """The dtype name a model's config records (float32 when it records none solo loads)."""
    return config_dtype(load_config(model, revision, trust_remote_code))


def _check_inputs(tokenizer, vocab: int) -> list[torch.Tensor]:
    texts = ["The capital of France is", "name[Blue Spice], eatType[coffee shop], area[riverside]", "1 2 3 4"]
    return [tokenizer(t, return_tensors="pt")["input_ids"].clamp_max(vocab - 1) for t in texts]


def export_model(
    adapter: str | Path,
    model: str | None,
    output: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    overwrite: bool = False,
    dtype: str | None = None,
) -> ExportResult:
    """Write base + adapter to ``output`` as one model folder, then check it reproduces base + adapter.

    The base weights keep ``dtype`` (default: the dtype the base was saved in, so a bf16 base does not
    double on disk); the adapter tensors stay float32.
    """
    output = Path(output)
    check_export_target(output, overwrite)  # only an export solo wrote is replaced, never the current folder
    check_writable(output, "--export")  # a parent that is a file, a read-only folder: refused before the model loads
    adapter_path = resolve_adapter_path(adapter)
    dtype = dtype or stored_dtype(model or read_info(adapter_path).base_model, revision, trust_remote_code)
    target = load_for_inference(
        model,
        str(adapter_path),
        revision=revision,
        dtype=dtype,
        device="cpu",
        trust_remote_code=trust_remote_code,
        force=force,
    )
    try:
        base_class = _base_class_name(target.loaded.model)
        config = _export_config(target)
        with atomic_dir(output) as staging:  # renamed onto output only once the check below passes
            _write_export(staging, target, config, adapter_path, base_class)
            tolerance = TOLERANCE[resolve_dtype(dtype)]
            diff, greedy_equal = _check_export(staging, target, resolve_dtype(dtype))
            if diff > tolerance:
                raise RuntimeFailure(
                    f"export check failed: the exported model's logits differ from base + adapter by {diff:.3g} "
                    f"(tolerance {tolerance} for {dtype}); nothing was written to {output}"
                )
    except (
        OSError,
        SafetensorError,
    ) as exc:  # a full disk, a read-only folder: the staging folder is removed, an old export kept
        raise write_error(exc, output, "--export") from None
    finally:
        target.handle.detach()
    here = "cuda" if torch.cuda.is_available() else "cpu"  # where `solo generate --device auto` runs
    checked = str(resolve_dtype(dtype)).removeprefix("torch.")  # bf16 -> bfloat16: the name --dtype takes
    return ExportResult(output, diff, greedy_equal, checked, export_precision(str(output), here).dtype)


def _base_class_name(base) -> str:
    """The transformers class the export's SoloForCausalLM subclasses; refused if transformers has none of that name."""
    import transformers

    name = type(base).__name__
    if not hasattr(transformers, name):
        raise UsageError(
            f"{param('model')}: {name} is not a transformers class, so the export could not name its base; "
            "export works for models that transformers ships"
        )
    return name


def _export_config(target: InferenceModel):
    """The base config with the export's model class (``auto_map``) and its connections (``solo_adapter``)."""
    base, plan = target.loaded.model, target.info.config
    blocks_path, _ = find_blocks(base)
    config = copy.deepcopy(base.config)
    config.architectures = [EXPORT_CLASS]
    module = MODELING_FILE[:-3]
    config.auto_map = {"AutoConfig": f"{module}.{EXPORT_CONFIG}", "AutoModelForCausalLM": f"{module}.{EXPORT_CLASS}"}
    spec = {
        "base_model_type": base.config.model_type,  # config.json's model_type is solo's own: what solo loads it as
        "connections": [list(c) for c in plan.connections],
        "keys": [connection_key(i, j) for i, j in plan.connections],  # the module names: solo.<key>.A, .B, .gate
        "rank": plan.rank,
        "gated": plan.gate != "zero-init",
        "source_norm": plan.source_norm,
        "hidden_size": plan.hidden_size,
        "blocks_path": blocks_path,
        "adapter_file": ADAPTER_FILENAME,
        "solo_version": __version__,
    }
    setattr(config, MARKER, spec)
    return config


def _write_export(staging: Path, target: InferenceModel, config, adapter_path: Path, base_class: str) -> None:
    """Base weights with the adapter tensors added, the adapter file, tokenizer, config, code and model card."""
    _write_weights(staging, target, config)
    target.loaded.tokenizer.save_pretrained(staging)
    shutil.copyfile(adapter_path, staging / ADAPTER_FILENAME)
    shutil.copyfile(modeling_solo.__file__, staging / MODELING_FILE)
    (staging / BASE_FILE).write_text(BASE_TEMPLATE.format(base_class=base_class, version=__version__), encoding="utf-8")
    (staging / "README.md").write_text(render_card(target.info, export=True), encoding="utf-8")


def _write_weights(staging: Path, target: InferenceModel, config) -> None:
    """The base model saved with the export's config, its tensors joined by the adapter's (``solo.*``, float32)."""
    base = target.loaded.model
    original = base.config
    base.config = config
    # A model that came quantized keeps its tensors as loaded: transformers cannot undo what loading them did
    # (bitsandbytes' 4-bit deserialisation has no reverse), and loading them again needs no conversion.
    came_quantized = getattr(base, "hf_quantizer", None) is not None
    try:
        base.save_pretrained(staging, max_shard_size="1000GB", save_original_format=not came_quantized)
    finally:
        base.config = original
    # save_pretrained names the saving class in `architectures` (the base's): name the export's class again
    config.architectures = [EXPORT_CLASS]
    config.save_pretrained(staging)
    _set_model_type(staging / "config.json")
    weights_file = staging / "model.safetensors"
    tensors = load_file(str(weights_file))
    for key, value in target.handle.adapter.connections.state_dict().items():
        tensors[f"solo.{key}"] = value.detach().float().contiguous()
    save_file(tensors, str(weights_file), metadata={"format": "pt"})


def _set_model_type(path: Path) -> None:
    """config.json under the export's ``model_type``, which no library maps to a class (the base's class writes its own)."""
    values = json.loads(path.read_text(encoding="utf-8"))
    values["model_type"] = modeling_solo.MODEL_TYPE
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_export(staging: Path, target: InferenceModel, dtype: torch.dtype) -> tuple[float, bool]:
    """Reload the folder with plain transformers; the largest logit difference from base + adapter (relative
    to the largest logit, when that is above 1) and whether greedy decoding agrees."""
    from transformers import AutoModelForCausalLM

    base, tokenizer = target.loaded.model, target.loaded.tokenizer
    exported = AutoModelForCausalLM.from_pretrained(staging, trust_remote_code=True, dtype=dtype).eval()
    one_4bit_kernel(exported)  # over a 4-bit base: both sides compute one way, on every CPU (solo's base does)
    diff = 0.0
    with torch.no_grad():
        inputs = _check_inputs(tokenizer, target.info.fingerprint.vocab_size)
        for ids in inputs:
            expected = base(ids).logits.float()
            gap = float((exported(ids).logits.float() - expected).abs().max())
            diff = max(diff, gap / max(1.0, float(expected.abs().max())))
        settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        greedy_equal = torch.equal(exported.generate(inputs[0], **settings), base.generate(inputs[0], **settings))
    return diff, greedy_equal
