"""``--compile``: torch.compile of the base model's decoder blocks, for the length of a run.

Each block's ``forward`` is compiled, not the module's ``__call__``: the adapter's hooks on the
blocks (:mod:`solo_cli.engine.modeling_solo`) stay outside the compiled graphs and run as they
always do. It pays off on long runs only and stays off by default: after a one-off compile, the
chain r=2 adapter's step on SmolLM2 is 1.09x faster on a 2-core CPU (30 s to compile,
bench/results/compile.md) and 1.69x faster on an H200 (12 s; bench/results/speed-cuda.md), where
an eager step of a model this small is bound by kernel launches that the compiled blocks fuse.
"""

from __future__ import annotations

import contextlib

import torch

from ..engine.blocks import find_blocks


@contextlib.contextmanager
def compiled_blocks(model, enabled: bool):
    """Within the ``with`` block, every decoder block of ``model`` runs a compiled ``forward``."""
    if not enabled:
        yield
        return
    _, blocks = find_blocks(model)
    for block in blocks:
        # dynamic: batches change width from step to step (more so when grouped by length)
        block.forward = torch.compile(block.forward, dynamic=True)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute: the class's forward shows through again
