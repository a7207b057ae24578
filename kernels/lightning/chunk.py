"""Lightning Attention-2, tiled PyTorch form (arXiv 2401.04658, Algorithms 1 and 2).

Blocks of C tokens (the last one of its real length L <= C), per (batch, head):
  intra-block (left product)  O_intra = [(Q_i K_i^T) ⊙ M] V_i,   M_rs = lambda^(r-s), r >= s, else 0
  inter-block (right product) O_inter = Λ Q_i S,                  Λ = diag(lambda^(r+1)), r = 0..L-1
  state                       S <- lambda^L S + (Γ K_i)^T V_i,     Γ = diag(lambda^(L-1-r))
The backward is Algorithm 2: a forward sweep for dQ, a reverse sweep with dS for dK, dV (and
d initial_state). Only relative exponents in [0, C] are materialised, never lambda^(-j); no T x T
matrix exists in either direction. Cost O(T C D + T D E); memory O(T (D + E)).
Math in fp32 (fp64 for fp64 inputs). log_decay gets no gradient (lambda is fixed, as in TNL).
"""
import torch

from .naive import LOG_DECAY_FLOOR, compute_dtype


def _tables(g, length):
    """Decay tables of one block of `length` tokens, g (H,): M (H, L, L), Λ and Γ (H, L, 1), lambda^L."""
    r = torch.arange(length, device=g.device, dtype=g.dtype)
    dist = r[:, None] - r[None, :]
    gh = g[:, None]
    mask = torch.where(dist >= 0, torch.exp(gh[..., None] * dist.clamp(min=0)), 0.0)
    q_decay = torch.exp(gh * (r + 1))[..., None]
    k_decay = torch.exp(gh * (length - 1 - r))[..., None]
    return mask, q_decay, k_decay, torch.exp(g * length)[:, None, None]


def _blocks(T, chunk_size, g):
    """(slice, tables) per block; the tables of the two possible lengths are built once each."""
    cache = {}
    for start in range(0, T, chunk_size):
        length = min(chunk_size, T - start)
        if length not in cache:
            cache[length] = _tables(g, length)
        yield slice(start, start + length), cache[length]


def _forward(q, k, v, g, state, chunk_size):
    """q (already scaled), k (B, H, T, D); v (B, H, T, E); state (B, H, D, E). Returns (o, state)."""
    o = torch.empty_like(v)
    for sl, (mask, q_decay, k_decay, block_decay) in _blocks(q.shape[2], chunk_size, g):
        qi, ki, vi = q[:, :, sl], k[:, :, sl], v[:, :, sl]
        o[:, :, sl] = (qi @ ki.transpose(-1, -2) * mask) @ vi + (qi * q_decay) @ state
        state = block_decay * state + (ki * k_decay).transpose(-1, -2) @ vi
    return o, state


def _backward(q, k, v, g, state, do, dstate, chunk_size):
    """Algorithm 2. q already scaled; state = initial state; dstate = gradient of the final state.
    Returns dq (w.r.t. the scaled q), dk, dv, d initial state."""
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    blocks = list(_blocks(q.shape[2], chunk_size, g))
    for sl, (mask, q_decay, k_decay, block_decay) in blocks:  # forward sweep: dQ
        ki, vi, doi = k[:, :, sl], v[:, :, sl], do[:, :, sl]
        dq[:, :, sl] = (doi @ vi.transpose(-1, -2) * mask) @ ki + (doi * q_decay) @ state.transpose(-1, -2)
        state = block_decay * state + (ki * k_decay).transpose(-1, -2) @ vi
    for sl, (mask, q_decay, k_decay, block_decay) in reversed(blocks):  # reverse sweep: dK, dV
        qi, ki, vi, doi = q[:, :, sl], k[:, :, sl], v[:, :, sl], do[:, :, sl]
        p = doi @ vi.transpose(-1, -2) * mask
        a = qi @ ki.transpose(-1, -2) * mask
        dk[:, :, sl] = p.transpose(-1, -2) @ qi + (vi * k_decay) @ dstate.transpose(-1, -2)
        dv[:, :, sl] = a.transpose(-1, -2) @ doi + (ki * k_decay) @ dstate
        dstate = block_decay * dstate + (qi * q_decay).transpose(-1, -2) @ doi
    return dq, dk, dv, dstate


class ChunkLightningAttn(torch.autograd.Function):
    """Inputs in the public layout: q, k (B, T, H, D); v (B, T, H, E); log_decay (H,);
    initial_state (B, H, D, E) or None. Returns (o (B, T, H, E) in q's dtype, final state (B, H, D, E))."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, initial_state, scale, chunk_size):
        dtype = compute_dtype(q)
        g = log_decay.detach().to(device=q.device, dtype=dtype).clamp(min=LOG_DECAY_FLOOR)
        qh, kh, vh = (x.transpose(1, 2).to(dtype) for x in (q, k, v))
        B, H, _, D = qh.shape
        state = (initial_state.to(dtype) if initial_state is not None
                 else qh.new_zeros(B, H, D, vh.shape[-1]))
        o, final = _forward(qh * scale, kh, vh, g, state, chunk_size)
        ctx.save_for_backward(q, k, v, g, initial_state)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return o.transpose(1, 2).to(q.dtype), final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, g, initial_state = ctx.saved_tensors
        dtype = g.dtype
        qh, kh, vh, doh = (x.transpose(1, 2).to(dtype) for x in (q, k, v, do))
        B, H, _, D = qh.shape
        state = (initial_state.to(dtype) if initial_state is not None
                 else qh.new_zeros(B, H, D, vh.shape[-1]))
        dq, dk, dv, dstate = _backward(qh * ctx.scale, kh, vh, g, state, doh, dfinal.to(dtype), ctx.chunk_size)
        dq = (dq * ctx.scale).transpose(1, 2).to(q.dtype)
        dinit = dstate.to(initial_state.dtype) if initial_state is not None else None
        return dq, dk.transpose(1, 2).to(k.dtype), dv.transpose(1, 2).to(v.dtype), None, dinit, None, None


def chunk_lightning_attn(q, k, v, log_decay, scale=1.0, initial_state=None, output_final_state=False,
                         chunk_size=64):
    """Tiled forward with the Algorithm-2 backward. Returns (o, final state or None)."""
    o, final = ChunkLightningAttn.apply(q, k, v, log_decay, initial_state, scale, chunk_size)
    return o, (final if output_final_state else None)
