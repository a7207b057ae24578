"""Lightning Attention-2 (arXiv 2401.04658): linear attention with a fixed per-head decay, tiled.

    o, final_state = lightning_attn(q, k, v, log_decay, *, scale=1.0, initial_state=None,
                                    output_final_state=False, chunk_size=64, impl="auto")
        q, k (B, T, H, D); v (B, T, H, E) (fla layout); log_decay (H,) = log lambda <= 0;
        initial_state (B, H, D, E) or None; o (B, T, H, E) in q's dtype; final_state (B, H, D, E)
        fp32 (fp64 for fp64 inputs) or None. o_t = scale * q_t S_t, S_t = lambda S_(t-1) + k_t^T v_t.
    o_t, state = lightning_step(q_t, k_t, v_t, log_decay, state, scale=1.0)   # one decode token
    log_decay = lightning_decay(n_head, layer_idx, n_layer, schedule="alibi_tnl")  # list[float]

impl: "naive" (O(T^2) masked form), "recurrent" (token by token), "chunk" (tiled, Algorithm-2
backward), "triton" (GPU kernels, chunk_size a power of 2 >= 16; on a CPU only under
TRITON_INTERPRET=1), "auto" = "triton" when q is on CUDA, triton imports and the inputs are not
fp64 (triton has no fp64 dot) and chunk_size suits its tiles (a power of 2 >= 16), else "chunk".
scale defaults to 1 (the official kernel); fla's wrapper uses D^-0.5. chunk and triton give
log_decay no gradient (lambda is fixed, TNL); naive and recurrent differentiate it by autograd.
Importing this package imports no triton.
"""
import importlib.util
import os

import torch

from .decay import SCHEDULES, lightning_decay
from .recurrent import lightning_step

__all__ = ["IMPLS", "SCHEDULES", "lightning_attn", "lightning_decay", "lightning_step"]
IMPLS = ("auto", "naive", "recurrent", "chunk", "triton")


def _check(q, k, v, log_decay, initial_state):
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must both be (B, T, H, D)")
    B, T, H, D = q.shape
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected (B, T, H, E) = ({B}, {T}, {H}, E)")
    if not isinstance(log_decay, torch.Tensor) or tuple(log_decay.shape) != (H,):
        got = tuple(log_decay.shape) if isinstance(log_decay, torch.Tensor) else type(log_decay).__name__
        raise ValueError(f"log_decay is {got}; expected a tensor of shape (H,) = ({H},)")
    # Checked on CPU only: on a GPU the check would force a host sync on every call.
    if log_decay.device.type == "cpu" and bool((log_decay > 0).any()):
        raise ValueError(f"log_decay must be <= 0 (log lambda, lambda in (0, 1]); got {log_decay.tolist()}")
    want = (B, H, D, v.shape[3])
    if initial_state is not None and tuple(initial_state.shape) != want:
        raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}; expected (B, H, D, E) = {want}")


def _resolve(impl, q):
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; expected one of {', '.join(IMPLS)}")
    if impl == "auto":
        usable = q.is_cuda and q.dtype != torch.float64 and importlib.util.find_spec("triton") is not None
        return "triton" if usable else "chunk"
    if impl == "triton" and not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before the import "
                         "of triton); use impl='chunk' on a CPU")
    return impl


def lightning_attn(q, k, v, log_decay, *, scale=1.0, initial_state=None, output_final_state=False,
                   chunk_size=64, impl="auto"):
    """See the module docstring. Returns (o, final_state or None)."""
    _check(q, k, v, log_decay, initial_state)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    asked, impl = impl, _resolve(impl, q)
    if asked == "auto" and impl == "triton" and (chunk_size < 16 or chunk_size & (chunk_size - 1)):
        impl = "chunk"  # the Triton tiles need a power of 2 >= 16; auto takes the form that can run
    if impl in ("chunk", "triton") and log_decay.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"impl={impl!r} gives log_decay no gradient (lambda is fixed); pass "
                         "log_decay.detach() or use impl='naive' / 'recurrent'")
    args = (q, k, v, log_decay, scale, initial_state, output_final_state)
    if impl == "naive":
        from .naive import naive_lightning_attn
        return naive_lightning_attn(*args)
    if impl == "recurrent":
        from .recurrent import recurrent_lightning_attn
        return recurrent_lightning_attn(*args)
    if impl == "chunk":
        from .chunk import chunk_lightning_attn
        return chunk_lightning_attn(*args, chunk_size=chunk_size)
    from .triton import triton_lightning_attn
    return triton_lightning_attn(*args, chunk_size=chunk_size)
