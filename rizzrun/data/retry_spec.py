"""Config rules of `rizzrun.data.retry.ArithmeticRetrySFT`, with no torch import (see rizzrun.config.specs):
option ranges, and packing concat (a correction is two documents joined by EOS)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "ArithmeticRetrySFT": {
        "n_train": ((">=", 1),), "n_val": ((">=", 0),), "digits": ((">=", 1), ("<=", 18)),
        "val_fraction": ((">", 0), ("<", 1)), "problem_seed": ((">=", 0),), "retry_rate": ((">=", 0), ("<=", 1)),
    },
}


def check(node: dict, path: str) -> list[str]:
    packing = node.get("packing", "concat")
    if readable(packing) and packing != "concat":
        return [message(f"{path}.packing={show(packing)}", "a correction pair is two documents joined by EOS",
                        f"allowed: {path}.packing=concat")]
    return []
