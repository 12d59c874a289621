"""Tiny in-process models and a tiny tokenizer, so tests need no network and run in seconds."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

VOCAB = 320
LAYERS = 4
HIDDEN = 32
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "name[The Eagle], eatType[coffee shop], food[French], area[riverside]",
    "The Eagle is a French coffee shop by the riverside.",
    "name[Blue Spice], eatType[pub], priceRange[cheap], near[Café Adriatic]",
    "Blue Spice is a cheap pub near Café Adriatic.",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789",
]


def make_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE with ChatML-style special tokens; pad = eos, as in SmolLM2."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


# Every architecture the tests run on, with what makes it differ: a logits scaling (granite:
# logits_scaling, cohere: logit_scale, falcon_h1: lm_head_multiplier), soft-capping (gemma2),
# another block path (opt: model.decoder.layers; gpt2, bloom, falcon: transformer.h; gpt_neox),
# parallel attention (falcon, cohere), hybrid attention + Mamba blocks (falcon_h1).
EXTRA = {
    "gpt2": {"n_positions": 256, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "llama": {},
    "qwen2": {},
    "gpt_neox": {"hidden_dropout": 0.0, "attention_dropout": 0.0},
    "granite": {"logits_scaling": 8.0, "residual_multiplier": 0.5, "embedding_multiplier": 4.0, "attention_multiplier": 0.25},
    "mistral": {},
    "phi3": {},
    "gemma2": {"final_logit_softcapping": 5.0, "head_dim": 8},
    "cohere": {"logit_scale": 0.5},
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": HIDDEN, "dropout": 0.0},
    "falcon": {},
}


def make_model(arch: str, seed: int = 0, layers: int = LAYERS):
    """A randomly initialised tiny causal LM of the given architecture, frozen and in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    common = {
        "num_hidden_layers": layers,
        "hidden_size": HIDDEN,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    if arch == "gpt2":
        common["num_attention_heads"] = 2
    config = AutoConfig.for_model(arch, **(common | EXTRA[arch]))
    model = AutoModelForCausalLM.from_config(config)
    model.requires_grad_(False)
    model.eval()
    return model


ARCHS = tuple(EXTRA)


def save_tiny(path, arch: str = "llama") -> str:
    """Write a tiny model and tokenizer folder that `--model PATH` loads."""
    make_model(arch).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)
