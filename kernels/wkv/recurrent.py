"""The numerically stable WKV recurrence of RWKV-4 (arXiv 2305.13048, App. D with a running max).

State (a, b, p), each (B, C): the sums are a e^p and b e^p. Step t with key k, value v:

    q = max(p, u + k);        wkv = (e^{p-q} a + e^{u+k-q} v) / (e^{p-q} b + e^{u+k-q})
    q' = max(p - w, k);       a <- e^{p-w-q'} a + e^{k-q'} v;  b <- e^{p-w-q'} b + e^{k-q'};  p <- q'

Every exponent is <= 0, so nothing overflows. Computed in float32 (float64 stays float64);
wkv comes back in k's dtype, the state in the compute dtype. w > 0 is the decay (the model's
exp(time_decay)).
"""

from __future__ import annotations

import torch

from . import NEG_INF


def _dtype(k):
    return torch.float64 if k.dtype == torch.float64 else torch.float32


def _start(state, B, C, dt, device):
    if state is None:
        a = torch.zeros(B, C, dtype=dt, device=device)
        return a, a.clone(), torch.full_like(a, NEG_INF)
    return tuple(s.to(dt) for s in state)


def _step(w, u, k, v, a, b, p):
    q = torch.maximum(p, u + k)
    e1, e2 = (p - q).exp(), (u + k - q).exp()
    out = (e1 * a + e2 * v) / (e1 * b + e2)
    q2 = torch.maximum(p - w, k)
    e1, e2 = (p - w - q2).exp(), (k - q2).exp()
    return out, e1 * a + e2 * v, e1 * b + e2, q2


def wkv_step(w, u, k, v, state):
    """One token: k, v (B, C); state (a, b, p) (B, C) or None (empty) -> (wkv (B, C), state)."""
    dt = _dtype(k)
    a, b, p = _start(state, k.shape[0], k.shape[1], dt, k.device)
    out, a, b, p = _step(w.to(dt), u.to(dt), k.to(dt), v.to(dt), a, b, p)
    return out.to(k.dtype), (a, b, p)


def wkv_recurrent(w, u, k, v, state=None, output_final_state: bool = False):
    """The stable recurrence over k, v (B, T, C) -> (wkv (B, T, C), state | None)."""
    dt = _dtype(k)
    B, T, C = k.shape
    w, u, k32, v32 = w.to(dt), u.to(dt), k.to(dt), v.to(dt)
    a, b, p = _start(state, B, C, dt, k.device)
    out = []
    for t in range(T):
        o, a, b, p = _step(w, u, k32[:, t], v32[:, t], a, b, p)
        out.append(o)
    out = torch.stack(out, 1).to(k.dtype)
    return out, ((a, b, p) if output_final_state else None)
