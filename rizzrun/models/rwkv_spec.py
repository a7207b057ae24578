"""Config rules of `rizzrun.models.rwkv.RWKV`, with no torch import (see rizzrun.config.specs).

A size preset with dimension overrides is checked by `rwkv_sizes.rwkv_dim_errors` (what the
constructor runs too); `init` and `wkv_impl` against their allowed values. RWKV has no attention:
the runner passes the `attention` group only to a model whose target takes it
(rizzrun.runner.build), and the generic binding rejects `model.attention` here.
"""

from __future__ import annotations

import re

from rizzrun.config.errors import listing, message, show, suggest
from rizzrun.config.specs import Length, readable
from rizzrun.kernels.wkv import IMPLS
from rizzrun.models.rwkv_sizes import RWKV_DIM_KEYS, RWKV_INITS, RWKV_SIZES, resolve_rwkv_dims, rwkv_dim_errors


def _given_dims(node: dict) -> dict:
    return {k: node[k] for k in RWKV_DIM_KEYS if k in node and readable(node[k])}


def check(node: dict, path: str) -> list[str]:
    out = []
    for key, allowed, default in (("init", RWKV_INITS, "code"), ("wkv_impl", IMPLS, "auto")):
        value = node.get(key, default)
        if readable(value) and value not in allowed:
            out.append(message(f"{path}.{key}={show(value)}", f"not an RWKV {key}", suggest(str(value), allowed),
                               f"allowed: {listing(allowed)}"))
    size = node.get("size", "tiny")
    if not readable(size):
        return out
    if not isinstance(size, str) or size not in RWKV_SIZES:
        return out + [message(f"{path}.size={show(size)}", "not an RWKV size", suggest(str(size), RWKV_SIZES),
                              f"allowed: {listing(RWKV_SIZES)}")]
    for text in rwkv_dim_errors({"size": size, **_given_dims(node)}):
        match = re.match(r"(\w+)=(\S+) (.*)", text)
        out.append(f"{path}.{match.group(1)}={match.group(2)}: {match.group(3)}" if match else f"{path}: {text}")
    return out


def max_seq_len(node: dict) -> Length | None:
    """The longest sequence: `max_seq_len` if set, else the size preset's."""
    given = node.get("max_seq_len")
    if isinstance(given, int) and not isinstance(given, bool):
        return Length(given, "model.max_seq_len", "raise model.max_seq_len")
    size = node.get("size", "tiny")
    if not isinstance(size, str) or size not in RWKV_SIZES:
        return None
    return Length(RWKV_SIZES[size]["max_seq_len"], f"model.size={size}", "raise model.max_seq_len")


def vocab_size(node: dict) -> None:
    """The runner gives the tokenizer's vocabulary (no pretrained folders for RWKV)."""
    return None


def dims(node: dict) -> dict | None:
    """The dimensions the node builds with (d_ff filled in); None when invalid (`check` says why)."""
    try:
        return resolve_rwkv_dims(node.get("size", "tiny"), **{k: node.get(k) for k in RWKV_DIM_KEYS if k in node})
    except Exception:  # noqa: BLE001 - invalid dims are `rizzrun validate`'s business
        return None
