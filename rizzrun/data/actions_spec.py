"""Config rules of `rizzrun.data.actions.ActionChunks`, with no torch import (see
rizzrun.config.specs): option ranges, and a chunk that fits in a trajectory."""

from __future__ import annotations

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {
    "ActionChunks": {
        "n_train": ((">=", 1),),
        "n_val": ((">=", 0),),
        "dims": ((">=", 1),),
        "hz": ((">", 0),),
        "seconds": ((">", 0),),
        "chunk_seconds": ((">", 0),),
        "noise": ((">=", 0),),
        "trajectory_seed": ((">=", 0),),
        "scale": ((">", 0),),
        "max_range": ((">=", 1),),
        "seq_len": ((">=", 1),),
        "batch_size": ((">=", 1),),
    },
}


def _number(value) -> bool:
    return readable(value) and isinstance(value, (int, float)) and not isinstance(value, bool)


def check(node: dict, path: str) -> list[str]:
    hz, seconds, chunk = node.get("hz"), node.get("seconds"), node.get("chunk_seconds")
    if not all(_number(v) and v > 0 for v in (hz, seconds, chunk)):
        return []  # reported by the ranges
    steps, horizon = round(seconds * hz), round(chunk * hz)
    if 1 <= horizon <= steps:
        return []
    return [message(f"{path}.chunk_seconds={chunk}", f"a chunk of round(chunk_seconds * hz) = {horizon} steps must "
                    f"hold at least one step and fit in a trajectory of round(seconds * hz) = {steps} steps",
                    f"set {path}.chunk_seconds between {1 / hz:g} and {path}.seconds={seconds}")]
