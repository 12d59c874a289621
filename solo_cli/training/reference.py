"""DPO's reference: the model the run starts from, scored once over every pair before the first step.

The reference is the base model (a fresh DPO adapter starts with B = 0, so its first step's model
is the base exactly) or the base with ``--init-adapter`` (the trained adapter the run starts from).
Either is fixed for the whole run, so the log-probabilities of every training and validation pair
under it are computed once, before training, in batches of ``--batch-size`` pairs of like length,
and cached beside the tokenized data (``HF_DATASETS_CACHE/solo-reference/<key>.safetensors``, keyed
by the encoded split, the reference's weights, the precision and the batching): a resume or a
second run reads them back and trains on the same numbers. Keeping a frozen reference and scoring
each step's batch with it instead was measured against this (``bench/results/dpo.md``).

Under torchrun the fixed batches are shared out over the processes (under FSDP every process runs
as many forwards, a stand-in where it has none left) and their results summed, so every process
holds every pair's numbers, the same as one process computes.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.distributed as dist

from ..data.row_encoding import EncodedData
from ..data.split_encoding import cache_dir
from ..engine.adapter import attach
from ..engine.adapter_file import load_adapter
from ..engine.loss import eval_mode
from ..engine.preference import reply_logps
from ..files.atomic import write_atomic
from .init_adapter import folded, init_info

_VERSION = "solo-reference-2"  # bump when the numbers computed change


def _key(data: EncodedData, count: int, identity: dict) -> str:
    parts = [_VERSION, data.key, count, identity]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def _cache_file(key: str) -> Path:
    return cache_dir().parent / "solo-reference" / f"{key}.safetensors"


def _read(path: Path, count: int) -> torch.Tensor | None:
    from safetensors.torch import load_file

    try:
        values = load_file(str(path))["logps"]
    except Exception:  # noqa: BLE001 - missing, damaged or foreign: computed again
        return None
    ok = values.shape == (count, 2) and values.dtype == torch.float32 and bool(torch.isfinite(values).all())
    return values if ok else None


def _write(path: Path, values: torch.Tensor) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, lambda tmp: save_file({"logps": values.contiguous()}, str(tmp)))
    except OSError:
        pass  # a cache that cannot be written only costs a second computation


def _batches(pairs, size: int) -> list[list[int]]:
    """The pairs' indices in batches of ``size``, shortest pairs first: as little padding as the lengths allow, and
    the same batches on every run and every number of processes."""
    lengths = pairs.lengths() if hasattr(pairs, "lengths") else [p.length for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: lengths[i])  # stable: equal lengths keep their order
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def score_pairs(trainer, pairs) -> torch.Tensor:
    """``len(pairs) x 2`` log-probabilities (chosen, rejected) of ``pairs`` under the model as it is now.

    Batches of ``--batch-size`` pairs of like length (:func:`_batches`), shared out over the
    processes, each batch scored the same way whatever their number; run by every process.
    """
    ctx, device, batches = trainer.ctx, trainer.device, _batches(pairs, trainer.cfg.batch_size)
    out = torch.zeros(len(pairs), 2, dtype=torch.float64)  # float64: the sum over processes adds exact zeros
    with eval_mode(trainer.model):
        for turn in range(math.ceil(len(batches) / ctx.world_size)):
            k = turn * ctx.world_size + ctx.rank
            if k >= len(batches) and not trainer.sharded:
                continue
            indices = batches[k] if k < len(batches) else batches[0]  # FSDP: a stand-in forward, discarded
            batch = trainer.objective.collate([pairs[i] for i in indices], trainer.pad_id)
            batch = {name: value.to(device) for name, value in batch.items() if name != "reference_logps"}
            with trainer.autocast_context():
                logps, _ = trainer.on_model(reply_logps, batch)
            if k < len(batches):
                out[indices] = torch.stack(logps.detach().float().cpu().chunk(2), dim=1).double()
    if ctx.enabled:
        summed = out.to(device)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        out = summed.cpu()
    return out.float()


def _identity(run) -> dict:
    """What the reference's numbers depend on besides the pairs: its weights, the precision and the batching."""
    cfg = run.cfg
    return {
        "model": cfg.model,
        "base": run.base or {},
        "precision": run.loaded.precision.to_dict(),
        "device": run.device.type,
        "batch_size": cfg.batch_size,
    }


def attach_references(run, trainer, say=None) -> None:
    """Give every training and validation pair of ``run`` its reference log-probabilities (``--objective dpo``).

    Call before the run's adapter is attached: the reference is scored with no adapter (a fresh run)
    or with a copy of ``--init-adapter`` attached for the pass (the run's adapter may be a resumed one).
    ``say({"pairs", "cached"})`` is told first, so a user knows what the minutes before step 1 are spent on.
    """
    if not trainer.objective.needs_reference:
        return
    splits = [data for data in (run.train, run.valid) if data is not None]
    keys = [_key(data, len(data.examples), _identity(run)) for data in splits]
    found = [_read(_cache_file(key), len(data.examples)) for key, data in zip(keys, splits)]
    missing = run.ctx.any(any(v is None for v in found), run.device)  # every process scores, or none
    if say is not None:
        say({"pairs": sum(len(data.examples) for data in splits), "cached": not missing})
    if missing:
        found = _score(run, trainer, splits)
        if run.ctx.is_main:
            for key, values in zip(keys, found):
                _write(_cache_file(key), values)
    for data, values in zip(splits, found):
        data.examples = data.examples.with_references(values)


def _score(run, trainer, splits: list[EncodedData]) -> list[torch.Tensor]:
    if not run.cfg.init_adapter:
        return [score_pairs(trainer, data.examples) for data in splits]
    with torch.random.fork_rng(devices=[]):  # building the copy draws an init: the run's random stream is left alone
        reference = folded(load_adapter(init_info(run.cfg)[0])[0])
    handle = attach(run.loaded.model, reference)
    reference.to(run.device)
    reference.set_homotopy_step(0)  # t = 1, set as the run's adapter sets it (folded: homotopy_steps 1)
    try:
        return [score_pairs(trainer, data.examples) for data in splits]
    finally:
        handle.detach()
