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
    chunk = node.get("chunk_size")
    if node.get("impl") == "triton" and isinstance(chunk, int) and chunk >= 1 and (chunk < 16 or chunk & (chunk - 1)):
        # The Triton kernels tile by chunk_size (tl.dot needs tiles of 16 or more, powers of 2).
        out.append(message(f"{path}.chunk_size={chunk}", "the Triton kernel (impl=triton) "
                           "needs a power of 2 >= 16", "allowed: 16, 32, 64, 128, ...; or impl=torch"))
    return out
