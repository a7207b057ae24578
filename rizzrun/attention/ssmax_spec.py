"""Config rules of `rizzrun.attention.ssmax.SSMaxAttention`, with no torch import (see rizzrun.config.specs)."""

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

RANGES = {
    "SSMaxAttention": {"s_init": ((">", 0),), "train_len": ((">=", 2),)},
}


def check_with_model(node: dict, path: str, dims: dict) -> list[str]:
    """train_len (which sets s_init = 1 / log(train_len) when s_init is null) must be a length the
    model takes: SSMax equals the plain softmax there."""
    train_len, limit = node.get("train_len"), dims.get("max_seq_len")
    if node.get("s_init") is not None or not readable(train_len) or not isinstance(train_len, int):
        return []
    if isinstance(limit, int) and train_len > limit:
        return [message(f"{path}.train_len={show(train_len)}", f"longer than the model's max_seq_len={limit}",
                        f"allowed: {path}.train_len <= {limit} (the training length), or set {path}.s_init")]
    return []
