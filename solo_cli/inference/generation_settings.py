"""How to generate: the settings `solo generate` and `solo eval` take, checked before any model loads.

Torch-free, so that a command checks its flags (and ``solo eval --predictions`` runs) without
importing torch or transformers; :mod:`solo_cli.inference.generation` does the generating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import UsageError, param

SEED_MAX = 2**32 - 1  # torch.manual_seed and numpy accept no more
# Beam search keeps num_beams copies of every prompt (inputs, cache, logits over the vocabulary): a width
# of 2**40 would try to allocate terabytes. 64 is far above what decoding recipes use (LoRA's E2E: 10).
MAX_NUM_BEAMS = 64
# Logits are divided by the temperature: below this, that overflows float32 into inf and sampling fails
# (a logit of 10 at 1e-38). Sampling that cold is greedy anyway (a logit gap of 0.01 weighs e^-100).
MIN_TEMPERATURE = 1e-4


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (or beam search with num_beams > 1)
    top_p: float = 1.0
    top_k: int = 0
    num_beams: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def validate(self) -> GenerationSettings:
        """Refuse what transformers would take silently or fail on deep inside: one error naming each flag.

        NaN, infinite or negative temperatures, a top-p outside (0, 1], a negative top-k and the
        like would otherwise sample garbage, or crash mid-generation with a long traceback.
        """
        problems = []
        for name, value in (("max_new_tokens", self.max_new_tokens), ("num_beams", self.num_beams)):
            if value < 1:
                problems.append(f"{param(name)} {value}: must be at least 1")
        if self.num_beams > MAX_NUM_BEAMS:  # checked before transformers copies every prompt num_beams times
            problems.append(f"{param('num_beams')} {self.num_beams}: must be at most {MAX_NUM_BEAMS}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"{param('temperature')} {self.temperature:g}: must be a finite number >= 0 (0 = greedy)")
        elif 0 < self.temperature < MIN_TEMPERATURE:
            problems.append(
                f"{param('temperature')} {self.temperature:g}: must be 0 (greedy) or at least {MIN_TEMPERATURE:g} "
                "(colder sampling is greedy anyway, and overflows)"
            )
        if not 0 < self.top_p <= 1:  # also refuses nan
            problems.append(f"{param('top_p')} {self.top_p:g}: must be in (0, 1] (1 = off)")
        if self.top_k < 0:
            problems.append(f"{param('top_k')} {self.top_k}: must be 0 or more (0 = off)")
        if not math.isfinite(self.length_penalty):
            problems.append(f"{param('length_penalty')} {self.length_penalty:g}: must be a finite number (1 = none)")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"{param('no_repeat_ngram_size')} {self.no_repeat_ngram_size}: must be 0 or more (0 = off)")
        if not 0 <= self.seed <= SEED_MAX:
            problems.append(f"{param('seed')} {self.seed}: must be between 0 and {SEED_MAX} (2**32 - 1)")
        if problems:
            raise UsageError("; ".join(problems))
        return self
