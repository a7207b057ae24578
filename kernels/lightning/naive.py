"""Lightning Attention, naive masked ("left product") form: O(T^2), the readable reference.

arXiv 2401.04658 eq. (3): ``O = (Q K^T ⊙ D) V`` with ``D_ij = lambda^(i-j)`` for i >= j, else 0,
per (batch, head); with an initial state S0 the output adds ``lambda^(i+1) q_i S0`` (0-based i).
q, k (B, T, H, D); v (B, T, H, E); log_decay (H,) = log lambda <= 0. Differentiable by autograd in
every input, log_decay included. Math in fp32 (fp64 for fp64 inputs).
"""
import torch

# exp(-1000) is already 0 in fp64; clamping keeps lambda = 0 (log_decay = -inf) finite: -inf * 0 = nan.
LOG_DECAY_FLOOR = -1000.0


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp64 for fp64 inputs, else fp32 (decays, states and accumulations never run in 16 bits)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def naive_lightning_attn(q, k, v, log_decay, scale=1.0, initial_state=None, output_final_state=False):
    """Returns (o (B, T, H, E) in q's dtype, final state (B, H, D, E) or None)."""
    out_dtype, dtype = q.dtype, compute_dtype(q)
    q, k, v = (x.transpose(1, 2).to(dtype) for x in (q, k, v))  # (B, H, T, *)
    g = log_decay.to(device=q.device, dtype=dtype).clamp(min=LOG_DECAY_FLOOR)[:, None]  # (H, 1)
    T = q.shape[2]
    t = torch.arange(T, device=q.device, dtype=dtype)
    dist = t[:, None] - t[None, :]  # i - j
    mask = torch.where(dist >= 0, torch.exp(g[:, :, None] * dist.clamp(min=0)), 0.0)  # (H, T, T)
    q = q * scale
    o = (q @ k.transpose(-1, -2) * mask) @ v
    final = None
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        o = o + (q * torch.exp(g * (t + 1))[..., None]) @ s0
    if output_final_state:
        final = (k * torch.exp(g * (T - 1 - t))[..., None]).transpose(-1, -2) @ v
        if initial_state is not None:
            final = final + torch.exp(g * T)[..., None] * s0
    return o.transpose(1, 2).to(out_dtype), final
