"""Config rules of `rizzrun.objectives.reward_model.BradleyTerry`, with no torch import (see
rizzrun.config.specs)."""

from __future__ import annotations

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {
    "BradleyTerry": {"d_model": ((">=", 1),), "center_rewards_coefficient": ((">=", 0),),
                     "filter_below": ((">", 0), ("<=", 1)), "seed": ((">=", 0),), "pad_id": ((">=", 0),),
                     "lm_coef": ((">=", 0),)},
}


def check(node: dict, path: str) -> list[str]:
    """filter_below filters RRM's augmented pairs, so it needs augment=rrm (the constructor raises
    the same). d_model may be null here: the runner sets it from the model."""
    augment, below = node.get("augment", "none"), node.get("filter_below")
    if readable(augment) and readable(below) and below is not None and augment == "none":
        return [message(f"{path}.filter_below={below}", f"filters RRM's augmented pairs, but augment={augment!r}",
                        f"set {path}.augment=rrm or {path}.filter_below=null")]
    return []
