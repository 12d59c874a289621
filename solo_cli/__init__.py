"""solo: parameter-efficient fine-tuning of causal language models with Solo Connection.

The engine is importable as a library::

    from solo_cli import load_model, SoloAdapter, AdapterConfig, attach, save_adapter, load_adapter

Names are imported on first use, so that `solo inspect` and `solo --help` do not pay for torch
and transformers before they need them.
"""

from importlib import import_module

__version__ = "0.2.0"

_EXPORTS = {
    "AdapterConfig": "engine.adapter",
    "AttachedAdapter": "engine.adapter",
    "SoloAdapter": "engine.adapter",
    "SoloConnection": "engine.adapter",
    "attach": "engine.adapter",
    "AdapterInfo": "engine.adapter_header",
    "load_adapter": "engine.adapter_file",
    "read_info": "engine.adapter_header",
    "save_adapter": "engine.adapter_file",
    "find_blocks": "engine.blocks",
    "arch_fingerprint": "engine.blocks",
    "fingerprint": "engine.blocks",  # arch_fingerprint's name before solo 0.3
    "SoloError": "errors",
    "load_model": "engine.models",
    "parse_connections": "engine.topology",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'solo_cli' has no attribute {name!r}")
