"""Config rules of `rizzrun.data.arithmetic` (ArithmeticSFT, ArithmeticPairs, ArithmeticPrompts), with no torch
import (see rizzrun.config.specs): option ranges, max_prompt_length < max_length, and an
artifact text whenever artifact_rate > 0."""

from __future__ import annotations

from rizzrun.config.errors import message
from rizzrun.data.pairs_spec import PAIR_RANGES, check_lengths

_PROBLEMS = {
    "n_train": ((">=", 1),),
    "n_val": ((">=", 0),),
    "digits": ((">=", 1), ("<=", 18)),
    "val_fraction": ((">", 0), ("<", 1)),
    "problem_seed": ((">=", 0),),
}
RANGES = {
    "ArithmeticSFT": dict(_PROBLEMS),
    "ArithmeticPairs": {**_PROBLEMS, **PAIR_RANGES, "artifact_rate": ((">=", 0), ("<=", 1))},
    "ArithmeticPrompts": {**_PROBLEMS, "batch_size": ((">=", 1),), "max_prompt_length": ((">=", 1),)},
}


def check(node: dict, path: str) -> list[str]:
    out = check_lengths(node, path)
    rate, artifact = node.get("artifact_rate"), node.get("artifact")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 and artifact == "":
        out.append(message(f"{path}.artifact_rate={rate}", f"needs an artifact text to append ({path}.artifact is "
                           f"empty)", f"set {path}.artifact=' Sure!' or {path}.artifact_rate=0"))
    return out
