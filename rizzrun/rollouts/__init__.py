"""Rollouts for on-policy training (issue 16): prompts -> G completions each with any decoder ->
rewards -> what a `prompts` objective (GRPO, ReST, ...) trains on. docs/contracts.md "Rollouts".

Plain PyTorch, usable without Lightning:

    rollout = sample_rollout(model, decoder, prompt_batch, num_generations=8, eos_id=tok.eos_id)
    score_rollout(rollout, tok, RewardSet([leading_integer_match]), prompts, {"answer": answers})
    batch = objective.prepare(model, rollout); loss, metrics = objective(model, batch)

Imported lazily: importing this package does not import torch.
"""

import importlib

_EXPORTS = {
    "completion_logps": "rizzrun.rollouts.logps",
    "token_logps": "rizzrun.rollouts.logps",
    "sample_rollout": "rizzrun.rollouts.sample",
    "score_rollout": "rizzrun.rollouts.sample",
    "score_rows": "rizzrun.rollouts.sample",
    "completion_texts": "rizzrun.rollouts.sample",
    "rollout_metrics": "rizzrun.rollouts.sample",
    "repeat_blocks": "rizzrun.rollouts.schedule",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
