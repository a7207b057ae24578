"""References for WKV (RWKV-4, arXiv 2305.13048): the parallel formula (eq. 16) and the plain
recurrence of App. D, both with exp() as written, no max subtraction. Readable, and exact in
float64 for moderate keys; in float32 they overflow once a key exceeds ~88 (e^88.7 = fp32 max),
which is why the model uses the stable forms (`recurrent`, `chunk`, `triton`).

Shapes: k, v (B, T, C); w (decay, > 0), u (bonus) (C,); state (a, b, p) each (B, C): the sums
a e^p, b e^p. The final state these return has p = 0 (a, b hold the plain sums).
"""

from __future__ import annotations

import torch


def _dtype(k):
    return torch.float64 if k.dtype == torch.float64 else torch.float32


def _plain_state(state, B, C, dtype, device):
    if state is None:
        zero = torch.zeros(B, C, dtype=dtype, device=device)
        return zero, zero
    a, b, p = (s.to(dtype) for s in state)
    return a * p.exp(), b * p.exp()


def wkv_naive(w, u, k, v, state=None, output_final_state: bool = False):
    """Eq. 16 as an O(T^2) masked weighted sum: weight e^{k_i - (t-1-i) w} for i < t, e^{u + k_t}
    for i = t; the initial state enters decayed by e^{-t w}. -> (wkv (B, T, C), state | None)."""
    dt = _dtype(k)
    B, T, C = k.shape
    w, u, k32, v32 = w.to(dt), u.to(dt), k.to(dt), v.to(dt)
    t = torch.arange(T, device=k.device, dtype=dt)
    gap = (t[:, None] - 1 - t[None, :])  # (T, T): t - 1 - i
    logits = k32[:, None, :, :] - gap[None, :, :, None] * w  # (B, T, T, C): [b, t, i, c]
    weight = logits.masked_fill((gap < 0)[None, :, :, None], -torch.inf).exp()  # only i < t
    diag = (u + k32).exp()  # (B, T, C): i = t
    a0, b0 = _plain_state(state, B, C, dt, k.device)
    decay0 = (-t[:, None] * w).exp()  # (T, C): e^{-t w}
    num = torch.einsum("btic,bic->btc", weight, v32) + diag * v32 + decay0 * a0[:, None]
    den = weight.sum(2) + diag + decay0 * b0[:, None]
    out = (num / den).to(k.dtype)
    if not output_final_state:
        return out, None
    last = ((T - 1 - t)[None, :, None] * -w + k32).exp()  # e^{k_i - (T-1-i) w}
    decayT = (-T * w).exp()
    a = decayT * a0 + (last * v32).sum(1)
    b = decayT * b0 + last.sum(1)
    return out, (a, b, torch.zeros_like(a))


def wkv_unstable(w, u, k, v, state=None, output_final_state: bool = False):
    """App. D's recurrence: wkv_t = (a + e^{u+k_t} v_t) / (b + e^{u+k_t});
    a <- e^{-w} a + e^{k_t} v_t, b <- e^{-w} b + e^{k_t}. -> (wkv (B, T, C), state | None)."""
    dt = _dtype(k)
    B, T, C = k.shape
    w, u, k32, v32 = w.to(dt), u.to(dt), k.to(dt), v.to(dt)
    a, b = _plain_state(state, B, C, dt, k.device)
    decay = (-w).exp()
    out = []
    for t in range(T):
        ek, euk = k32[:, t].exp(), (u + k32[:, t]).exp()
        out.append((a + euk * v32[:, t]) / (b + euk))
        a = decay * a + ek * v32[:, t]
        b = decay * b + ek
    out = torch.stack(out, 1).to(k.dtype)
    return out, ((a, b, torch.zeros_like(a)) if output_final_state else None)
