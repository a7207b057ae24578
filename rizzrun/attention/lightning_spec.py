"""Config rules of `rizzrun.attention.lightning.LightningAttention`, with no torch import (see
rizzrun.config.specs)."""

from __future__ import annotations

from rizzrun.config.errors import listing, message, show, suggest
from rizzrun.config.specs import readable

SCHEDULES = ("alibi_tnl", "fla_literal")
IMPLS = ("auto", "torch", "triton")

RANGES = {"LightningAttention": {"chunk_size": ((">=", 1),), "norm_eps": ((">", 0),)}}


def check(node: dict, path: str) -> list[str]:
    out = []
    for key, allowed in (("decay_schedule", SCHEDULES), ("impl", IMPLS)):
        value = node.get(key)
        if key in node and readable(value) and value not in allowed:
            out.append(message(f"{path}.{key}={show(value)}", f"not a lightning {key}",
                               suggest(str(value), allowed), f"allowed: {listing(allowed)}"))
    return out
