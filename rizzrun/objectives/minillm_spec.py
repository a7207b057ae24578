"""Config rules of `rizzrun.objectives.minillm.MiniLLM`, with no torch import (see rizzrun.config.specs).

Besides MiniLLM's own arguments, the objective node holds what the runner reads: `models.teacher`
(a run or Hugging Face folder; required), `precompute` (must stay []: rollouts are new every step)
and `rewards` (null = the data's own reward functions, logged only: MiniLLM's reward is the teacher's)."""

from __future__ import annotations

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {
    "MiniLLM": {"num_generations": ((">=", 1),), "num_iterations": ((">=", 1),),
                "teacher_mix_alpha": ((">=", 0), ("<=", 1)), "gamma": ((">=", 0), ("<=", 1)),
                "cliprange": ((">=", 0), ("<", 1)), "reward_scaling": ((">", 0),), "cliprange_reward": ((">", 0),)},
}


def check(node: dict, path: str) -> list[str]:
    """A teacher is required (every variant reads its distribution); it cannot be `init` (the
    student's own starting weights: KL 0, nothing to distil)."""
    out = []
    models = node.get("models")
    models = models if isinstance(models, dict) else {}
    teacher = models.get("teacher")
    if readable(teacher) and teacher is None:
        out.append(message(f"{path}.models.teacher=null", "MiniLLM distils a teacher and needs one",
                           f"allowed: {path}.models.teacher=<a run folder (e.g. ${{run:sft_teacher_tiny}}) or a "
                           "Hugging Face Llama folder> with the student's tokenizer"))
    elif readable(teacher) and teacher == "init":
        out.append(message(f"{path}.models.teacher=init", "the student's own starting weights are no teacher "
                           "(KL 0 at the start)", f"allowed: {path}.models.teacher=<a run folder or a Hugging Face "
                           "Llama folder>"))
    return out
