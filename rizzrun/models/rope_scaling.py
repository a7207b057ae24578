"""Llama 3.1's RoPE frequency scaling settings (the llama3 "rope_scaling", arXiv 2407.21783):
checked and put in one canonical form, with no torch import.

`rizzrun.models.llama` (the model), `rizzrun.models.hf_llama` (config.json) and the config
validator all use these functions, so the three accept exactly the same settings. The scaling
itself (the frequencies) is `rizzrun.models.llama.rope_inv_freq`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# The keys of Llama 3.1's `rope_scaling` besides `rope_type`.
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
SUPPORTED_ROPE_TYPES = ("default", "llama3")


def show(value: Any) -> str:
    """A config value as JSON spells it (true, null, 8.0, "llama3"): how config.json and these
    messages write values."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rope_scaling_problems(value: Any, key: str = "rope_scaling") -> list[str]:
    """Problems with a `rope_scaling` argument of `Llama` ([] when it is usable).

    Valid: None (plain RoPE), {"rope_type": "default"} (the same), or Llama 3's
    {"rope_type": "llama3", "factor": > 0, "low_freq_factor": > 0,
     "high_freq_factor": > low_freq_factor, "original_max_position_embeddings": int > 0}.
    """
    if value is None:
        return []
    if not isinstance(value, Mapping):  # a dict, or an OmegaConf DictConfig from the yaml
        return [f"{key}={show(value)} must be null or a mapping "
                f"{{rope_type: llama3, {', '.join(LLAMA3_ROPE_KEYS)}}}"]
    rope_type = value.get("rope_type", value.get("type"))
    if rope_type == "default":
        extra = sorted(set(value) - {"rope_type", "type"})
        return [f"{key}.{k}={show(value[k])}: rope_type 'default' takes no settings; "
                f"remove it or use rope_type 'llama3'" for k in extra]
    if rope_type != "llama3":
        return [f"{key}.rope_type={show(rope_type)} is not supported; supported: "
                f"{', '.join(show(t) for t in SUPPORTED_ROPE_TYPES)} "
                "('llama3': Llama 3.1 frequency scaling, arXiv 2407.21783)"]
    out = []
    unknown = sorted(set(value) - {"rope_type", "type", *LLAMA3_ROPE_KEYS})
    if unknown:
        out.append(f"{key} has unknown key(s) {', '.join(unknown)}; llama3 scaling takes: "
                   f"rope_type, {', '.join(LLAMA3_ROPE_KEYS)}")
    missing = [k for k in LLAMA3_ROPE_KEYS if value.get(k) is None]
    if missing:
        out.append(f"{key} (rope_type 'llama3') is missing {', '.join(missing)}; it needs "
                   f"{', '.join(LLAMA3_ROPE_KEYS)}")
    for k in ("factor", "low_freq_factor", "high_freq_factor"):
        v = value.get(k)
        if v is not None and not (is_number(v) and v > 0):
            out.append(f"{key}.{k}={show(v)} must be a positive number")
    low, high = value.get("low_freq_factor"), value.get("high_freq_factor")
    if is_number(low) and is_number(high) and 0 < low and 0 < high <= low:
        out.append(f"{key}.high_freq_factor={show(high)} must be greater than "
                   f"low_freq_factor={show(low)} (the two bound the smoothly scaled band)")
    orig = value.get("original_max_position_embeddings")
    if orig is not None and not (is_int(orig) and orig > 0):
        out.append(f"{key}.original_max_position_embeddings={show(orig)} must be a positive integer")
    return out


def normalize_rope_scaling(value: Any, key: str = "rope_scaling") -> dict | None:
    """`value` checked and in canonical form: None for plain RoPE, else
    {"rope_type": "llama3", "factor": float, "low_freq_factor": float, "high_freq_factor": float,
    "original_max_position_embeddings": int}. Raises ValueError naming the bad key and value."""
    problems = rope_scaling_problems(value, key)
    if problems:
        raise ValueError("; ".join(problems))
    if value is None or value.get("rope_type", value.get("type")) == "default":
        return None
    return {"rope_type": "llama3", **{k: float(value[k]) for k in LLAMA3_ROPE_KEYS[:3]},
            "original_max_position_embeddings": int(value["original_max_position_embeddings"])}
