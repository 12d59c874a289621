"""A run prepared to train: the device, the one precision decision, the model, the data, the shape and a fresh adapter.

:func:`prepare` loads everything :func:`solo_cli.training.run.execute` needs and nothing is
written yet; the run's shape (:class:`~solo_cli.training.shape.RunShape`) and its base's identity
(``base_commit`` / ``weights_digest``) are measured here, for config.json and ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import set_seed

from ..data.row_encoding import EncodedData, context_length
from ..data.sources import check_location
from ..engine.adapter import SoloAdapter
from ..engine.blocks import arch_fingerprint
from ..engine.fingerprint import ArchFingerprint
from ..engine.models import LoadedModel, load_model
from ..engine.precision import Agreement, Precision, resolve_precision
from ..engine.topology import parse_connections
from ..engine.weights_digest import base_identity
from ..errors import UsageError, param
from . import distributed
from .config import TrainConfig
from .distributed import DistContext
from .fits import check_fits
from .init_adapter import init_info, init_sha256, run_adapter
from .sampler import epoch_units, total_steps
from .shape import RunShape
from .sharding import check_shardable, check_sharding, load_device
from .train_data import load_run_data


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a usage error.

    Under torchrun each process on CUDA takes the GPU of its LOCAL_RANK.
    """
    ctx = ctx or DistContext()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ctx.enabled and torch.cuda.is_available():
        name = f"cuda:{ctx.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{param('device')} {name}: no CUDA device is available here; use {param('device')} cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{param('device')} mps: MPS is not available here; use {param('device')} cpu (or auto)")
    return torch.device(name)


@dataclass
class PreparedRun:
    cfg: TrainConfig
    loaded: LoadedModel  # loaded.precision: the run's one precision decision, used by the trainer too
    arch_fingerprint: ArchFingerprint
    adapter: SoloAdapter
    train: EncodedData
    valid: EncodedData | None
    steps: int
    device: torch.device
    ctx: DistContext
    data_sha256: dict | None = None  # what identifies the training and validation rows (config.json, --resume)
    shape: RunShape | None = None  # processes, batches, steps and ramp (config.json, --resume)
    base: dict | None = None  # base_commit / weights_digest of the base's weights (config.json, --resume)
    notes: list[str] = field(default_factory=list)  # one line each, for the CLI to show (keys the data reader ignored)


def run_precision(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> Precision:
    """The run's precision (:mod:`solo_cli.engine.precision`), decided once; under a distributed launch the first
    process decides ``auto`` for all of them."""
    agreement = Agreement(ctx.is_main, lambda value: ctx.sum([value], device)[0]) if ctx.enabled else None
    return resolve_precision(cfg.dtype, device, quantize=cfg.quantize, agreement=agreement)


def prepare(cfg: TrainConfig, loaded: LoadedModel | None = None, ctx: DistContext | None = None) -> PreparedRun:
    """Load (or take) the model, read and tokenize the data, and build a fresh adapter.

    Under a distributed launcher (``ctx`` from the environment) this joins the process group.
    """
    if not cfg.data:
        raise UsageError(f"{param('data')} is required: a .jsonl file or a folder with train.jsonl")
    check_location(cfg.data_spec())  # a missing --data is refused before the model loads
    ctx = ctx or distributed.from_env()
    device = resolve_device(cfg.device, ctx)
    check_sharding(cfg.parallel, cfg.fsdp_offload, cfg.quantize, ctx, device)  # --parallel fsdp: before anything loads
    distributed.init(ctx, device)
    # a model given already loaded keeps the precision it was loaded with: that is what its weights are
    init = init_info(cfg)[0] if cfg.init_adapter else None  # a bad --init-adapter is refused before the model loads
    if loaded is None:
        precision = run_precision(cfg, ctx, device)
        check_fits(cfg, precision, device, ctx)  # from the config alone: a run that cannot fit is refused before loading
        where, remote = load_device(cfg, device), cfg.trust_remote_code
        loaded = load_model(cfg.model, revision=cfg.revision, device=where, trust_remote_code=remote, precision=precision)
    if cfg.parallel == "fsdp":
        check_shardable(loaded.model)  # a base loaded already quantized (8-bit, torchao): refused before anything is written
    fp = arch_fingerprint(loaded.model)
    connections = parse_connections(cfg.connections, fp.num_blocks)
    context = context_length(loaded.model)
    data = load_run_data(cfg, loaded.tokenizer, context, ctx)  # tokenized through datasets, cached
    train, valid = data.train, data.valid
    if valid is not None and cfg.max_eval_rows:
        valid.examples = valid.examples[: cfg.max_eval_rows]
    units = epoch_units(cfg, train.examples)
    steps = total_steps(cfg, units, ctx.world_size)
    set_seed(cfg.seed)
    adapter = run_adapter(cfg, fp, connections, steps)  # fresh, or --init-adapter's (its gate stays at 1: no ramp)
    homotopy = adapter.config.homotopy_steps
    packed_rows = units if cfg.packing else 0
    shape = RunShape(ctx.world_size, cfg.batch_size, cfg.grad_accum, len(train.examples), steps, homotopy, packed_rows)
    base = base_identity(loaded.model, loaded.path) | ({"init_adapter_sha256": init_sha256(init)} if init else {})
    return PreparedRun(cfg, loaded, fp, adapter, train, valid, steps, device, ctx, data.data_sha256, shape, base, data.notes)
