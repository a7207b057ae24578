"""Config rules of `rizzrun.data.rollouts` (RolloutSFT), with no torch import (see rizzrun.config.specs):
option ranges, one threshold at most, and a path that is a sample run's folder."""

from __future__ import annotations

from pathlib import Path

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {"RolloutSFT": {"quantile": ((">=", 0), ("<", 1)), "per_prompt": ((">=", 1),)}}


def sample_run_problems(node: dict, path: str) -> list[str]:
    """`{path}.path` must be a sample run's folder holding rollouts/train.jsonl (job=sample, or a job that
    writes the same files: synthesize)."""
    folder = node.get("path")
    if readable(folder):
        rollouts = Path(str(folder)).expanduser() / "rollouts" / "train.jsonl"
        if not rollouts.is_file():
            why = "no such folder" if not Path(str(folder)).expanduser().exists() else "no rollouts/train.jsonl in it"
            return [message(f"{path}.path={folder}", why,
                            "give the folder of a sample run (job=sample) that sampled the train split")]
    return []


def check(node: dict, path: str) -> list[str]:
    out = []
    if node.get("min_reward") is not None and node.get("quantile") is not None:
        out.append(message(f"{path}.min_reward={node['min_reward']}, {path}.quantile={node['quantile']}",
                           "two thresholds", f"set one of them and {path}.<other>=null"))
    return out + sample_run_problems(node, path)
