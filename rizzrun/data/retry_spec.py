"""Config rules of `rizzrun.data.retry.ArithmeticRetrySFT`, with no torch import (see rizzrun.config.specs):
option ranges, and packing concat (a correction is two documents joined by EOS)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "ArithmeticRetrySFT": {
        "n_train": ((">=", 1),), "n_val": ((">=", 0),), "digits": ((">=", 1), ("<=", 18)),
        "val_fraction": ((">", 0), ("<", 1)), "problem_seed": ((">=", 0),), "retry_rate": ((">=", 0), ("<=", 1)),
        "keep_rate": ((">=", 0), ("<=", 1)),
    },
}


def check(node: dict, path: str) -> list[str]:
    packing = node.get("packing", "concat")
    if readable(packing) and packing != "concat":
        return [message(f"{path}.packing={show(packing)}", "a correction pair is two documents joined by EOS",
                        f"allowed: {path}.packing=concat")]
    rate, keep = node.get("retry_rate", 0.5), node.get("keep_rate", 0.0)
    numbers = all(readable(v) and isinstance(v, (int, float)) and not isinstance(v, bool) for v in (rate, keep))
    if numbers and rate + keep > 1:
        return [message(f"{path}.keep_rate={show(keep)}", f"retry_rate + keep_rate = {rate + keep:g} > 1",
                        f"allowed: {path}.keep_rate <= {1 - rate:g}")]
    return []
