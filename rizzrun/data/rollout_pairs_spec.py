"""Config rules of `rizzrun.data.rollout_pairs.RolloutPairs`, with no torch import (see
rizzrun.config.specs): option ranges, and a path that is a sample run's folder."""

from __future__ import annotations

from pathlib import Path

from rizzrun.config.errors import message
from rizzrun.config.specs import readable
from rizzrun.data.pairs_spec import PAIR_RANGES, check_lengths

RANGES = {"RolloutPairs": {**PAIR_RANGES, "min_gap": ((">", 0),), "per_prompt": ((">=", 1),)}}


def check(node: dict, path: str) -> list[str]:
    out = check_lengths(node, path)
    folder = node.get("path")
    if readable(folder):
        rollouts = Path(str(folder)).expanduser() / "rollouts" / "train.jsonl"
        if not rollouts.is_file():
            why = "no such folder" if not Path(str(folder)).expanduser().exists() else "no rollouts/train.jsonl in it"
            out.append(message(f"{path}.path={folder}", why,
                               "give the folder of a sample run (job=sample) that sampled the train split"))
    return out
