"""Combining adapters trained on the same base into one.

A connection's linear map is ``M = t B A`` (d x d, rank <= r). Connections present in several
inputs become the weighted sum of their maps, re-factored to the output rank by a truncated SVD
(computed on the r-sized core of the stacked factors, never on a d x d matrix). A connection
present in one input keeps its factors, ``B`` scaled by the input's weight, so ``--weights 1,0``
reproduces the first adapter exactly. The default output rank is the one that makes every merged map
exact (:func:`rank_limit`); a lower ``rank`` is a deliberate, lossy choice whose error is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine.adapter import AdapterConfig, SoloAdapter, connection_key
from ..engine.adapter_file import AdapterInfo, load_adapter, resolve_adapter_path
from ..engine.topology import source_name
from ..errors import UsageError, param


@dataclass
class MergeResult:
    adapter: SoloAdapter
    info: AdapterInfo
    errors: dict[str, float] = field(default_factory=dict)  # relative Frobenius error per re-factored connection
    exact_rank: int = 0  # the rank at which every merged map is exact; a lower rank loses what errors says


def parse_weights(text: str | None, count: int) -> list[float]:
    """``--weights 0.7,0.3``; by default every input weighs 1/count (an average)."""
    if text is None:
        return [1.0 / count] * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"{param('weights')} {text!r}: write numbers separated by commas, one per adapter") from None
    if not all(math.isfinite(w) for w in weights):
        raise UsageError(f"{param('weights')} {text!r}: every weight must be a finite number (no nan or inf)")
    if len(weights) != count:
        raise UsageError(f"{param('weights')} {text!r}: {len(weights)} weights for {count} adapters; give one per adapter")
    return weights


def refactor(factors: list[tuple[torch.Tensor, torch.Tensor]], rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factorisation ``B A`` of ``sum(B_k A_k)``, and its relative Frobenius error.

    With ``P = [B_1 .. B_n]`` (d x R) and ``Q = [A_1; ..; A_n]`` (R x d), ``M = P Q``. QR of both
    reduces the SVD of M to that of an R x R core.
    """
    P = torch.cat([b for b, _ in factors], dim=1).double()
    Q = torch.cat([a for _, a in factors], dim=0).double()
    qp, rp = torch.linalg.qr(P)
    qq, rq = torch.linalg.qr(Q.t())
    u, s, vh = torch.linalg.svd(rp @ rq.t())
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    B = (qp @ u[:, :k]) * root
    A = root[:, None] * (vh[:k] @ qq.t())
    if k < rank:  # pad to the common rank with zero directions (exact)
        B = torch.cat([B, B.new_zeros(B.shape[0], rank - k)], dim=1)
        A = torch.cat([A, A.new_zeros(rank - k, A.shape[1])], dim=0)
    total = float(s.square().sum())
    error = (float(s[k:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
    return B.float(), A.float(), error


def merge_adapters(paths: list[str | Path], weights: list[float], rank: int | None = None) -> MergeResult:
    """Merge adapters trained on the same base (refused otherwise, naming both).

    ``rank`` defaults to the rank that makes the merge exact (:func:`rank_limit`: the sum of the ranks
    sharing a connection, at most the hidden size); a lower one re-factors each shared map to it, with
    the relative error in ``errors``. A larger one is refused before the merged adapter is allocated,
    and so are ``weights`` whose weighted maps overflow float32. The header's ``training`` carries the
    inputs' base ``quantize`` and ``dtype`` where they agree, else ``"mixed"``.
    """
    if len(paths) < 1:
        raise UsageError("give at least one adapter to merge")
    loaded = [load_adapter(p) for p in paths]
    infos = [info for _, info in loaded]
    _check_same_base(paths, infos)
    plan = _merged_plan(weights, infos)
    exact = rank_limit(weights, infos, plan)[0]
    if rank is not None:
        _check_rank(rank, weights, infos, plan)
    rank = rank or exact
    first = loaded[0][1]
    out = SoloAdapter(
        AdapterConfig(
            plan,
            rank,
            first.config.gate,
            first.config.homotopy_steps,
            first.fingerprint.hidden_size,
            source_norm=first.config.source_norm,
        )
    )
    errors: dict[str, float] = {}
    with torch.no_grad():
        for src, dst in plan:
            key = connection_key(src, dst)
            live = [(w, a.connections[key]) for w, (a, _) in zip(weights, loaded) if w != 0.0 and key in a.connections]
            name = f"{source_name(src)}->{dst}"
            if not _fits_float32([conn.B.double() * (w * conn.gate_value()) for w, conn in live]):
                raise _overflow(weights, name)
            error = _merge_connection(out.connections[key], live, rank)
            if not _fits_float32([out.connections[key].A, out.connections[key].B]):
                raise _overflow(weights, name)
            if error is not None:
                errors[name] = error
    training = {
        "merged_from": [str(resolve_adapter_path(p)) for p in paths],
        "weights": weights,
        "rank": rank,
        "reconstruction_error": errors,
        **_common_base(weights, infos),
    }
    info = AdapterInfo(
        config=out.config,
        fingerprint=first.fingerprint,
        base_model=first.base_model,
        base_revision=first.base_revision,
        data_format=first.data_format,
        chat_template=first.chat_template,
        training=training,
    )
    return MergeResult(out, info, errors, exact)


def _common_base(weights: list[float], infos: list[AdapterInfo]) -> dict[str, str]:
    """The base's quantization and dtype the contributing inputs were trained over: their common value, or "mixed".

    An input that does not record one (an adapter of an older solo) says nothing about it.
    """
    common = {}
    for key in ("quantize", "dtype"):
        given = [info.training.get(key) for w, info in zip(weights, infos) if w != 0.0]
        values = {v for v in given if isinstance(v, str)}
        if values:
            common[key] = values.pop() if len(values) == 1 else "mixed"
    return common


def rank_limit(weights: list[float], infos: list[AdapterInfo], plan: list[tuple[int, int]]) -> tuple[int, str]:
    """The largest rank a merge can fill, and why (for the error that refuses more).

    A connection's weighted sum of maps has rank at most the sum of its contributors' ranks, and at
    most the hidden size d (the map is d x d). Above that the merged factors would only be padded
    with zero directions, and a rank above d makes a file solo refuses to read.
    """
    ranks: list[int] = []
    for connection in plan:
        these = [info.config.rank for w, info in zip(weights, infos) if w != 0.0 and connection in info.config.connections]
        if sum(these) > sum(ranks):
            ranks = these
    hidden = infos[0].fingerprint.hidden_size
    if hidden < sum(ranks):
        return hidden, f"a connection's map is {hidden} x {hidden} (the hidden size), so its rank is at most {hidden}"
    if len(ranks) == 1:
        return ranks[0], f"every merged connection comes from one input, of rank {ranks[0]} at most"
    return sum(
        ranks
    ), f"a merged connection holds rank {sum(ranks)} at most (the sum of its inputs' ranks, {' + '.join(map(str, ranks))})"


def _check_rank(rank: int, weights: list[float], infos: list[AdapterInfo], plan: list[tuple[int, int]]) -> None:
    if rank < 1:
        raise UsageError(f"{param('rank')} {rank}: must be at least 1")
    limit, why = rank_limit(weights, infos, plan)
    if rank > limit:
        raise UsageError(
            f"{param('rank')} {rank}: more than this merge can fill: {why}; "
            f"give {param('rank')} {limit} or less (a higher rank would only add zero directions)"
        )


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _fits_float32(tensors: list[torch.Tensor]) -> bool:
    """Every value finite and within float32's range (what the adapter file stores)."""
    return all(bool(torch.isfinite(t).all()) and float(t.abs().max()) <= _FLOAT32_MAX for t in tensors if t.numel())


def _overflow(weights: list[float], name: str) -> UsageError:
    shown = ",".join(f"{w:g}" for w in weights)
    return UsageError(
        f"{param('weights')} {shown}: connection {name} overflows when weighted (values beyond float32's "
        f"{_FLOAT32_MAX:.3g}, which an adapter file cannot hold); use smaller weights"
    )


def _check_same_base(paths: list[str | Path], infos: list[AdapterInfo]) -> None:
    """Every input must share the first one's base model and source normalisation."""
    first_path, first = paths[0], infos[0]
    for path, info in zip(paths[1:], infos[1:]):
        if info.fingerprint != first.fingerprint:
            raise UsageError(
                f"cannot merge {path} (base {info.base_model}: {info.fingerprint.describe()}) with {first_path} "
                f"(base {first.base_model}: {first.fingerprint.describe()}); merge adapters of the same base model"
            )
        if info.config.source_norm != first.config.source_norm:
            raise UsageError(
                f"cannot merge {path} (source_norm {info.config.source_norm}) with {first_path} "
                f"(source_norm {first.config.source_norm}): their connections read different inputs"
            )


def _merged_plan(weights: list[float], infos: list[AdapterInfo]) -> list[tuple[int, int]]:
    """Every connection of an input with a non-zero weight, in plan order (destination, then source).

    A connection whose every contributor has weight 0 is dropped: it would add nothing.
    """
    plan = sorted({c for w, info in zip(weights, infos) if w != 0.0 for c in info.config.connections}, key=lambda e: (e[1], e[0]))
    if not plan:
        raise UsageError(f"{param('weights')}: every adapter has weight 0, so the merge would be empty")
    return plan


def _merge_connection(target, live: list, rank: int) -> float | None:
    """Write into ``target`` the weighted sum of the ``(weight, connection)`` pairs in ``live``.

    One contributor that fits the rank is copied exactly (None returned); otherwise the sum is
    re-factored and its relative reconstruction error returned.
    """
    if len(live) == 1 and live[0][1].A.shape[0] <= rank:
        w, conn = live[0]
        r = conn.A.shape[0]
        target.A.zero_()
        target.B.zero_()
        target.A[:r] = conn.A
        if target.gate is not None:
            target.B[:, :r] = conn.B * w
            target.gate.fill_(conn.gate_value())
        else:
            target.B[:, :r] = conn.B * (w * conn.gate_value())
        return None
    factors = [(conn.B * (w * conn.gate_value()), conn.A) for w, conn in live]
    B, A, error = refactor(factors, rank)
    target.A.copy_(A)
    target.B.copy_(B)
    if target.gate is not None:
        target.gate.fill_(1.0)  # the gates are folded into B
    return error
