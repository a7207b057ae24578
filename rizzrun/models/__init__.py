"""Model families. `Llama` and friends load on first access, so importing this package (or the
torch-free `rizzrun.models.llama_sizes`) does not import torch."""

_LAZY = {"Llama": "rizzrun.models.llama", "LlamaConfig": "rizzrun.models.llama", "RWKV": "rizzrun.models.rwkv",
         "DecodingCache": "rizzrun.attention.mixer"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
