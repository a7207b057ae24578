"""Config rules of `rizzrun.objectives.dpo.DPO`, with no torch import (see rizzrun.config.specs).

Besides DPO's own arguments, the objective node holds what the runner reads: `models.reference`
(init | a run or Hugging Face folder | null) and `precompute` (e.g. [reference])."""

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "DPO": {"beta": ((">", 0),), "gamma": ((">", 0), ("<=", 1)), "label_smoothing": ((">=", 0), ("<=", 0.5)),
            "pad_id": ((">=", 0),), "rpo_alpha": ((">", 0),)},
}


def check(node: dict, path: str) -> list[str]:
    """Rules between keys: label smoothing per loss type, and a reference model exactly when
    reference_free is false."""
    out = []
    loss_type, eps = node.get("loss_type", "sigmoid"), node.get("label_smoothing", 0.0)
    if readable(loss_type) and readable(eps) and isinstance(eps, (int, float)) and not isinstance(eps, bool):
        if loss_type == "robust" and eps >= 0.5:
            out.append(message(f"{path}.label_smoothing={show(eps)}", "robust DPO divides by 1 - 2 * label_smoothing",
                               f"allowed with {path}.loss_type='robust': 0 <= label_smoothing < 0.5"))
        if loss_type in ("hinge", "ipo") and eps != 0:
            out.append(message(f"{path}.label_smoothing={show(eps)}", f"has no effect with loss_type={show(loss_type)}",
                               "allowed: 0 (label smoothing applies to 'sigmoid' (cDPO) and 'robust')"))
    free = node.get("reference_free", False)
    models = node.get("models")
    models = models if isinstance(models, dict) else {}
    reference = models.get("reference")
    precompute = node.get("precompute")
    precompute = precompute if isinstance(precompute, list) else []
    if not readable(free) or not isinstance(free, bool) or not readable(reference):
        return out
    if free:
        if reference is not None:
            out.append(message(f"{path}.models.reference={show(reference)}", "reference_free=true uses no reference",
                               f"set {path}.models.reference=null, or {path}.reference_free=false"))
        if "reference" in precompute:
            out.append(message(f"{path}.precompute={show(precompute)}", "reference_free=true has no reference to "
                               "precompute", f"remove 'reference' from {path}.precompute"))
    elif reference is None:
        out.append(message(f"{path}.models.reference=null", "DPO needs a reference model (reference_free=false)",
                           f"allowed: {path}.models.reference=init (the policy's starting weights) or a run or "
                           f"Hugging Face folder, or {path}.reference_free=true"))
    return out
