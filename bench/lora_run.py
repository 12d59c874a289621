"""One peft LoRA run with solo's data, batch order, loss, schedule and decoding: the baseline of bench/e2e.py.

    python bench/lora_run.py --data DIR -o RUN --rank 4 --lr 1e-2 --batch 64 --epochs 1 [--test test.jsonl]
    python bench/lora_run.py --decode RUN -o OUT --test test.jsonl --num-beams 10 --length-penalty 0.9 --no-repeat-ngram-size 4

It writes what `solo train` writes for the fields bench/e2e.py reads: ``config.json`` (method, rank,
lr, seed, trainable_params, ...) and ``metrics.jsonl`` (the final validation loss on the first 256
rows of valid.jsonl, as `solo train --max-eval-rows 256` measures it), plus the greedy predictions
on ``--test`` in ``test-preds.jsonl`` for `solo eval --predictions`, and the adapter in ``lora-adapter/``
(peft's safetensors). ``--decode RUN`` trains nothing: it decodes ``--test`` with RUN's adapter and
the generation flags given (the LoRA paper's beam search, say) into ``-o``. LoRA: r on q_proj and
v_proj, alpha 32, dropout 0.1 (Hu et al. 2021). peft is a benchmark-only dependency (pip install -e ".[bench]").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import micro_batches
from transformers import get_scheduler, set_seed

from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.data.split_encoding import encode_rowset
from solo_cli.engine.loss import causal_lm_loss, evaluate_loss
from solo_cli.engine.models import load_model
from solo_cli.evaluation.eval_set import eval_set_of, load_eval_split
from solo_cli.evaluation.model_eval import predict
from solo_cli.evaluation.predictions import predictions_text
from solo_cli.files.atomic import write_text
from solo_cli.inference.generation import GenerationSettings
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import resolve_device
from solo_cli.training.sampler import total_steps

TARGETS = ["q_proj", "v_proj"]
ADAPTER = "lora-adapter"  # the folder of a run that holds peft's adapter


def decode(model, tok, device, opts, out: Path) -> None:
    """``--test``'s prompts decoded with the generation flags into ``out/test-preds.jsonl``."""
    targets = eval_set_of(load_eval_split(opts.test))
    if opts.limit:
        targets.prompts, targets.references = targets.prompts[: opts.limit], targets.references[: opts.limit]
    settings = GenerationSettings(
        max_new_tokens=opts.max_new_tokens,
        num_beams=opts.num_beams,
        length_penalty=opts.length_penalty,
        no_repeat_ngram_size=opts.no_repeat_ngram_size,
    ).validate()
    autocast = device.type == "cuda" and opts.dtype == "float32" and torch.cuda.is_bf16_supported()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        preds = predict(model, tok, targets, settings, chat=True, batch_size=64)
    write_text(out / "test-preds.jsonl", predictions_text(targets, preds))


def decode_only(opts, out: Path) -> None:
    """``--decode RUN``: RUN's adapter on the base model, ``--test`` decoded; nothing is trained."""
    from peft import PeftModel

    device = resolve_device(opts.device)
    loaded = load_model("smollm2-135m", dtype=opts.dtype, device=str(device))
    model = PeftModel.from_pretrained(loaded.model, str(Path(opts.decode) / ADAPTER)).get_base_model()
    decode(model, loaded.tokenizer, device, opts, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="required unless --decode")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--lr", type=float, default=None, help="required unless --decode")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-eval-rows", type=int, default=256)
    parser.add_argument("--test", default=None, help="prompt/references JSONL to decode greedily")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="decode only the first N test prompts")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0)
    parser.add_argument("--decode", default=None, help="a run folder of this script: decode --test with its adapter only")
    opts = parser.parse_args()
    out = Path(opts.output)
    out.mkdir(parents=True, exist_ok=True)
    if opts.decode:
        if not opts.test:
            parser.error("--decode needs --test (the prompts to decode)")
        return decode_only(opts, out)
    if opts.data is None or opts.lr is None:
        parser.error("--data and --lr are required to train (or give --decode RUN to decode only)")
    from peft import LoraConfig, get_peft_model

    device = resolve_device(opts.device)
    loaded = load_model("smollm2-135m", dtype=opts.dtype, device=str(device))
    tok = loaded.tokenizer
    source = load_source(DataSpec(opts.data))  # as `solo train --data` reads it: train and valid splits

    def encoded(rows):
        return encode_rowset(rows, tok, chat_template=None, train_on_prompt=False, max_len=256).examples

    train, valid = encoded(source.train), encoded(source.valid)[: opts.max_eval_rows]
    cfg = TrainConfig(batch_size=opts.batch, epochs=opts.epochs, lr=opts.lr, seed=opts.seed)
    steps = total_steps(cfg, len(train))
    set_seed(opts.seed)
    lora = LoraConfig(r=opts.rank, lora_alpha=opts.alpha, lora_dropout=0.1, target_modules=TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(loaded.model, lora)
    model = peft_model.get_base_model()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    autocast = device.type == "cuda" and opts.dtype == "float32" and torch.cuda.is_bf16_supported()
    stream = micro_batches(train, opts.batch, opts.seed)
    pad = tok.pad_token_id
    from solo_cli.data.row_encoding import collate

    model.train()
    started = time.perf_counter()
    with (out / "metrics.jsonl").open("w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            batch = {k: v.to(device) for k, v in collate(next(stream), pad).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = causal_lm_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % 20 == 0 or step == steps:
                log.write(json.dumps({"step": step, "loss": round(float(loss), 6)}) + "\n")
        seconds = time.perf_counter() - started
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            vloss = evaluate_loss(model, valid, opts.batch, pad, device)
        log.write(json.dumps({"step": steps, "valid_loss": round(vloss, 6)}) + "\n")
    config = {
        "method": "lora",
        "connections": ",".join(TARGETS),
        "rank": opts.rank,
        "alpha": opts.alpha,
        "gate": None,
        "lr": opts.lr,
        "seed": opts.seed,
        "batch_size": opts.batch,
        "epochs": opts.epochs,
        "total_steps": steps,
        "trainable_params": sum(p.numel() for p in params),
        "train_seconds": round(seconds, 1),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    peft_model.save_pretrained(str(out / ADAPTER))  # for --decode: other decodings of this run, no retraining
    if opts.test:
        decode(model, tok, device, opts, out)


if __name__ == "__main__":
    main()
