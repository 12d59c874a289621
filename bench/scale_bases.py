"""The bases of bench/scale.py: real families' shapes (Llama configs written by hand, nothing downloaded) with random
weights, since a step's time and memory do not depend on the weights' values.

Each base is built once, in bfloat16, and saved as a model folder (safetensors + config.json + the built-in
model's tokenizer, which only the loader reads) under ``$SOLO_CACHE/bench-bases/<name>`` (else
``~/.cache/solo/bench-bases``), so that every row loads it as a real base is loaded: through solo's
``load_model``, quantized by transformers' ``quantization_config`` for nf4 and int8.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# name: (LlamaConfig fields, what it is shaped like)
BASES = {
    # 2 blocks of width 64: --quick only (bitsandbytes quantizes layers of 64 or more in and out features)
    "tiny": (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=512, tie_word_embeddings=True), "a 4-block Llama of width 64 (smoke runs)"),
    "smollm2-135m": (dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                          rope_theta=100000.0), "SmolLM2-135M (the built-in model's shape)"),
    "tinyllama-1.1b": (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                            num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0),
                       "TinyLlama-1.1B (Llama 2 architecture)"),
    "llama3.2-3b": (dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
                    "Llama-3.2-3B"),
    "llama3-8b": (dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
                  "Llama-3-8B"),
}  # fmt: skip
CPU_BASES = ("smollm2-135m", "tinyllama-1.1b")
GPU_BASES = ("smollm2-135m", "tinyllama-1.1b", "llama3.2-3b", "llama3-8b")


def bases_dir() -> Path:
    return Path(os.environ.get("SOLO_CACHE") or Path.home() / ".cache" / "solo") / "bench-bases"


def llama_config(name: str):
    from transformers import LlamaConfig

    fields = dict(BASES[name][0])
    rope_theta = fields.pop("rope_theta", 10000.0)
    config = LlamaConfig(**fields, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    config.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    return config


def base_params(name: str) -> int:
    """The base's parameter count, from a model built on the meta device (no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(name))
    return sum(p.numel() for p in model.parameters())


def build_base(name: str, folder: Path | None = None) -> Path:
    """The base's model folder, built on first use: N(0, 0.02) weights, unit norms, bfloat16 safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from solo_cli.engine.models import builtin_path

    target = folder or bases_dir() / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    config = llama_config(name)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")  # no initialisation pass: filled below, tensor by tensor
    model.tie_weights()  # to_empty gives the head its own tensor
    model = model.to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    model.config.dtype = torch.bfloat16
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    AutoTokenizer.from_pretrained(builtin_path("smollm2-135m")).save_pretrained(staging)  # read by the loader only
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
