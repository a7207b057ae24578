"""Config rules of `rizzrun.objectives.smpo.SMPO`, with no torch import (see rizzrun.config.specs)."""

from __future__ import annotations

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {
    "SMPO": {"beta": ((">", 0),), "target_margin": ((">=", 0),), "chosen_sft_ratio": ((">=", 0), ("<=", 1)),
             "max_steps": ((">=", 1),), "lower_clip_percentile": ((">", 0), ("<=", 0.5)),
             "upper_clip_percentile": ((">=", 0.5), ("<", 1)), "min_log_prob": (("<", 0),),
             "min_clip_tokens": ((">=", 1),), "eos_id": ((">=", 0),), "pad_id": ((">=", 0),)},
}


def check(node: dict, path: str) -> list[str]:
    """The pairs of keys that depend on each other (the constructor raises the same)."""
    out = []
    schedule, max_steps = node.get("margin_schedule", True), node.get("max_steps")
    if readable(schedule) and readable(max_steps) and schedule is True and max_steps is None:
        out.append(message(f"{path}.max_steps=null", "margin_schedule=true needs the run's optimizer steps",
                           f"set {path}.max_steps=${{trainer.max_steps}} (the default) or "
                           f"{path}.margin_schedule=false"))
    invert, eos = node.get("eos_invert_rejected", False), node.get("eos_id")
    if readable(invert) and readable(eos) and invert is True and eos is None:
        out.append(message(f"{path}.eos_id=null", "eos_invert_rejected=true needs the EOS token id",
                           f"set {path}.eos_id to the tokenizer's EOS id"))
    return out
