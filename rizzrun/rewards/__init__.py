"""Rewards (issue 16: on-policy training): functions that score completions, and their weighted sum.

A reward function has the signature of TRL's GRPOTrainer reward functions, so the same callables
serve both:

    fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]

one value per (prompt, completion) pair; `columns` are the data's per-row fields (e.g. `answer`),
repeated per completion; None means "does not apply to this row" (not zero). `RewardSet` runs
several with weights and sums them as TRL does (`rizzrun.rewards.combine`). Built-in functions
for verifiable tasks are in `rizzrun.rewards.verifiable`, partial credit for the built-in string
tasks in `rizzrun.rewards.tasks`, for numeric answers in `rizzrun.rewards.shaping`; a teacher
model's log-probabilities in `rizzrun.rewards.teacher`, a trained reward model's score in
`rizzrun.rewards.model`.

Imported lazily: importing this package does not import torch.
"""

import importlib

_EXPORTS = {
    "RewardSet": "rizzrun.rewards.combine",
    "RewardScores": "rizzrun.rewards.combine",
    "nanstd": "rizzrun.rewards.combine",
    "char_accuracy": "rizzrun.rewards.tasks",
    "numeric_closeness": "rizzrun.rewards.shaping",
    "exact_match": "rizzrun.rewards.verifiable",
    "format_match": "rizzrun.rewards.verifiable",
    "leading_integer_match": "rizzrun.rewards.verifiable",
    "TeacherLogProb": "rizzrun.rewards.teacher",
    "RunRewardModel": "rizzrun.rewards.model",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
