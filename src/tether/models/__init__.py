"""One model-loading path: ``load(spec)`` for 'default', HF dirs/ids, GGUF files and LoRA adapters."""

from tether.models.cache import cache_root
from tether.models.load import DEFAULT_SPEC, GEMMA_SPEC, LoadedModel, convert_gguf, default_gguf_path, load

__all__ = [
    "DEFAULT_SPEC",
    "GEMMA_SPEC",
    "LoadedModel",
    "cache_root",
    "convert_gguf",
    "default_gguf_path",
    "load",
]
