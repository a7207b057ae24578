"""Config rules of `rizzrun.objectives.score.SCoRe`, with no torch import (see rizzrun.config.specs).

Besides SCoRe's own arguments, the objective node holds what the runner reads: `models.reference`
(the base model for the KL: init | a run or Hugging Face folder | null), `precompute` (must stay [])
and `rewards` (null = the data's own)."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "SCoRe": {"alpha": ((">=", 0),), "beta_1": ((">=", 0),), "beta_2": ((">=", 0),), "num_generations": ((">=", 2),),
              "num_iterations": ((">=", 1),)},
}


def _number(value) -> bool:
    return readable(value) and isinstance(value, (int, float)) and not isinstance(value, bool)


def check(node: dict, path: str) -> list[str]:
    """stage is 1 or 2; a reference model whenever a KL coefficient of the stage is > 0."""
    out = []
    stage = node.get("stage", 2)
    if readable(stage) and (isinstance(stage, bool) or stage not in (1, 2)):
        out.append(message(f"{path}.stage={show(stage)}", "SCoRe has two stages", f"allowed: {path}.stage=1 (Stage I) "
                           f"or {path}.stage=2 (Stage II; naive multi-turn RL: {path}.alpha=0)"))
        return out
    beta_1, beta_2 = node.get("beta_1", 0.01), node.get("beta_2", 0.1)
    used = [("beta_2", beta_2)] if stage == 1 else []
    if stage == 2 or node.get("stage1_turn2_kl", True) is True:
        used.append(("beta_1", beta_1))
    models = node.get("models")
    reference = (models if isinstance(models, dict) else {}).get("reference")
    for key, beta in used:
        if _number(beta) and beta > 0 and readable(reference) and reference is None:
            out.append(message(f"{path}.models.reference=null", f"SCoRe stage {show(stage)} with {key}={show(beta)} "
                               "needs the base model for its KL", f"allowed: {path}.models.reference=init or a run "
                               f"or Hugging Face folder, or {path}.{key}=0"))
            break
    return out
