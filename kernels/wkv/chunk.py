"""Chunked WKV (RWKV-4, arXiv 2305.13048): blocks of the parallel form (eq. 16) with per-row max
subtraction, the running-max state (a, b, p) carried between blocks. Time and memory grow
linearly with T (B * T * L * C for block length L = chunk_size); autograd gives the gradients.

For T = N * L (the last block may be shorter), all blocks at once:
  inside block n, row s: logits k_j - (s-1-j) w (j < s), u + k_s (j = s); m = their max;
      num_s = sum_j e^{logit - m} v_j, den_s = sum_j e^{logit - m};
  the state at the block's start, (a_n, b_n, p_n), enters row s with exponent p_n - s w;
  the block's own contribution to the state after it: logits k_j - (len_n - 1 - j) w.
Then one short loop over the N blocks carries the state: p_{n+1} = max(p_n - len_n w, M_n).

The max shifts are stabilisers: they are detached, so gradients treat them as constants. That is
exact for wkv, and for a final state used as the sums a e^p, b e^p (as the next call uses it);
the gradient reaching p is then the one through those sums only. Computed in float32 (float64
stays float64); wkv in k's dtype, the final state in the compute dtype. w > 0 is the decay.
"""

from __future__ import annotations

import torch

from . import NEG_INF

# Block length L: the blocks cost B*T*L*C, the loop over blocks T/L Python steps. Measured on one
# CPU thread, fwd+bwd: at B=8, T=256, C=192 (the tiny model) L=4/8/16/32 took 255/359/656/1392 ms;
# at B=1, T=4096, C=16, L=8/16/32 took 480/288/245 ms. Model widths favour short blocks.
CHUNK_SIZE = 8


def wkv_chunk(w, u, k, v, state=None, output_final_state: bool = False, chunk_size: int = CHUNK_SIZE):
    """k, v (B, T, C); w, u (C,); state (a, b, p) (B, C) or None -> (wkv (B, T, C), state | None)."""
    dt = torch.float64 if k.dtype == torch.float64 else torch.float32
    B, T, C = k.shape
    L = max(1, min(int(chunk_size), T))
    N = -(-T // L)
    pad = N * L - T
    w, u = w.to(dt), u.to(dt)
    kc, vc = k.to(dt), v.to(dt)
    if pad:  # masked keys at the end: causal, so they change no earlier row
        kc = torch.cat([kc, kc.new_full((B, pad, C), NEG_INF)], 1)
        vc = torch.cat([vc, vc.new_zeros(B, pad, C)], 1)
    kc, vc = kc.view(B, N, L, C), vc.view(B, N, L, C)

    s = torch.arange(L, device=k.device)
    gap = (s[:, None] - 1 - s[None, :]).to(dt)  # (L, L): s - 1 - j
    # (L, L, C): -(s-1-j) w below the diagonal, u on it, NEG_INF above it
    bias = torch.where((gap >= 0)[..., None], -gap[..., None] * w,
                       torch.where((gap == -1)[..., None], u.expand(L, L, C), torch.full_like(u, NEG_INF)))
    logits = kc[:, :, None, :, :] + bias  # (B, N, L_s, L_j, C)
    m_in = logits.amax(3).detach()  # (B, N, L, C)
    e = (logits - m_in[:, :, :, None]).exp()
    num_in = torch.einsum("bnsjc,bnjc->bnsc", e, vc)
    den_in = e.sum(3)

    lens = torch.full((N,), L, device=k.device, dtype=dt)
    lens[-1] = L - pad
    end = kc - (lens[:, None] - 1 - s.to(dt))[None, :, :, None] * w  # (B, N, L, C): k_j - (len-1-j) w
    m_blk = end.amax(2).detach()  # (B, N, C)
    g = (end - m_blk[:, :, None]).exp()
    a_blk, b_blk = (g * vc).sum(2), g.sum(2)

    if state is None:
        a = torch.zeros(B, C, dtype=dt, device=k.device)
        b, p = a.clone(), torch.full((B, C), NEG_INF, dtype=dt, device=k.device)
    else:
        a, b, p = (x.to(dt) for x in state)
    starts_a, starts_b, starts_p = [], [], []
    for n in range(N):
        starts_a.append(a)
        starts_b.append(b)
        starts_p.append(p)
        p_dec = p - lens[n] * w
        q = torch.maximum(p_dec, m_blk[:, n]).detach()
        e1, e2 = (p_dec - q).exp(), (m_blk[:, n] - q).exp()
        a, b, p = e1 * a + e2 * a_blk[:, n], e1 * b + e2 * b_blk[:, n], q
    sa, sb, sp = (torch.stack(x, 1) for x in (starts_a, starts_b, starts_p))  # (B, N, C)

    P = sp[:, :, None] - s.to(dt)[None, None, :, None] * w  # (B, N, L, C): p_n - s w
    m = torch.maximum(m_in, P).detach()
    e_in, e_st = (m_in - m).exp(), (P - m).exp()
    num = e_in * num_in + e_st * sa[:, :, None]
    den = e_in * den_in + e_st * sb[:, :, None]
    out = (num / den).reshape(B, N * L, C)[:, :T].to(k.dtype)
    return out, ((a, b, p) if output_final_state else None)
