"""Config rules of `rizzrun.attention.hybrid.hybrid`, with no torch import (see rizzrun.config.specs)."""

from __future__ import annotations

from rizzrun.config.errors import message, show

RANGES = {"hybrid": {"softmax_every": ((">=", 1),)}}


def check_with_model(node: dict, path: str, dims: dict) -> list[str]:
    every, n_layer = node.get("softmax_every"), dims.get("n_layer")
    if isinstance(every, int) and not isinstance(every, bool) and isinstance(n_layer, int) and every > n_layer:
        return [message(f"{path}.softmax_every={show(every)}", f"no layer of the model's {n_layer} would be softmax "
                        f"attention (layer i is softmax iff (i + 1) % softmax_every == 0)",
                        f"allowed: 1 <= softmax_every <= model.n_layer={n_layer}")]
    return []
