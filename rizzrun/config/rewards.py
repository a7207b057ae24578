"""The validator's rules for the top-level `rewards` (torch-free), which the runner reads
(rizzrun.runner.on_policy.build_rewards): only an on-policy (`prompts`) objective scores
completions; each entry NAME is a component node (its target's signature checked as any
component's, `_partial_: true` for a function) with an optional finite `weight`."""

from __future__ import annotations

import math
from typing import Callable

from rizzrun.config.errors import message, show

WEIGHT = "weight"


def check_rewards(values: dict, targets: dict, check_node: Callable[[str, dict], list[str]]) -> list[str]:
    """Problems of rewards; `check_node(path, node)` checks one component node (the
    validator's own rules: target, signature, types)."""
    rewards, target = values.get("rewards"), targets.get("objective")
    if not isinstance(rewards, dict):
        return []  # null (the data's own), or a type the top-level schema reports
    out = []
    kind = target.attrs.get("batch_kind") if target is not None else None
    if target is not None and kind != "prompts" and values.get("job") != "sample":
        return [message("rewards", f"{target.target} trains on '{kind}' batches: it scores no completions",
                        "drop rewards (only an on-policy objective, batch_kind 'prompts', and job=sample score "
                        "completions)")]
    if not rewards:
        return [message("rewards={}", "no reward function",
                        "give rewards.NAME._target_=<a function> (with _partial_: true), or null for "
                        "the data's own rewards")]
    for name, entry in rewards.items():
        path = f"rewards.{name}"
        if not isinstance(entry, dict) or "_target_" not in entry:
            out.append(message(f"{path}={show(entry)}", "expected a reward node with a _target_",
                               f"e.g. {path}._target_=rizzrun.rewards.verifiable.exact_match {path}._partial_=true"))
            continue
        weight = entry.get(WEIGHT, 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            out.append(message(f"{path}.{WEIGHT}={show(weight)}", "expected a finite number (the reward's weight)"))
        out += check_node(path, {k: v for k, v in entry.items() if k != WEIGHT})
    return out
