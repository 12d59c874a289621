"""Connection plans: which block outputs feed which later blocks.

A connection ``i -> j`` adds a low-rank map of ``h_i`` (the residual stream leaving block ``i``;
``-1`` is the embedding output) to the output of block ``j``. A plan is written either as an
explicit list (``"3->9,5->11"``, ``"emb->5"``) or as a preset:

- ``top:N[:S]`` - N long spans of S blocks (default: half the depth) into the top N blocks.
- ``mirror[:N]`` - U-Net style ``i -> L-1-i``; with N, only the N outermost pairs.
- ``chain[:K]`` - ``j-K -> j`` for every block j that has a source K blocks below it (K: a sixth of
  the depth, at least 1: 5 on SmolLM2's 30 blocks, the span bench/e2e.py chose).

Plans joined by ``+`` are one plan, their union: ``chain:1+chain:5+chain:15`` mixes short and long
spans, ``chain+emb->29`` adds a link to a preset. A connection that two parts both give is kept once.
"""

from __future__ import annotations

import re

from ..errors import UsageError, param

Connection = tuple[int, int]
EMBEDDING = -1  # the source index of the embedding output
PRESET_HELP = "chain[:K], top:N[:S], mirror[:N] or a list such as '3->9,5->11' (emb = -1); join plans with + (chain:1+chain:5)"
_EDGE = re.compile(r"^\s*(emb|-?\d{1,9})\s*->\s*(-?\d{1,9})\s*$")  # 9 digits: no int() of thousands


def source_name(index: int) -> str:
    """How a plan writes a block index: ``"emb"`` for the embedding output (-1), else the number."""
    return "emb" if index == EMBEDDING else str(index)


def _int_arg(spec: str, text: str, minimum: int, maximum: int | None = None, what: str = "") -> int:
    """A preset's number, at least ``minimum`` and, if given, at most ``maximum`` (``what`` says why)."""
    if not (text.isascii() and text.isdigit()) or (len(text) <= 18 and int(text) < minimum):
        raise UsageError(f"{param('connections')} {spec!r}: {text!r} must be an integer >= {minimum}; use {PRESET_HELP}")
    value = int(text) if len(text) <= 18 else 10**18  # int() of thousands of digits is slow, then refused
    if maximum is not None and value > maximum:
        raise UsageError(
            f"{param('connections')} {spec!r}: {text} is more than {what}; give a number from {minimum} to {maximum}"
        )
    return value


def _preset(spec: str, num_blocks: int) -> list[Connection] | None:
    name, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    L = num_blocks
    if name == "top":
        if not 1 <= len(args) <= 2:
            raise UsageError(f"{param('connections')} {spec!r}: write top:N or top:N:SPAN")
        n = _int_arg(spec, args[0], 1, L, f"the model's {L} blocks")  # bounded: it is the length of the list built
        span = _int_arg(spec, args[1], 1) if len(args) > 1 else max(1, L // 2)
        return [(j - span, j) for j in range(L - n, L)]
    if name == "mirror":
        pairs = [(i, L - 1 - i) for i in range(L) if i < L - 1 - i]
        if len(args) > 1:
            raise UsageError(f"{param('connections')} {spec!r}: write mirror or mirror:N (the N outermost pairs)")
        if args:
            pairs = pairs[: _int_arg(spec, args[0], 1)]
        return pairs
    if name == "chain":
        if len(args) > 1:
            raise UsageError(f"{param('connections')} {spec!r}: write chain or chain:K (the span of every link)")
        k = _int_arg(spec, args[0], 1) if args else max(1, round(L / 6))
        return [(j - k, j) for j in range(k - 1, L)]
    return None


def parse_connections(spec: str, num_blocks: int) -> list[Connection]:
    """Resolve a connection spec against a model with ``num_blocks`` decoder blocks.

    Every problem in an explicit list is collected and reported in one error. ``a+b`` is the union of
    the plans ``a`` and ``b``, each checked on its own.
    """
    spec = spec.strip()
    if not spec:
        raise UsageError(f"{param('connections')} is empty; use {PRESET_HELP}")
    if "+" in spec:
        parts = [part.strip() for part in spec.split("+")]
        if not all(parts):
            raise UsageError(f"{param('connections')} {spec!r}: a '+' with no plan on one side; write e.g. chain:1+chain:5")
        union = {edge for part in parts for edge in parse_connections(part, num_blocks)}
        return sorted(union, key=lambda e: (e[1], e[0]))
    preset = None if "," in spec else _preset(spec, num_blocks)  # a list: 'chain:1,chain:5' is told to use +
    if preset is not None:
        edges = preset
    else:
        edges, bad = [], []
        for part in spec.split(","):
            match = _EDGE.match(part)
            if not match:
                bad.append(part.strip())
                continue
            src = EMBEDDING if match.group(1) == source_name(EMBEDDING) else int(match.group(1))
            edges.append((src, int(match.group(2))))
        if bad:
            raise UsageError(f"{param('connections')}: cannot parse {', '.join(repr(b) for b in bad)}; use {PRESET_HELP}")
    validate_connections(edges, num_blocks, spec)
    return sorted(edges, key=lambda e: (e[1], e[0]))


def validate_connections(edges: list[Connection], num_blocks: int, spec: str = "") -> None:
    """Raise one error listing every connection that is out of range, backwards or repeated."""
    problems, seen = [], set()
    for i, j in edges:
        if not (-1 <= i < num_blocks and 0 <= j < num_blocks):
            problems.append(f"{i}->{j} is out of range (blocks are 0..{num_blocks - 1}, emb = -1)")
        elif i >= j:
            problems.append(f"{i}->{j} goes backwards (the source must be below the destination)")
        elif (i, j) in seen:
            problems.append(f"{i}->{j} is listed twice")
        seen.add((i, j))
    if not edges:
        problems.append("the plan has no connections (the model may be too shallow for this preset)")
    if problems:
        where = f" {spec!r}" if spec else ""
        more = f"; ... and {len(problems) - 3} more" if len(problems) > 3 else ""  # top:99 would list them all
        raise UsageError(f"{param('connections')}{where}: " + "; ".join(problems[:3]) + more)


def format_connections(edges: list[Connection]) -> str:
    """The explicit form of a plan, which ``parse_connections`` reads back."""
    return ",".join(f"{source_name(i)}->{j}" for i, j in edges)
