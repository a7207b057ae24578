"""Config rules of `rizzrun.attention.selective.SelectiveAttention`, with no torch import (see rizzrun.config.specs)."""

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "SelectiveAttention": {"budget": ((">=", 1),), "selection_head": ((">=", 0),)},
}


def check_with_model(node: dict, path: str, dims: dict) -> list[str]:
    """The selection head must be one of the model's heads."""
    head, n_head = node.get("selection_head", 0), dims.get("n_head")
    if not readable(head) or not isinstance(head, int) or not isinstance(n_head, int) or head < n_head:
        return []
    return [message(f"{path}.selection_head={show(head)}", f"the model has n_head={n_head} heads",
                    f"allowed: 0 <= {path}.selection_head < {n_head}")]
