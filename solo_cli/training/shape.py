"""A run's shape and its base: what a resumed run must share with the run it continues, beyond its flags.

The shape is how the run's optimizer steps are made: processes (``world_size``), examples per
process and micro-batch, micro-batches per step, the examples they are drawn from, the steps in
all and the steps of the gate's ramp. Two runs of one shape take the same examples at every step
and the same learning rate and gate, so a resume continues the same arithmetic. The base is
what the base model's weights were: a hub model's resolved commit (``base_commit``) or a local
folder's ``weights_digest`` (:func:`solo_cli.engine.weights_digest.weights_digest`).

Both are recorded in ``config.json`` and in every checkpoint's ``trainer_state.json`` (under
``config``), and compared by :func:`run_differences` when a run is resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import param
from .sampler import steps_per_epoch


@dataclass(frozen=True)
class RunShape:
    world_size: int
    batch_size: int  # examples per process and micro-batch
    grad_accum: int  # micro-batches per optimizer step
    examples: int  # training examples the steps are drawn from
    total_steps: int
    homotopy_steps: int
    packed_rows: int = 0  # with --packing, the rows an epoch's examples pack into (what its steps are cut from)

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step (the last step of an epoch may have fewer)."""
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        units = self.packed_rows or self.examples
        return steps_per_epoch(units, self.batch_size * self.world_size, self.grad_accum)

    def to_dict(self) -> dict:
        return {
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "examples": self.examples,
            "packed_rows": self.packed_rows,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "homotopy_steps": self.homotopy_steps,
        }


_SHAPE_WORDS = {
    "world_size": "processes",
    "global_batch": "global batch",
    "batch_size": "batch per process",
    "grad_accum": "micro-batches a step",
    "examples": "training examples",
    "packed_rows": "packed rows",
    "total_steps": "total steps",
    "homotopy_steps": "homotopy steps",
}


def recorded_shape(recorded: dict) -> dict:
    """The shape a config records: ``run_shape``, or for a run from before it, the steps its config.json held."""
    shape = recorded.get("run_shape")
    if isinstance(shape, dict):
        return shape
    old = {"total_steps": recorded.get("total_steps"), "homotopy_steps": recorded.get("homotopy_steps_resolved")}
    return {k: v for k, v in old.items() if v is not None}


def shape_differences(recorded: dict, shape: RunShape) -> list[str]:
    """``what old -> new`` for each part of ``shape`` that differs from the recorded one (unrecorded parts are not compared)."""
    old, new = recorded_shape(recorded), shape.to_dict()
    return [f"{words} {old[key]} -> {new[key]}" for key, words in _SHAPE_WORDS.items() if key in old and old[key] != new[key]]


def base_differences(recorded: dict, base: dict, model: str) -> list[str]:
    """How the base model's weights differ from the recorded ones (a hub commit or a local weights digest)."""
    found = []
    old, new = recorded.get("base_commit"), base.get("base_commit")
    if old and new and old != new:
        found.append(f"{param('model')} {model} resolved to commit {old} then and {new} now (pass {param('revision')} {old})")
    old, new = recorded.get("weights_digest"), base.get("weights_digest")
    if old and new and old != new:
        found.append(f"the weights of {param('model')} {model} changed (sha256 {old[:12]} -> {new[:12]})")
    old, new = recorded.get("init_adapter_sha256"), base.get("init_adapter_sha256")
    if old and new and old != new:  # the adapter the run started from (and DPO's reference)
        found.append(f"the {param('init_adapter')} file changed (sha256 {old[:12]} -> {new[:12]})")
    return found


def run_differences(recorded: dict, shape: RunShape, base: dict, model: str) -> list[str]:
    """Every way this run's shape and base differ from the ``recorded`` config's."""
    return shape_differences(recorded, shape) + base_differences(recorded, base, model)
