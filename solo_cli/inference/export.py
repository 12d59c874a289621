"""Exporting base + adapter as one standalone model folder.

A Solo connection is not a change to any existing weight matrix, so it cannot be folded into a
stock architecture. The export is the base model's own weights and config plus the adapter's
tensors, and a small modeling file (registered through the config's ``auto_map``) that subclasses
the base class and adds the connections, so plain transformers loads the folder as one model
with ``trust_remote_code=True``. `solo` loads it without running that code.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..engine.adapter import RMS_EPS
from ..engine.adapter_file import ADAPTER_FILENAME, read_info, resolve_adapter_path
from ..engine.blocks import find_blocks
from ..engine.models import DTYPES, load_config, resolve_dtype
from ..errors import RuntimeFailure, UsageError
from ..files.atomic import atomic_dir
from ..outputs import check_export_target
from .load import load_for_inference

MARKER = "solo_adapter"  # the config key that makes a folder a solo export
MODELING_FILE = "modeling_solo.py"
# Largest logit difference allowed between the reloaded export and base + adapter, relative to the
# largest logit: float precision for float32 bases, a few roundings for half-precision ones.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}

MODELING_TEMPLATE = '''"""A {base_class} with Solo Connection adapters (low-rank long skip connections).

Written by solo {version} with `solo merge --export`. This file is code that transformers runs
when the folder is loaded with trust_remote_code=True. Without it, transformers loads the plain
base model and ignores the connections. A connection i -> j adds t * B A n(h_i) to the output of
decoder block j (h_i: the hidden state leaving block i; -1 is the embedding output).
"""

import torch
from torch import nn
from transformers import {base_class} as _Base


class SoloConnection(nn.Module):
    def __init__(self, hidden_size, rank, gated, source_norm):
        super().__init__()
        self.source_norm = source_norm
        self.A = nn.Parameter(torch.zeros(rank, hidden_size))
        self.B = nn.Parameter(torch.zeros(hidden_size, rank))
        self.gate = nn.Parameter(torch.ones(())) if gated else None

    def forward(self, source):
        x = source.to(self.A.dtype)
        if self.source_norm == "rms":
            x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + {eps})
        delta = (x @ self.A.t()) @ self.B.t()
        return delta if self.gate is None else delta * self.gate.to(delta.dtype)


def _load_base_keys_too():
    """transformers renames old checkpoint keys (GPT-NeoX's embed_out -> lm_head) by class name; this
    class reads the keys its base class reads."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
    except ImportError:
        return
    mapping = get_checkpoint_conversion_mapping(_Base.__name__)
    if mapping is not None:
        register_checkpoint_conversion_mapping("SoloForCausalLM", mapping, overwrite=True)


class SoloForCausalLM(_Base):
    _keep_in_fp32_modules = ["solo"]  # the connections run in float32 whatever the base dtype, as in solo

    def __init__(self, config):
        super().__init__(config)
        _load_base_keys_too()
        spec = config.solo_adapter
        plan = [(int(i), int(j)) for i, j in spec["connections"]]
        key = lambda i, j: ("emb" if i == -1 else str(i)) + "_" + str(j)  # noqa: E731
        self.solo = nn.ModuleDict({{key(i, j): SoloConnection(spec["hidden_size"], spec["rank"], spec["gated"], spec.get("source_norm", "none")) for i, j in plan}})
        blocks = self.get_submodule(spec["blocks_path"])
        incoming = {{}}
        for i, j in plan:
            incoming.setdefault(j, []).append((i, key(i, j)))
        sources = {{i for i, _ in plan}}
        self._solo_states = {{}}
        if -1 in sources:
            blocks[0].register_forward_pre_hook(self._capture_embedding, with_kwargs=True)
        for k in sorted((sources | set(incoming)) - {{-1}}):
            blocks[k].register_forward_hook(self._block_hook(k, incoming.get(k, []), k in sources, k == max(incoming)))

    def _capture_embedding(self, module, args, kwargs):
        self._solo_states[-1] = args[0] if args else kwargs["hidden_states"]

    def _block_hook(self, index, incoming, is_source, is_last):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            for src, name in incoming:
                hidden = hidden + self.solo[name](self._solo_states[src]).to(hidden.dtype)
            if is_source:
                self._solo_states[index] = hidden
            if is_last:
                self._solo_states.clear()
            if not incoming:
                return None
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook
'''

README_TEMPLATE = """# {name}

A standalone model exported by solo {version}: the base model `{base}` with a Solo Connection
adapter ({count} connections, rank {rank}).

**This folder carries code.** `{modeling}` subclasses `{base_class}` and adds the connections.
Plain transformers runs it only when asked:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{name}")
```

Without `trust_remote_code=True`, transformers loads the plain base model and silently ignores the
adapter. `solo generate --model {name}` and `solo eval --model {name}` load it without running the
folder's code (they attach `{adapter}` with solo's own engine).

Files: the base weights and the adapter tensors (`model.safetensors`), the adapter alone
(`{adapter}`), the tokenizer, `config.json` (`solo_adapter` and `auto_map` added) and `{modeling}`.
"""


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    greedy_equal: bool


def stored_dtype(model: str, revision: str | None, trust_remote_code: bool) -> str:
    """The dtype name a model's config records (float32 when it records none solo loads)."""
    config = load_config(model, revision, trust_remote_code)
    recorded = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(recorded).removeprefix("torch.") if recorded is not None else "float32"
    return name if name in DTYPES else "float32"


def is_export(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return MARKER in json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _check_inputs(tokenizer, vocab: int) -> list[torch.Tensor]:
    texts = ["The capital of France is", "name[Blue Spice], eatType[coffee shop], area[riverside]", "1 2 3 4"]
    return [tokenizer(t, return_tensors="pt")["input_ids"].clamp_max(vocab - 1) for t in texts]


def export_model(
    adapter: str | Path,
    model: str | None,
    output: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    overwrite: bool = False,
    dtype: str | None = None,
) -> ExportResult:
    """Write base + adapter to ``output`` as one model folder, then check it reproduces base + adapter.

    The base weights keep ``dtype`` (default: the dtype the base was saved in, so a bf16 base does not
    double on disk); the adapter tensors stay float32.
    """
    output = Path(output)
    check_export_target(output, overwrite)  # only an export solo wrote is replaced, never the current folder
    adapter_path = resolve_adapter_path(adapter)
    dtype = dtype or stored_dtype(model or read_info(adapter_path).base_model, revision, trust_remote_code)
    target = load_for_inference(
        model,
        str(adapter_path),
        revision=revision,
        dtype=dtype,
        device="cpu",
        trust_remote_code=trust_remote_code,
        force=force,
    )
    base, tokenizer, handle = target.loaded.model, target.loaded.tokenizer, target.handle
    blocks_path, _ = find_blocks(base)
    base_class = type(base).__name__
    import transformers

    if not hasattr(transformers, base_class):
        raise UsageError(
            f"--model: {base_class} is not a transformers class, so the export could not name its base; "
            "export works for models that transformers ships"
        )
    plan = target.info.config
    config = copy.deepcopy(base.config)
    config.architectures = ["SoloForCausalLM"]
    config.auto_map = {"AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.SoloForCausalLM"}
    setattr(
        config,
        MARKER,
        {
            "connections": [list(c) for c in plan.connections],
            "rank": plan.rank,
            "gated": plan.gate != "zero-init",
            "source_norm": plan.source_norm,
            "hidden_size": plan.hidden_size,
            "blocks_path": blocks_path,
            "adapter_file": ADAPTER_FILENAME,
            "solo_version": __version__,
        },
    )
    try:
        with atomic_dir(output) as staging:  # renamed onto output only once the check below passes
            _write_export(staging, base, config, handle, tokenizer, adapter_path, plan, target.loaded.name, output.name)
            torch_dtype = resolve_dtype(dtype)
            diff, greedy_equal = _check_export(staging, base, tokenizer, target.info.fingerprint.vocab_size, torch_dtype)
            if diff > TOLERANCE[torch_dtype]:
                raise RuntimeFailure(
                    f"export check failed: the exported model's logits differ from base + adapter by {diff:.3g} "
                    f"(tolerance {TOLERANCE[torch_dtype]} for {dtype}); nothing was written to {output}"
                )
    finally:
        handle.detach()
    return ExportResult(output, diff, greedy_equal)


def _write_export(staging: Path, base, config, handle, tokenizer, adapter_path: Path, plan, base_name: str, name: str) -> None:
    """Base weights with the adapter tensors added, the adapter file, tokenizer, config, code and README."""
    base_class = type(base).__name__
    original = base.config
    base.config = config
    try:
        base.save_pretrained(staging, max_shard_size="1000GB")
    finally:
        base.config = original
    weights_file = staging / "model.safetensors"
    tensors = load_file(str(weights_file))
    for key, value in handle.adapter.connections.state_dict().items():
        tensors[f"solo.{key}"] = value.detach().float().contiguous()
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    tokenizer.save_pretrained(staging)
    shutil.copyfile(adapter_path, staging / ADAPTER_FILENAME)
    (staging / MODELING_FILE).write_text(
        MODELING_TEMPLATE.format(base_class=base_class, version=__version__, eps=RMS_EPS), encoding="utf-8"
    )
    (staging / "README.md").write_text(
        README_TEMPLATE.format(
            name=name,
            version=__version__,
            base=base_name,
            count=len(plan.connections),
            rank=plan.rank,
            modeling=MODELING_FILE,
            base_class=base_class,
            adapter=ADAPTER_FILENAME,
        ),
        encoding="utf-8",
    )


def _check_export(staging: Path, base, tokenizer, vocab: int, dtype: torch.dtype) -> tuple[float, bool]:
    """Reload the folder with plain transformers; the largest logit difference from base + adapter (relative
    to the largest logit, when that is above 1) and whether greedy decoding agrees."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(staging, trust_remote_code=True, dtype=dtype).eval()
    diff = 0.0
    with torch.no_grad():
        inputs = _check_inputs(tokenizer, vocab)
        for ids in inputs:
            expected = base(ids).logits.float()
            gap = float((exported(ids).logits.float() - expected).abs().max())
            diff = max(diff, gap / max(1.0, float(expected.abs().max())))
        settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        greedy_equal = torch.equal(exported.generate(inputs[0], **settings), base.generate(inputs[0], **settings))
    return diff, greedy_equal
