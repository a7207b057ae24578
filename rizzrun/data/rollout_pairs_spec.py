"""Config rules of `rizzrun.data.rollout_pairs.RolloutPairs`, with no torch import (see
rizzrun.config.specs): option ranges, and a path that is a sample run's folder."""

from __future__ import annotations

from rizzrun.data.pairs_spec import PAIR_RANGES, check_lengths
from rizzrun.data.rollouts_spec import sample_run_problems

RANGES = {"RolloutPairs": {**PAIR_RANGES, "min_gap": ((">", 0),), "per_prompt": ((">=", 1),)}}


def check(node: dict, path: str) -> list[str]:
    return check_lengths(node, path) + sample_run_problems(node, path)
