"""Writing and loading adapter files: one safetensors file whose header metadata describes the adapter.

Tensors: ``connections.<src>_<dst>.A`` (r x d), ``.B`` (d x r) and ``.gate`` (a scalar, in the
gated modes). The header and its checks are :mod:`solo_cli.engine.adapter_header`, the tensors'
checks :mod:`solo_cli.engine.adapter_arrays` (both torch-free, for ``solo inspect``); this module
builds the :class:`SoloAdapter`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..errors import RuntimeFailure, UsageError, param
from ..files.atomic import write_atomic, write_error
from .adapter import SoloAdapter
from .adapter_arrays import read_arrays
from .adapter_header import (  # noqa: F401 (the adapter file's names, importable from here as before)
    ADAPTER_FILENAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    AdapterInfo,
    read_info,
    resolve_adapter_path,
)
from .blocks import arch_fingerprint

if TYPE_CHECKING:
    from .models import LoadedModel


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinite value."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_adapter(
    path: str | os.PathLike, adapter: SoloAdapter, info: AdapterInfo | None = None, *, base: LoadedModel | None = None
) -> Path:
    """Write ``adapter`` to ``path`` (a file, or a folder that gets ``adapter.safetensors``) atomically.

    ``info`` is the file's header (what `solo train` writes). From your own training loop, give
    ``base`` instead, the :class:`~solo_cli.engine.models.LoadedModel` the adapter was trained on:
    the header then names that base, its revision, architecture, dtype and quantization.

    A tensor holding NaN or infinite values is refused (:class:`RuntimeFailure`, naming it) and
    nothing is written: solo never writes an adapter that its own loader would refuse as damaged.
    """
    info = info if info is not None else base_info(adapter, base)
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / ADAPTER_FILENAME
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in adapter.state_dict().items()}
    bad = non_finite(tensors)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise RuntimeFailure(
            f"not writing {path}: tensor {bad[0]}{more} holds NaN or infinite values; nothing was written "
            f"(if it was trained, the training diverged: lower {param('lr')} or add {param('warmup')})"
        )
    try:
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=info.to_metadata()))
    except (OSError, SafetensorError) as exc:  # a full disk (safetensors: SafetensorError), a read-only folder:
        # the old file is untouched, no temp file is left
        raise write_error(exc, path) from None
    return path


def base_info(adapter: SoloAdapter, base: LoadedModel | None) -> AdapterInfo:
    """The header of an adapter trained on ``base`` outside `solo train`: the base and its precision, no data."""
    if base is None:
        raise UsageError(f"save_adapter: give {param('base')} (the loaded model the adapter was trained on) or {param('info')}")
    training = {"dtype": base.precision.dtype, "quantize": base.precision.quantize}  # what the base computed in
    return AdapterInfo(adapter.config, arch_fingerprint(base.model), base.name, base.revision, training=training)


def load_adapter(path: str | os.PathLike) -> tuple[SoloAdapter, AdapterInfo]:
    """Build a :class:`SoloAdapter` from a file, checking every tensor's name, shape, dtype and values.

    Shapes are checked against the header before any adapter memory is allocated; a tensor that
    is not a finite float (NaN, inf, or an integer dtype) is refused as damage, naming it
    (see :func:`solo_cli.engine.adapter_arrays.read_arrays`).
    """
    info, arrays = read_arrays(path)
    adapter = SoloAdapter(info.config)
    adapter.load_state_dict({key: torch.from_numpy(value) for key, value in arrays.items()})
    return adapter, info
