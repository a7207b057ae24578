"""Config rules of `rizzrun.objectives.grpo.GRPO`, with no torch import (see rizzrun.config.specs).

Besides GRPO's own arguments, the objective node holds what the runner reads: `models.reference`
(init | a run or Hugging Face folder | null), `precompute` (must stay []: rollouts are new every
step; the generic check refuses it over prompts data) and `rewards` (null = the data's own reward functions)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "GRPO": {"num_generations": ((">=", 2),), "num_iterations": ((">=", 1),), "beta": ((">=", 0),),
             "epsilon": ((">=", 0), ("<", 1)), "epsilon_high": ((">=", 0),), "delta": ((">", 1),),
             "max_completion_length": ((">=", 1),)},
}


def _number(value) -> bool:
    return readable(value) and isinstance(value, (int, float)) and not isinstance(value, bool)


def check(node: dict, path: str) -> list[str]:
    """Rules between keys: a reference model when beta > 0, delta above the upper clip bound (the
    constructor and prepare raise the same). `precompute` over prompts data is refused by the
    generic extra-model check (rizzrun.config.extra_models)."""
    out = []
    beta = node.get("beta", 0.04)
    models = node.get("models")
    models = models if isinstance(models, dict) else {}
    reference = models.get("reference")
    if _number(beta) and beta > 0 and readable(reference) and reference is None:
        out.append(message(f"{path}.models.reference=null", f"GRPO with beta={show(beta)} needs a reference model "
                           "(the k3 KL term)", f"allowed: {path}.models.reference=init (the policy's starting weights) "
                           f"or a run or Hugging Face folder, or {path}.beta=0"))
    eps, high, delta = node.get("epsilon", 0.2), node.get("epsilon_high"), node.get("delta")
    if high is None:
        high = eps
    if _number(high) and _number(delta) and not delta > 1 + high:
        out.append(message(f"{path}.delta={show(delta)}", f"the two-sided cap must lie above the upper clip bound "
                           f"1 + epsilon_high = {1 + high:g}", f"allowed: delta > {1 + high:g}, or null (off)"))
    return out
