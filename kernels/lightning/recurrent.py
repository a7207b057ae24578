"""Lightning Attention, recurrent form (arXiv 2401.04658 eq. (4)): one token at a time.

``S_t = lambda S_(t-1) + k_t^T v_t``, ``o_t = q_t S_t``, per (batch, head); S is (D, E).
`lightning_step` is the decode step; `recurrent_lightning_attn` runs it over a sequence.
Math in fp32 (fp64 for fp64 inputs); autograd differentiates through the loop.
"""
import torch

from .naive import LOG_DECAY_FLOOR, compute_dtype


def lightning_step(q_t, k_t, v_t, log_decay, state=None, scale=1.0):
    """One decode token. q_t, k_t (B, H, D); v_t (B, H, E); log_decay (H,); state (B, H, D, E) or
    None (zeros). Returns (o_t (B, H, E) in q_t's dtype, new state (B, H, D, E) fp32/fp64); the
    input state is not modified."""
    dtype = compute_dtype(q_t)
    q, k, v = (x.to(dtype) for x in (q_t, k_t, v_t))
    lam = torch.exp(log_decay.to(device=q.device, dtype=dtype).clamp(min=LOG_DECAY_FLOOR))
    new = k[..., :, None] * v[..., None, :]
    if state is not None:
        new = new + lam[:, None, None] * state.to(dtype)
    o = torch.einsum("bhd,bhde->bhe", q * scale, new)
    return o.to(q_t.dtype), new


def recurrent_lightning_attn(q, k, v, log_decay, scale=1.0, initial_state=None, output_final_state=False):
    """q, k (B, T, H, D); v (B, T, H, E). Returns (o (B, T, H, E) in q's dtype, final state or None)."""
    state, outs = initial_state, []
    for t in range(q.shape[1]):
        o_t, state = lightning_step(q[:, t], k[:, t], v[:, t], log_decay, state, scale)
        outs.append(o_t)
    if state is None:  # T = 0
        state = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3], dtype=compute_dtype(q))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(v.shape).to(q.dtype)
    return o, (state.to(compute_dtype(q)) if output_final_state else None)
