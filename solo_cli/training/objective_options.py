"""The options of ``--objective`` (sft, dpo, orpo, simpo): their choices, defaults and checks, torch-free.

:class:`solo_cli.training.config.TrainConfig` declares the fields (``objective``, ``beta``,
``simpo_gamma``, ``init_adapter``); this module says what they default to and what they refuse, so
that the command line checks them before torch is imported. Each function takes that TrainConfig
(not imported here: config imports this module). The losses themselves are
:mod:`solo_cli.engine.preference`, the part of a step they make :mod:`solo_cli.training.objective`.
"""

from __future__ import annotations

import math

from ..errors import param

OBJECTIVES = ("sft", "dpo", "orpo", "simpo")
# --beta when not given: TRL's DPOTrainer and ORPOTrainer (0.1), the SimPO paper (2.0); SimPO's gamma is beta x 0.5
DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "simpo": 2.0}
SIMPO_GAMMA_BETA_RATIO = 0.5


def resolved_beta(cfg) -> float | None:
    """``--beta``, else the objective's default (None for sft, which has none)."""
    return cfg.beta if cfg.beta is not None else DEFAULT_BETA.get(cfg.objective)


def resolved_gamma(cfg) -> float | None:
    """SimPO's margin: ``--simpo-gamma``, else ``--beta`` x 0.5 (None for the other objectives)."""
    if cfg.objective != "simpo":
        return None
    return cfg.simpo_gamma if cfg.simpo_gamma is not None else SIMPO_GAMMA_BETA_RATIO * resolved_beta(cfg)


def objective_problems(cfg) -> list[str]:
    """What ``--objective``, ``--beta``, ``--simpo-gamma`` and ``--init-adapter`` refuse, each a message naming its flag."""
    problems, pairs = [], cfg.objective in DEFAULT_BETA
    objective = f"{param('objective')} {cfg.objective}"
    for name, low in (("beta", 0.0), ("simpo_gamma", None)):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and (value > low if low is not None else value >= 0)):
            problems.append(f"{param(name)} {value!r}: must be a {'positive' if low is not None else 'non-negative'} number")
    if cfg.beta is not None and not pairs:
        problems.append(f"{param('beta')} sets a preference loss; with {objective} it does nothing: drop it")
    if cfg.simpo_gamma is not None and cfg.objective != "simpo":
        problems.append(f"{param('simpo_gamma')} is SimPO's margin; with {objective} it does nothing: drop it")
    refused = (("packing", "a pair is two whole sequences, scored apart"), ("train_on_prompt", "a pair is scored on its replies"))
    for name, why in refused:
        if pairs and getattr(cfg, name):
            problems.append(f"{param(name)} does not apply to {objective} ({why}): drop it")
    if pairs and cfg.label_smoothing:
        problems.append(f"{param('label_smoothing')} smooths the next-token loss of {param('objective')} sft: drop it")
    if cfg.init_adapter is not None and not str(cfg.init_adapter).strip():
        problems.append(f"{param('init_adapter')} is empty; name an adapter.safetensors or its run folder")
    for name in ("homotopy_steps", "homotopy_fraction"):
        if cfg.init_adapter and getattr(cfg, name) is not None:
            problems.append(
                f"{param(name)} ramps a fresh adapter in, and {param('init_adapter')} starts from a trained one: drop it"
            )
    return problems
