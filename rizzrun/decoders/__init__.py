"""Decoders (group `decoder`): Greedy, Sample, and the logits processors they use.

Kept light: names resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Greedy": "rizzrun.decoders.greedy",
    "decode_loop": "rizzrun.decoders.greedy",
    "left_pad": "rizzrun.decoders.greedy",
    "Sample": "rizzrun.decoders.sample",
    "apply_repetition_penalty": "rizzrun.decoders.processors",
    "min_new_tokens_filter": "rizzrun.decoders.processors",
    "apply_temperature": "rizzrun.decoders.processors",
    "top_k_filter": "rizzrun.decoders.processors",
    "top_p_filter": "rizzrun.decoders.processors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
