"""One row of bench/scale.py, alone in its process (so that no other row's memory mixes into its peak).

    python bench/scale_worker.py measure --base tinyllama-1.1b --quantize nf4 --method solo --batch 1 --seq 256
    python bench/scale_worker.py quality --quantize nf4 --method lora-all --steps 60 --batch 8

``measure``: the base loaded through solo's ``load_model`` (nf4 and int8 through transformers'
``quantization_config``), the method attached, warm-up then timed steps of AdamW on random token ids
(every token scored); prints one JSON object: peak memory, step time, tokens/s, load time, the memory
estimate of ``solo_cli.engine.memory_estimate`` for the same settings. ``quality``: the built-in
model (real weights) trained on E2E rows, then its validation loss. The last stdout line is the row.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LOAD_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}  # nf4, int8: the compute dtype (--compute-dtype)
SOLO_QUANTIZE = {"fp32": "none", "bf16": "none", "nf4": "nf4", "int8": "int8"}
LORA_TARGETS = {"lora-qv": ["q_proj", "v_proj"], "lora-all": "all-linear"}  # all-linear: every block linear, not lm_head
LORA_RANK, LORA_ALPHA = 8, 16  # QLoRA's setting (Dettmers et al. 2023)


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def solo_default() -> tuple[str, int]:
    from solo_cli.training.config import TrainConfig

    cfg = TrainConfig()
    return cfg.connections, cfg.rank


def attach_method(method: str, model, lr: float, steps: int):
    """``method`` on ``model`` with its AdamW (common.py's Solo and peft LoRA, as every benchmark builds them)."""
    from common import lora_method, solo_method

    if method == "solo":
        connections, rank = solo_default()
        return solo_method("solo", model, connections, rank, "schedule", lr, steps)
    return lora_method(method, model, lr, steps, rank=LORA_RANK, alpha=LORA_ALPHA, targets=LORA_TARGETS[method])


def estimate(config, opts, dtype: str) -> dict | None:
    """solo_cli.engine.memory_estimate's bytes for this row (None while that module is missing)."""
    try:
        from solo_cli.engine.memory_estimate import train_memory
    except ImportError:
        return None
    connections, rank = solo_default()
    found = train_memory(
        config,
        method=opts.method,
        connections=connections,
        rank=rank if opts.method == "solo" else LORA_RANK,
        quantize=SOLO_QUANTIZE[opts.quantize],
        dtype=dtype,
        batch_size=opts.batch,
        seq_len=opts.seq,
    )
    return found.to_dict()


def random_examples(count: int, seq: int, vocab: int, seed: int = 0) -> list:
    """``count`` examples of ``seq`` random token ids, every token scored (a full row: the same work for each method)."""
    from solo_cli.data.row_encoding import Example

    rng = random.Random(seed)
    rows = [[rng.randrange(3, vocab) for _ in range(seq)] for _ in range(count)]
    return [Example(ids, list(ids)) for ids in rows]


def prime(opts, dtype: str) -> None:
    """One step of the same method over the tiny base, thrown away: the code and libraries the run loads lazily
    (peft, bitsandbytes' kernels, accelerate, tokenizers, ...) are then in the runtime measured before loading,
    not in the row's peak."""
    import gc

    from common import train
    from scale_bases import build_base, llama_config

    folder = build_base("tiny", Path(opts.bases_dir) / "tiny" if opts.bases_dir else None)
    loaded = load(str(folder), opts, dtype)
    method = attach_method(opts.method, loaded.model, 1e-4, 1)
    train(method, random_examples(1, 8, llama_config("tiny").vocab_size), 1, 1, 0, device=opts.device)
    del loaded, method
    gc.collect()


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of ``folder``'s safetensors files (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if f"{folder}/" in line and line.rstrip().endswith(".safetensors"):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def mapped_rss(folder: Path) -> int:
    """Bytes of ``folder``'s safetensors mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and not line.startswith(("Rss", "Size")):
            inside = f"{folder}/" in line and line.rstrip().endswith(".safetensors")
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def unmap_weights(model, folder: Path) -> int:
    """Move the CPU tensors that still live in the memory-mapped safetensors file into the process's own memory, then
    drop the mapping's pages (madvise DONTNEED): the file's pages a load has read and no longer uses would otherwise
    stay in the RSS (reclaimable page cache, not memory the run needs). A page something still reads comes back, and
    counts. Returns the bytes of the file still resident after that (0 unless something reads it)."""
    import ctypes
    import gc

    import torch

    ranges = mapped_ranges(folder)
    copies: dict[int, torch.Tensor] = {}  # tied weights stay tied: one copy per tensor
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None or tensor.device.type != "cpu" or type(tensor) not in (torch.Tensor, torch.nn.Parameter):
                    continue
                if not any(a <= tensor.data_ptr() < b for a, b in ranges):
                    continue
                if id(tensor) not in copies:
                    data = tensor.detach().clone()
                    copies[id(tensor)] = (
                        torch.nn.Parameter(data, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else data
                    )
                table[name] = copies[id(tensor)]
    del copies
    gc.collect()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start, end in mapped_ranges(folder):
        libc.madvise(start, end - start, 4)  # MADV_DONTNEED: clean private file pages are dropped, re-read if touched
    return mapped_rss(folder)


def load(path: str, opts, dtype: str):
    from solo_cli.engine.models import load_model
    from solo_cli.engine.precision import resolve_precision

    precision = resolve_precision(dtype, opts.device, quantize=SOLO_QUANTIZE[opts.quantize])
    return load_model(path, precision=precision, device=opts.device)


def measure(opts) -> dict:
    import torch
    from common import median, train
    from scale_bases import base_params, build_base, llama_config

    dtype = LOAD_DTYPE.get(opts.quantize, opts.compute_dtype)
    prime(opts, dtype)
    folder = build_base(opts.base, Path(opts.bases_dir) / opts.base if opts.bases_dir else None)
    cuda, still_mapped = opts.device.startswith("cuda"), 0
    params = base_params(opts.base)
    examples = random_examples(opts.batch * (opts.warmup + opts.steps), opts.seq, llama_config(opts.base).vocab_size)
    before = torch.cuda.memory_allocated() if cuda else status_kb("VmRSS") * 1024
    tick = time.perf_counter()
    loaded = load(str(folder), opts, dtype)
    load_s = time.perf_counter() - tick
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        still_mapped = unmap_weights(loaded.model, folder.resolve())
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now: the load's transient copies are not the run's
    total = opts.warmup + opts.steps
    method = attach_method(opts.method, loaded.model, 1e-4, total)
    pad = loaded.tokenizer.pad_token_id or 0
    if opts.warmup:
        train(method, examples[: opts.batch * opts.warmup], opts.warmup, opts.batch, pad, device=opts.device)
    timed = train(method, examples[opts.batch * opts.warmup :], opts.steps, opts.batch, pad, device=opts.device)
    peak = torch.cuda.max_memory_allocated() if cuda else status_kb("VmHWM") * 1024
    step_s = median(timed["step_times"])
    # after the measure: the estimate builds a fake model, and a fake forward in this process before the run broke it
    guess = estimate(llama_config(opts.base), opts, dtype)
    return {
        "base_params": params,
        "compute_dtype": dtype,
        "trainable_params": method.params,
        "peak_bytes": peak - before,
        "estimate_bytes": guess["total"] if guess else None,
        "estimate_parts": guess["parts"] if guess else None,
        "load_s": round(load_s, 2),
        "mapped_file_bytes": still_mapped,  # the safetensors' pages resident after the copy (0: none in the peak)
        "step_s": step_s,
        "step_times": timed["step_times"],
        "tokens_per_s": opts.batch * opts.seq / step_s,
        "threads": torch.get_num_threads(),
        "precision": loaded.precision.reason,
    }


def quality(opts) -> dict:
    """The built-in model (real weights) over ``--quantize``, trained ``--steps`` on E2E, then its validation loss."""
    from common import E2E, encode, read_jsonl, sample, train
    from scale_bases import base_params

    from solo_cli.engine.loss import evaluate_loss
    from solo_cli.engine.models import builtin_path

    dtype = LOAD_DTYPE.get(opts.quantize, opts.compute_dtype)
    tick = time.perf_counter()
    loaded = load(str(builtin_path("smollm2-135m")), opts, dtype)
    load_s = time.perf_counter() - tick
    tok = loaded.tokenizer
    rows = sample(read_jsonl(E2E / "train.jsonl"), opts.batch * opts.steps, seed=0)
    examples = encode(rows, tok, max_len=opts.seq)
    valid = encode(read_jsonl(E2E / "valid.jsonl")[: opts.valid_rows], tok, max_len=opts.seq)
    lr = opts.lr if opts.lr is not None else (2e-2 if opts.method == "solo" else 1e-3)
    method = attach_method(opts.method, loaded.model, lr, opts.steps)
    stats = train(method, examples, opts.steps, opts.batch, tok.pad_token_id, device=opts.device)
    return {
        "base_params": base_params("smollm2-135m"),
        "compute_dtype": dtype,
        "trainable_params": method.params,
        "lr": lr,
        "train_rows": len(examples),
        "valid_rows": len(valid),
        "valid_loss": evaluate_loss(loaded.model, valid, 16, tok.pad_token_id, opts.device),
        "final_train_loss": stats["final_loss"],
        "train_s": round(stats["train_seconds"], 1),
        "load_s": round(load_s, 2),
        "precision": loaded.precision.reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("measure", "quality"))
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--quantize", required=True, choices=tuple(SOLO_QUANTIZE))
    parser.add_argument("--method", required=True, choices=("solo", *LORA_TARGETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--bases-dir", default=None, help="where the random bases are kept (default: $SOLO_CACHE/bench-bases)")
    parser.add_argument("--lr", type=float, default=None, help="quality: the learning rate (default 2e-2 Solo, 1e-3 LoRA)")
    parser.add_argument("--valid-rows", type=int, default=256, help="quality: the first N rows of valid.jsonl")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    opts = parser.parse_args()
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    row = measure(opts) if opts.mode == "measure" else quality(opts)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
