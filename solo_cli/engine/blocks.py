"""Finding the decoder blocks of a Hugging Face causal LM, and describing its architecture."""

from __future__ import annotations

from torch import nn

from ..errors import UsageError
from .fingerprint import ArchFingerprint

# Attribute paths of the decoder-block list, most common first: Llama/Qwen2/Mistral/Gemma/Phi3
# (model.layers), GPT-2/GPT-J/Falcon/Bloom (transformer.h), GPT-NeoX/Pythia (gpt_neox.layers),
# OPT (model.decoder.layers), MPT (transformer.blocks).
KNOWN_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.blocks",
    "transformer.layers",
    "model.language_model.layers",
)


def _get(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _largest_uniform_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The generic fallback: the longest ModuleList whose children all share one class."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and (best is None or len(module) > len(best[1])):
                best = (name, module)
    return best


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(path, blocks)`` for the model's stack of decoder blocks.

    Tries the known attribute paths, then the longest uniform ``nn.ModuleList``.
    """
    for path in KNOWN_PATHS:
        module = _get(model, path)
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return path, module
    fallback = _largest_uniform_list(model)
    if fallback is not None:
        return fallback
    raise UsageError(
        f"cannot find the decoder blocks of {type(model).__name__}: tried {', '.join(KNOWN_PATHS)} "
        "and any list of identical modules; solo supports causal LMs built as a stack of blocks"
    )


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    return model.get_input_embeddings().weight.shape[1]


def arch_fingerprint(model: nn.Module) -> ArchFingerprint:
    """The architecture fingerprint (type, blocks, hidden size, vocabulary) of a loaded causal LM."""
    _, blocks = find_blocks(model)
    config = getattr(model, "config", None)
    return ArchFingerprint(
        model_type=str(getattr(config, "model_type", type(model).__name__)),
        num_blocks=len(blocks),
        hidden_size=_hidden_size(model),
        vocab_size=model.get_input_embeddings().weight.shape[0],
    )


fingerprint = arch_fingerprint  # the name before solo 0.3, kept for code that imports it
