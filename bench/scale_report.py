"""bench/scale.py's markdown: the commands, the devices, what is counted, the table, and the issue's targets
computed from the rows (which pass, which miss, which have no rows yet)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

MIB = 2**20
QUANTIZE_ORDER = ("fp32", "bf16", "nf4", "int8")
METHOD_ORDER = ("solo", "lora-qv", "lora-all")
WHAT_IS_COUNTED = """\
What is counted. Each row is one fresh process. It first runs one step of the same method over a tiny
base and throws it away, so that the code and libraries the run loads lazily (peft, bitsandbytes'
kernels, accelerate, tokenizers) belong to the runtime; then it reads its resident memory (VmRSS),
loads the base (time: `load_s`), resets the peak (`/proc/self/clear_refs` 5: VmHWM := VmRSS, so the
load's transient copies are not counted), attaches the method, runs the warm-up and timed steps and
reads the high-water mark (VmHWM). Before the reset, any weight still backed by the memory-mapped
safetensors file is copied into the process's own memory and the mapping's pages are dropped (madvise
DONTNEED): otherwise the pages a quantized load read and discarded would stay in the RSS (reclaimable
page cache); `mapped_file_bytes` in the JSON is what of the file stayed resident (0: none).
`peak_bytes` = VmHWM - the RSS before loading: the base's weights (quantized or not), the adapter,
its gradients, AdamW's state, the activations kept for the backward pass, the loss's logits and what
the allocator keeps. Every row runs with `MALLOC_MMAP_THRESHOLD_=131072` (glibc hands freed blocks of
128 KiB and more back at once; with its default, the heap kept freed activations and CPU peaks ran
20-45% above what the tensors held, in the estimator's calibration runs). With `--warmup 0` the first timed step also holds the loss's one-time check of
its shortcut (one extra forward of one row). On CUDA:
`torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()` once loaded, minus the memory
allocated before loading (the caching allocator's reserve is not counted). `estimate_bytes`:
`solo_cli.engine.memory_estimate.train_memory` for the same base config, method, rank, quantization,
dtype, batch and sequence length (it leaves out the runtime, as the measure does). `step_s`: the median
of the timed steps (forward, backward, clip, AdamW step); `tokens_per_s` = batch x seq / step_s. Every
token of the random ids is scored, for every method. Both methods: AdamW, no gradient checkpointing;
LoRA: peft, alpha 16, dropout 0.1, no `prepare_model_for_kbit_training` (which would turn on
gradient checkpointing and cast the norms to float32)."""


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.machine())
    return f"cpu: {model}, {os.cpu_count()} cores (torch {torch.__version__})"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _ok(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def _mib(value) -> str:
    return f"{value / MIB:,.0f}" if isinstance(value, (int, float)) else "-"


def _measured(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" not in r]


def _find(rows, **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def table(rows: list[dict]) -> list[str]:
    out = [
        "| device | base | params | quantize | compute | method | batch x seq | trainable | peak MiB | estimate MiB "
        "| est/peak | step s | tokens/s | load s |",
        "| --- | --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        head = f"| {r['device']} | {r['base']} | {_params(r.get('base_params', 0))} | {r['quantize']} | {r['compute_dtype']} "
        head += f"| {r['method']} | {r['batch']} x {r['seq']} "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:120].replace('|', '/')} ||||||||")
            continue
        ratio = f"{r['estimate_bytes'] / r['peak_bytes']:.2f}" if r.get("estimate_bytes") and r["peak_bytes"] > 0 else "-"
        out.append(
            head + f"| {r['trainable_params']:,} | {_mib(r['peak_bytes'])} | {_mib(r.get('estimate_bytes'))} | {ratio} "
            f"| {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {r['load_s']} |"
        )
    return out


def targets(rows: list[dict]) -> list[str]:
    rows = _measured(rows)
    out = ["## Targets (issue 20)", ""]
    nf4 = [r for r in rows if r["quantize"] == "nf4" and 1e9 <= r.get("base_params", 0) <= 2.5e9]
    for r in nf4:
        bf16 = _find(
            rows, device=r["device"], base=r["base"], quantize="bf16", method=r["method"], batch=r["batch"], seq=r["seq"]
        )
        if bf16:
            ratio = r["peak_bytes"] / bf16["peak_bytes"]
            out.append(f"- nf4 peak <= 0.45x bf16 ({r['device']}, {r['base']}, {r['method']}, {r['batch']} x {r['seq']}): "
                       f"{ratio:.2f}x, {_ok(ratio <= 0.45)}")  # fmt: skip
    if not nf4:
        out.append("- nf4 peak <= 0.45x bf16 on a 1B-2B base: no nf4 row of such a base yet")
    pairs = [r for r in rows if r["quantize"] == "nf4" and r["method"] == "solo"]
    for r in pairs:
        match = {k: r[k] for k in ("device", "base", "compute_dtype", "batch", "seq")}
        lora = _find(rows, quantize="nf4", method="lora-all", **match)
        if lora:
            peak, step = r["peak_bytes"] / lora["peak_bytes"], r["step_s"] / lora["step_s"]
            out.append(f"- Solo vs QLoRA (lora-all) over nf4 ({r['device']}, {r['base']}, {r['batch']} x {r['seq']}): "
                       f"peak {peak:.2f}x {_ok(peak <= 0.8)}, step time {step:.2f}x {_ok(step <= 0.8)} (targets <= 0.8x)")  # fmt: skip
    if not pairs:
        out.append("- Solo vs QLoRA over nf4: no solo nf4 row yet")
    out += _estimate_target(rows)
    big = [
        r for r in rows if r["device"] == "cuda" and r["base"] == "llama3-8b" and r["quantize"] == "nf4" and r["method"] == "solo"
    ]
    for r in big:
        out.append(f"- 8B-shaped base over nf4 at {r['batch']} x {r['seq']} on a GPU: {r['peak_bytes'] / 2**30:.2f} GiB "
                   f"({_ok(r['peak_bytes'] <= 12 * 2**30) if (r['batch'], r['seq']) >= (8, 512) else 'target is at 8 x 512'})")  # fmt: skip
    if not big:
        out.append("- 8B-shaped base in nf4 at batch 8 x 512 within 12 GB on a GPU: not measured (no GPU row)")
    return out


def _estimate_target(rows: list[dict]) -> list[str]:
    rated = [r for r in rows if r.get("estimate_bytes") and r["peak_bytes"] > 0]
    if not rated:
        return ["- Estimate within 15% of the measured peak: no row has an estimate yet"]
    misses = [r for r in rated if abs(r["estimate_bytes"] / r["peak_bytes"] - 1) > 0.15]
    line = f"- Estimate within 15% of the measured peak on every row: {len(rated) - len(misses)} of {len(rated)} rows within, "
    line += _ok(not misses)
    out = [line]
    for r in misses:
        out.append(f"  - misses: {r['device']} {r['base']} {r['quantize']} {r['method']} {r['batch']} x {r['seq']}: "
                   f"estimate {_mib(r['estimate_bytes'])} MiB vs {_mib(r['peak_bytes'])} MiB measured "
                   f"({r['estimate_bytes'] / r['peak_bytes']:.2f}x)")  # fmt: skip
    return out


def _valid_rows(rows: list[dict]) -> str:
    found = sorted({r["valid_rows"] for r in _measured(rows)})
    return "/".join(map(str, found)) or "N"


def quality_lines(rows: list[dict]) -> list[str]:
    out = [
        "| quantize | compute | method | steps | batch | lr | trainable | valid loss | vs fp32 | train s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    checks = []
    for r in rows:
        if "error" in r:
            out.append(f"| {r['quantize']} | {r['compute_dtype']} | {r['method']} | {r['steps']} | {r['batch']} | | | failed: "
                       f"{r['error'][:120].replace('|', '/')} | | |")  # fmt: skip
            continue
        same = {k: r[k] for k in ("device", "method", "batch", "seq", "steps", "lr")}
        full = _find(_measured(rows), quantize="fp32", **same)
        rel = r["valid_loss"] / full["valid_loss"] - 1 if full else None
        out.append(
            f"| {r['quantize']} | {r['compute_dtype']} | {r['method']} | {r['steps']} | {r['batch']} | {r['lr']:g} "
            f"| {r['trainable_params']:,} | {r['valid_loss']:.4f} | {f'{rel:+.2%}' if rel is not None else '-'} | {r['train_s']} |"
        )
        if rel is not None and r["quantize"] == "nf4":
            checks.append(f"- {r['method']} over nf4: validation loss {rel:+.2%} of the fp32 run, {_ok(abs(rel) <= 0.02)}")
    targets = ["## Target (issue 20)", "", *(checks or ["- nf4 within 2% of fp32: no pair of rows yet"])]
    return out + ["", *targets]


def _order(row: dict) -> tuple:
    """Device, base by size, then quantize and method in the benchmark's own order."""
    quantize = QUANTIZE_ORDER.index(row["quantize"]) if row["quantize"] in QUANTIZE_ORDER else len(QUANTIZE_ORDER)
    method = METHOD_ORDER.index(row["method"]) if row["method"] in METHOD_ORDER else len(METHOD_ORDER)
    return (row["device"], row.get("base_params", 0), row["base"], quantize, row.get("compute_dtype", ""), method)


def _params(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def write_report(results: dict, path: Path, *, quality: bool) -> None:
    rows = sorted(results["rows"], key=_order)
    title = (
        "# Quality over quantized bases (bench/scale.py --quality)"
        if quality
        else "# Scale: Solo vs LoRA over big and quantized bases"
    )
    lines = [title, "", "Commands (each adds or replaces rows):", ""]
    lines += [f"- `{c}`" for c in results["commands"]]
    lines += ["", "Devices: " + "; ".join(results["devices"].values()), ""]
    if quality:
        lines += [
            "The built-in model (SmolLM2-135M-Instruct, real weights) loaded over each quantization, trained on a seeded",
            "sample of E2E train.jsonl (completion-only loss, AdamW, linear decay), then the validation loss on the first",
            f"{_valid_rows(rows)} rows of valid.jsonl. Solo: `solo train`'s default connections and rank; LoRA: peft r=8 on every",
            "linear layer of the blocks (alpha 16, dropout 0.1). vs fp32: the same method's run over the float32 base.",
            "",
            *quality_lines(rows),
        ]
    else:
        lines += [WHAT_IS_COUNTED, "", *table(rows), "", *targets(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
