"""Llama size presets and dimension checks, with no torch import.

The config validator imports this module to reject impossible shapes in under a second, and the
model constructor (`rizzrun.models.llama.Llama`) uses the same functions, so the two can never
disagree. The vocabulary size is not part of a preset: it comes from the tokenizer.

Shapes follow Llama (arXiv 2302.13971) and Llama 2 (arXiv 2307.09288); `n_kv_head < n_head` is
grouped-query attention (arXiv 2305.13245).
"""

from __future__ import annotations

LLAMA_SIZES: dict[str, dict] = {
    # ~1.6 M parameters with a 259-token byte vocabulary: trains on a laptop CPU in minutes.
    "tiny": dict(d_model=192, n_layer=4, n_head=6, n_kv_head=2, d_ff=512, max_seq_len=256,
                 rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True),
    "small": dict(d_model=384, n_layer=6, n_head=6, n_kv_head=2, d_ff=1024, max_seq_len=512,
                  rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True),
    # TinyLlama-1.1B's shape (1,100,048,384 parameters with a 32000-token vocabulary).
    "1b": dict(d_model=2048, n_layer=22, n_head=32, n_kv_head=4, d_ff=5632, max_seq_len=2048,
               rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False),
    # Llama-2-7B's shape (6,738,415,616 parameters with a 32000-token vocabulary).
    "7b": dict(d_model=4096, n_layer=32, n_head=32, n_kv_head=32, d_ff=11008, max_seq_len=4096,
               rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False),
}

LLAMA_DIM_KEYS: tuple[str, ...] = tuple(LLAMA_SIZES["tiny"])
_INT_KEYS = ("d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "max_seq_len")
_FLOAT_KEYS = ("rope_theta", "norm_eps")


def resolve_llama_dims(size: str = "tiny", **overrides) -> dict:
    """The preset `size` with `overrides` applied; an override of None means "take the preset".

    Returns a dict with exactly the keys of `LLAMA_DIM_KEYS`. Raises ValueError listing every
    problem at once (unknown size, unknown key, impossible dimensions).
    """
    unknown = sorted(set(overrides) - set(LLAMA_DIM_KEYS))
    if unknown:
        raise ValueError(f"unknown Llama dimension(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(LLAMA_DIM_KEYS)}")
    errors = llama_dim_errors({"size": size, **overrides})
    if errors:
        raise ValueError("invalid Llama dimensions:\n  " + "\n  ".join(errors))
    return _merge(size, overrides)


def llama_dim_errors(dims: dict, seq_len: int | None = None) -> list[str]:
    """Human-readable problems with `dims`; an empty list means the shape is buildable.

    `dims` is either fully resolved (every key of `LLAMA_DIM_KEYS`) or holds a `size` plus
    overrides, None meaning "take the preset". Keys outside `LLAMA_DIM_KEYS` and `size` (such as
    `vocab_size` or `_target_`) are ignored, so a whole model config node can be passed.
    `seq_len`, when given, is the training sequence length, which must fit in `max_seq_len`.
    """
    if "size" in dims:
        size = dims["size"]
        if not isinstance(size, str) or size not in LLAMA_SIZES:
            return [f"size={size!r} is not a Llama size; allowed: {', '.join(LLAMA_SIZES)}"]
        dims = _merge(size, {k: v for k, v in dims.items() if k in LLAMA_DIM_KEYS})
    missing = [k for k in LLAMA_DIM_KEYS if dims.get(k) is None]
    if missing:
        return [f"{', '.join(missing)} missing; give a size ({', '.join(LLAMA_SIZES)}) "
                "or every dimension"]

    errors = []
    for k in _INT_KEYS:
        v = dims[k]
        if not (_is_int(v) and v > 0):
            errors.append(f"{k}={v!r} must be a positive integer")
    for k in _FLOAT_KEYS:
        v = dims[k]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            errors.append(f"{k}={v!r} must be a positive number")
    if not isinstance(dims["tie_embeddings"], bool):
        errors.append(f"tie_embeddings={dims['tie_embeddings']!r} must be true or false")
    if errors:
        return errors  # the relations below only make sense between valid integers

    d_model, n_head, n_kv_head = dims["d_model"], dims["n_head"], dims["n_kv_head"]
    # RoPE rotates channel pairs, so every head needs an even head_dim = d_model / n_head.
    good_heads = [h for h in range(1, d_model + 1) if d_model % h == 0 and (d_model // h) % 2 == 0]
    if d_model % n_head:
        errors.append(f"n_head={n_head} must divide d_model={d_model}; "
                      f"allowed n_head: {_join(good_heads)}")
    elif (d_model // n_head) % 2:
        errors.append(f"head_dim = d_model/n_head = {d_model}/{n_head} = {d_model // n_head} "
                      f"must be even for RoPE; allowed n_head: {_join(good_heads)}")
    if n_head % n_kv_head:
        errors.append(f"n_kv_head={n_kv_head} must divide n_head={n_head}; allowed n_kv_head: "
                      f"{_join(h for h in range(1, n_head + 1) if n_head % h == 0)}")
    if seq_len is not None and seq_len > dims["max_seq_len"]:
        errors.append(f"seq_len={seq_len} exceeds max_seq_len={dims['max_seq_len']}; "
                      f"allowed seq_len <= {dims['max_seq_len']} (or raise max_seq_len)")
    return errors


def _merge(size: str, overrides: dict) -> dict:
    return {**LLAMA_SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _join(values) -> str:
    return ", ".join(map(str, values))
