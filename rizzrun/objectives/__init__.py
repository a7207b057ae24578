"""Objectives (group `objective`): `loss, metrics = obj(model, batch, **extra_models)`.

Kept light: names resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BradleyTerry": "rizzrun.objectives.reward_model",
    "BSPO": "rizzrun.objectives.bspo",
    "CrossEntropy": "rizzrun.objectives.ce",
    "DPO": "rizzrun.objectives.dpo",
    "dpo_loss": "rizzrun.objectives.dpo",
    "Precomputed": "rizzrun.objectives.extra",
    "ScalarRewardModel": "rizzrun.objectives.reward_model",
    "SMPO": "rizzrun.objectives.smpo",
    "Goldfish": "rizzrun.objectives.goldfish",
    "GRPO": "rizzrun.objectives.grpo",
    "MiniLLM": "rizzrun.objectives.minillm",
    "SCoRe": "rizzrun.objectives.score",
    "WARP": "rizzrun.objectives.warp",
    "group_advantages": "rizzrun.objectives.grpo",
    "goldfish_mask": "rizzrun.objectives.goldfish",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
