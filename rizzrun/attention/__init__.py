"""Token mixers: the part of each block that mixes information across positions.

A mixer is the whole token-mixing sub-layer of one block: its projections, its position encoding,
its kernel and its own decoding state. The model builds one per layer from a factory (the
`attention` config group, a Hydra partial) and never looks inside (docs/contracts.md):

    mixer = factory(d_model=C, n_head=H, n_kv_head=Hkv, head_dim=D, layer_idx=i, n_layer=L)
    y = mixer(x, positions, state=None)      x (B, T, C) -> y (B, T, C)
    state = mixer.init_state(batch_size, max_len, device, dtype)   # its decoding state, per layer
    mixer.reset_parameters(std, out_std)     # init: out_std for the projection into the residual

`positions` (`rizzrun.attention.mixer.Positions`) says where the T new tokens sit: `start` (the
tokens already in `state`), the RoPE tables of their positions and the key padding mask of the
row. With `state`, the mixer appends the new tokens to it in place (prefill and decoding alike).
Softmax mixers keep a static key/value buffer; linear and recurrent ones a fixed-size state;
the model's decoding cache is the list of the layers' states, so mixed stacks decode as one.

This package imports no torch at import time; the mixers load on first access.
"""

_MIXERS = {
    "SoftmaxAttention": "rizzrun.attention.softmax",
    "SDPAttention": "rizzrun.attention.sdpa",
    "NaiveAttention": "rizzrun.attention.naive",
    "Positions": "rizzrun.attention.mixer",
    "DecodingCache": "rizzrun.attention.mixer",
    "LightningAttention": "rizzrun.attention.lightning",
    "FAMAttention": "rizzrun.attention.fam",
    "SSMaxAttention": "rizzrun.attention.ssmax",
    "SelectiveAttention": "rizzrun.attention.selective",
    "ThinKAttention": "rizzrun.attention.think",
}


def __getattr__(name):
    if name in _MIXERS:
        import importlib

        return getattr(importlib.import_module(_MIXERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_heads(n_head, n_kv_head, head_dim) -> None:
    """Raise ValueError unless the head counts form valid (grouped-query) attention."""
    for name, value in (("n_head", n_head), ("n_kv_head", n_kv_head), ("head_dim", head_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if n_head % n_kv_head:
        raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}; allowed n_kv_head: "
                         + ", ".join(str(h) for h in range(1, n_head + 1) if n_head % h == 0))


def check_qkv(q, k, v, key_padding_mask=None) -> None:
    """Raise ValueError unless q (B, H, Tq, D), k, v (B, Hkv, Tk, D) and the mask (B, Tk) bool fit
    the softmax kernels (`rizzrun.attention.sdpa.sdpa_attention`, `naive.naive_attention`)."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q, k have shapes {tuple(q.shape)}, {tuple(k.shape)}; expected (B, heads, T, head_dim)")
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    want_kv = (B, Hkv, Tk, D)
    if tuple(k.shape) != want_kv or tuple(v.shape) != want_kv:
        raise ValueError(f"k, v have shapes {tuple(k.shape)}, {tuple(v.shape)}; expected (B, n_kv_head, Tk, "
                         f"head_dim) = {want_kv} for q of shape {tuple(q.shape)}")
    if H % Hkv:
        raise ValueError(f"q has {H} heads, k and v {Hkv}: the key/value heads must divide the query heads")
    if Tk < Tq:
        raise ValueError(f"keys Tk={Tk} < queries Tq={Tq}; allowed Tk >= Tq (queries are the "
                         "last Tq positions of the keys)")
    if key_padding_mask is not None and (tuple(key_padding_mask.shape) != (B, Tk)
                                         or str(key_padding_mask.dtype) != "torch.bool"):
        raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)} and dtype "
                         f"{key_padding_mask.dtype}; expected bool of shape (B, Tk) = {(B, Tk)}")
