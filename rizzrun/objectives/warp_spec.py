"""Config rules of `rizzrun.objectives.warp.WARP`, with no torch import (see rizzrun.config.specs).

Besides WARP's own arguments, the objective node holds what the runner reads: `models.reference`
(init | a run or Hugging Face folder | null: only the kl_init metric reads it), `precompute` (must
stay []) and `rewards` (null = the data's own reward functions)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "WARP": {"num_generations": ((">=", 1),), "num_iterations": ((">=", 1),), "beta": ((">=", 0),),
             "mu": ((">=", 0), ("<=", 1))},
}


def check(node: dict, path: str) -> list[str]:
    """The group baseline needs groups: num_generations >= 2 unless baseline is none (the
    constructor raises the same)."""
    out = []
    baseline, g = node.get("baseline", "group"), node.get("num_generations", 8)
    if (readable(baseline) and readable(g) and baseline in ("group", "loo") and isinstance(g, int)
            and not isinstance(g, bool) and g < 2):
        out.append(message(f"{path}.num_generations={show(g)}", f"baseline={baseline} is a mean over the prompt's "
                           "other completions", f"allowed: {path}.num_generations >= 2, or {path}.baseline=none"))
    return out
