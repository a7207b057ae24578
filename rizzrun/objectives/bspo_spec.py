"""Config rules of `rizzrun.objectives.bspo.BSPO`, with no torch import (see rizzrun.config.specs).

Besides BSPO's own arguments, the objective node holds what the runner reads: `models.behavior`
(the ScoreLM run folder, or null: no support, plain PPO), `models.reference` (init | a folder |
null; needed when kl_coef > 0) and `precompute` (must stay []: rollouts are new every step)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "BSPO": {"d_model": ((">=", 1),), "num_generations": ((">=", 1),), "num_iterations": ((">=", 1),),
             "gamma": ((">=", 0), ("<=", 1)), "lam": ((">=", 0), ("<=", 1)), "clip": ((">", 0), ("<", 1)),
             "cliprange_value": ((">", 0),), "vf_coef": ((">=", 0),), "kl_coef": ((">=", 0),),
             "epsilon": ((">=", 0), ("<", 1)), "top_p": ((">", 0), ("<=", 1))},
}


def _number(value) -> bool:
    return readable(value) and isinstance(value, (int, float)) and not isinstance(value, bool)


def check(node: dict, path: str) -> list[str]:
    """A reference model when kl_coef > 0; precomputed behaviour or reference outputs are refused
    (the constructor and prepare raise the same)."""
    out = []
    models = node.get("models")
    models = models if isinstance(models, dict) else {}
    kl = node.get("kl_coef", 0.0)
    reference = models.get("reference")
    if _number(kl) and kl > 0 and readable(reference) and reference is None:
        out.append(message(f"{path}.models.reference=null", f"BSPO with kl_coef={show(kl)} needs a reference model "
                           "(the KL penalty in the reward)", f"allowed: {path}.models.reference=init or a run or "
                           f"Hugging Face folder, or {path}.kl_coef=0"))
    pre = node.get("precompute")
    if readable(pre) and isinstance(pre, list) and pre:
        out.append(message(f"{path}.precompute={show(pre)}", "rollouts are new every step: nothing can be "
                           "precomputed", f"allowed: {path}.precompute=[]"))
    return out
