"""Attention kernels: the token mixer inside each block, built per layer by the model.

Every kernel keeps one contract (docs/contracts.md):

    kernel = Kernel(n_head=H, n_kv_head=Hkv, head_dim=D, layer_idx=i)
    o = kernel(q, k, v, key_padding_mask=None)
        q (B, H, Tq, D); k, v (B, Hkv, Tk, D) with Tk >= Tq; query i sits at absolute
        position Tk - Tq + i; key_padding_mask (B, Tk) bool, True = real token; o (B, H, Tq, D)

This package imports no torch at import time; the kernels load on first access.
"""

_KERNELS = {"SDPAttention": "rizzrun.attention.sdpa", "NaiveAttention": "rizzrun.attention.naive"}


def __getattr__(name):
    if name in _KERNELS:
        import importlib

        return getattr(importlib.import_module(_KERNELS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_heads(n_head, n_kv_head, head_dim) -> None:
    """Raise ValueError unless the head counts form valid (grouped-query) attention."""
    for name, value in (("n_head", n_head), ("n_kv_head", n_kv_head), ("head_dim", head_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if n_head % n_kv_head:
        raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}; allowed n_kv_head: "
                         + ", ".join(str(h) for h in range(1, n_head + 1) if n_head % h == 0))


def check_qkv(kernel, q, k, v, key_padding_mask=None) -> None:
    """Raise ValueError unless q, k, v (and the mask) have the shapes the kernel contract says."""
    B, Tq, Tk = q.shape[0], q.shape[-2], k.shape[-2]
    want_q = (B, kernel.n_head, Tq, kernel.head_dim)
    if tuple(q.shape) != want_q:
        raise ValueError(f"q has shape {tuple(q.shape)}; expected (B, n_head, Tq, head_dim) = {want_q}")
    want_kv = (B, kernel.n_kv_head, Tk, kernel.head_dim)
    if tuple(k.shape) != want_kv or tuple(v.shape) != want_kv:
        raise ValueError(f"k, v have shapes {tuple(k.shape)}, {tuple(v.shape)}; "
                         f"expected (B, n_kv_head, Tk, head_dim) = {want_kv}")
    if Tk < Tq:
        raise ValueError(f"keys Tk={Tk} < queries Tq={Tq}; allowed Tk >= Tq (queries are the "
                         "last Tq positions of the keys)")
    if key_padding_mask is not None and (tuple(key_padding_mask.shape) != (B, Tk)
                                         or str(key_padding_mask.dtype) != "torch.bool"):
        raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)} and dtype "
                         f"{key_padding_mask.dtype}; expected bool of shape (B, Tk) = {(B, Tk)}")
