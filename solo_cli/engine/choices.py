"""The values ``--dtype`` and ``--parallel`` take, declared once and without torch: ``training/config.py`` (which
must not import torch) offers them as choices, and the engine checks them (``precision.py``, ``models.py``,
``memory_estimate.py``). ``--quantize``'s are :data:`solo_cli.engine.quantization.QUANTIZE_CHOICES`."""

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")  # auto: decided by solo_cli/engine/precision.py
COMPUTE_DTYPES = DTYPE_CHOICES[1:]  # what auto becomes: the dtypes a base's weights are loaded in
PARALLEL_MODES = ("ddp", "fsdp")  # fsdp: solo_cli/training/sharding.py
