"""WKV, the time-mixing operator of RWKV-4 (Peng et al., arXiv 2305.13048, eq. 16 and App. D).

Per channel c, with a positive decay w_c and a bonus u_c for the current token:

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})

Shapes: k, v (B, T, C); w, u (C,); the state (a, b, p), each (B, C) float32, stands for the
running sums a' e^p (numerator) and b' e^p (denominator) of all tokens seen so far (the
running-max form of App. D: p is the shared exponent, so a', b' never overflow). The empty state
is (0, 0, NEG_INF); `initial_state(B, C)` makes it. A key equal to NEG_INF (-1e38) adds nothing
once any real key follows it: the model uses that to keep left padding out of the sums.

The model stores a free parameter `time_decay` and passes w = exp(time_decay) (always > 0), as
the official RWKV-4 code does; w here is the decay itself, never its log.

    wkv(w, u, k, v, state=None, output_final_state=False, impl="auto") -> (wkv (B, T, C), state | None)

impl: "naive" (the O(T^2) parallel formula, exp without max subtraction: a reference that
overflows for k > ~88 in fp32), "recurrent" (the stable running-max recurrence, a Python loop
over T), "chunk" (blocks of the parallel form with per-block max subtraction, the state carried
between blocks: linear in T, what CPUs train with), "triton" (the stable recurrence forward and
backward as Triton kernels), "auto" (triton for CUDA tensors, else chunk). Every form computes in
float32 (float64 stays float64) and returns wkv in k's dtype. Importing this package imports no
triton.
"""

from __future__ import annotations

NEG_INF = -1e38  # the exponent of an empty state / the key of a masked token (finite: max() stays exact)

IMPLS = ("auto", "naive", "recurrent", "chunk", "triton")

__all__ = ["IMPLS", "NEG_INF", "initial_state", "wkv", "wkv_step"]


def initial_state(batch_size: int, channels: int, device=None):
    """The empty state (a, b, p): zeros, zeros, NEG_INF, each (B, C) float32."""
    import torch

    a = torch.zeros(batch_size, channels, dtype=torch.float32, device=device)
    return a, a.clone(), torch.full_like(a, NEG_INF)


def wkv(w, u, k, v, state=None, output_final_state: bool = False, impl: str = "auto"):
    """WKV of k, v (B, T, C) with decay w > 0 and bonus u (C,); see the module docstring."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not a WKV implementation; allowed: {', '.join(IMPLS)}")
    if k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"k and v must both be (B, T, C); got k {tuple(k.shape)}, v {tuple(v.shape)}")
    C = k.shape[-1]
    if w.shape != (C,) or u.shape != (C,):
        raise ValueError(f"w and u must be ({C},); got w {tuple(w.shape)}, u {tuple(u.shape)}")
    if state is not None:
        if len(state) != 3 or any(s.shape != (k.shape[0], C) for s in state):
            raise ValueError(f"state must be (a, b, p), each ({k.shape[0]}, {C})")
    if impl == "auto":
        impl = "triton" if k.is_cuda else "chunk"
    if impl == "naive":
        from .naive import wkv_naive as fn
    elif impl == "recurrent":
        from .recurrent import wkv_recurrent as fn
    elif impl == "chunk":
        from .chunk import wkv_chunk as fn
    else:
        from .triton import wkv_triton as fn
    return fn(w, u, k, v, state=state, output_final_state=output_final_state)


def wkv_step(w, u, k, v, state):
    """One token: k, v (B, C), state (a, b, p) -> (wkv (B, C) in k's dtype, new state); see
    `recurrent.wkv_step`."""
    from .recurrent import wkv_step as step

    return step(w, u, k, v, state)
