"""solo: parameter-efficient fine-tuning of causal language models with Solo Connection.

The engine is importable as a library::

    from solo_cli import load_model, SoloAdapter, AdapterConfig, attach, save_adapter, load_adapter
"""

__version__ = "0.1.0"

from .adapter import AdapterConfig, AttachedAdapter, SoloAdapter, SoloConnection, attach  # noqa: E402
from .adapter_file import AdapterInfo, load_adapter, read_info, save_adapter  # noqa: E402
from .blocks import find_blocks, fingerprint  # noqa: E402
from .errors import SoloError  # noqa: E402
from .models import load_model  # noqa: E402
from .topology import parse_connections  # noqa: E402

__all__ = [
    "AdapterConfig",
    "AdapterInfo",
    "AttachedAdapter",
    "SoloAdapter",
    "SoloConnection",
    "SoloError",
    "attach",
    "find_blocks",
    "fingerprint",
    "load_adapter",
    "load_model",
    "parse_connections",
    "read_info",
    "save_adapter",
    "__version__",
]
