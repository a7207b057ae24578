"""Decoders (group `decoder`): the shared loop and `Decoder` base, Greedy, Sample, Typical, ThinK, the
methods of the papers, and the logits processors they use.

Kept light: names resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Decoder": "rizzrun.decoders.base",
    "ModelStepper": "rizzrun.decoders.loop",
    "decode_loop": "rizzrun.decoders.loop",
    "left_pad": "rizzrun.decoders.loop",
    "Greedy": "rizzrun.decoders.greedy",
    "Sample": "rizzrun.decoders.sample",
    "Typical": "rizzrun.decoders.typical",
    "PrincipleGuided": "rizzrun.decoders.principle_guided",
    "ThinK": "rizzrun.decoders.think",
    "PMPD": "rizzrun.decoders.pmpd",
    "DynamicTemperature": "rizzrun.decoders.dynamic_temperature",
    "apply_repetition_penalty": "rizzrun.decoders.processors",
    "min_new_tokens_filter": "rizzrun.decoders.processors",
    "apply_temperature": "rizzrun.decoders.processors",
    "top_k_filter": "rizzrun.decoders.processors",
    "top_p_filter": "rizzrun.decoders.processors",
    "typical_filter": "rizzrun.decoders.processors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
