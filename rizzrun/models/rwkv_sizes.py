"""RWKV-4 size presets and dimension checks, with no torch import (the validator and the
constructor of `rizzrun.models.rwkv.RWKV` share them). The vocabulary comes from the tokenizer.

RWKV-4: Peng et al., arXiv 2305.13048. d_ff None means 4 * d_model (the paper's channel mix).
max_seq_len is the longest sequence the runner trains on and decodes to; the model itself is an
RNN and has no position table.
"""

from __future__ import annotations

RWKV_SIZES: dict[str, dict] = {
    # ~1.9 M parameters with a 259-token byte vocabulary: trains on a laptop CPU in minutes.
    "tiny": dict(d_model=192, n_layer=4, d_ff=None, max_seq_len=256),
    "small": dict(d_model=384, n_layer=6, d_ff=None, max_seq_len=512),
    # RWKV-4-Pile-169M's shape (n_embd 768, n_layer 12, ctx_len 1024).
    "169m": dict(d_model=768, n_layer=12, d_ff=None, max_seq_len=1024),
}

RWKV_DIM_KEYS: tuple[str, ...] = ("d_model", "n_layer", "d_ff", "max_seq_len")
RWKV_INITS: tuple[str, ...] = ("code", "paper")


def resolve_rwkv_dims(size: str = "tiny", **overrides) -> dict:
    """The preset `size` with `overrides` (None = take the preset), d_ff filled in (4 * d_model
    when None). Raises ValueError listing every problem at once."""
    unknown = sorted(set(overrides) - set(RWKV_DIM_KEYS))
    if unknown:
        raise ValueError(f"unknown RWKV dimension(s) {', '.join(unknown)}; allowed: {', '.join(RWKV_DIM_KEYS)}")
    errors = rwkv_dim_errors({"size": size, **overrides})
    if errors:
        raise ValueError("invalid RWKV dimensions:\n  " + "\n  ".join(errors))
    return _merge(size, overrides)


def rwkv_dim_errors(dims: dict, seq_len: int | None = None) -> list[str]:
    """Problems with `dims` (a `size` plus overrides, or every key of RWKV_DIM_KEYS); [] = buildable.
    Other keys are ignored, so a whole model config node can be passed."""
    if "size" in dims:
        size = dims["size"]
        if not isinstance(size, str) or size not in RWKV_SIZES:
            return [f"size={size!r} is not an RWKV size; allowed: {', '.join(RWKV_SIZES)}"]
        dims = _merge(size, {k: v for k, v in dims.items() if k in RWKV_DIM_KEYS})
    errors = []
    for k in RWKV_DIM_KEYS:
        v = dims.get(k)
        if k == "d_ff" and v is None:
            continue
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            errors.append(f"{k}={v!r} must be a positive integer")
    if not errors and seq_len is not None and seq_len > dims["max_seq_len"]:
        errors.append(f"seq_len={seq_len} exceeds max_seq_len={dims['max_seq_len']}; "
                      f"allowed seq_len <= {dims['max_seq_len']} (or raise max_seq_len)")
    return errors


def _merge(size: str, overrides: dict) -> dict:
    dims = {**RWKV_SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    if dims.get("d_ff") is None and isinstance(dims.get("d_model"), int):
        dims["d_ff"] = 4 * dims["d_model"]
    return dims
