"""Objectives (group `objective`): `loss, metrics = obj(model, batch)`.

Kept light: names resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CrossEntropy": "rizzrun.objectives.ce",
    "Goldfish": "rizzrun.objectives.goldfish",
    "goldfish_mask": "rizzrun.objectives.goldfish",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
