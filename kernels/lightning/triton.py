"""Lightning Attention-2, Triton kernels (arXiv 2401.04658, Algorithms 1 and 2), fp32 accumulation.

One program per (batch*head, slice of one feature dim) walks the blocks of BT tokens in order
(reverse order for dK, dV) holding its slice of the D x E state in fp32 registers; the math per
block is that of `chunk.py` (intra-block masked left product, inter-block right product, relative
decay exponents only; the last block uses its real length):
  forward: grid (B*H, E/BE)   o_i = [(q_i k_i^T) ⊙ M] v_i + Λ q_i S;   S <- lambda^L S + (Γ k_i)^T v_i
  dq:      grid (B*H, D/BDO)  dq_i = [(do_i v_i^T) ⊙ M] k_i + Λ do_i S^T            (forward sweep)
  dk:      grid (B*H, D/BDO)  dk_i = [(do_i v_i^T) ⊙ M]^T q_i + Γ v_i dS^T          (reverse sweep,
  dv:      grid (B*H, E/BEO)  dv_i = [(q_i k_i^T) ⊙ M]^T do_i + Γ k_i dS             dS <- lambda^L dS
                                                                                    + (Λ q_i)^T do_i)
The dk program also writes d initial_state (its rows of the final dS). Inputs fp16/bf16/fp32 in
the layout (B, T, H, D); chunk_size must be a power of 2 >= 16 (tl.dot needs tiles of >= 16).
Runs on a CPU under TRITON_INTERPRET=1 (set before triton is imported).
"""
import torch
import triton
import triton.language as tl

from .naive import LOG_DECAY_FLOOR


@triton.jit
def _decay_tables(g, r, T, start, BT: tl.constexpr):
    """M (BT, BT), Λ (BT,), Γ (BT,) and lambda^L for the block starting at `start` (L = real length)."""
    length = tl.minimum(T - start, BT)
    dist = r[:, None] - r[None, :]
    mask = tl.where(dist >= 0, tl.exp(g * tl.maximum(dist, 0).to(tl.float32)), 0.0)
    q_decay = tl.exp(g * (r + 1).to(tl.float32))
    k_decay = tl.where(r < length, tl.exp(g * (length - 1 - r).to(tl.float32)), 0.0)
    block_decay = tl.exp(g * length.to(tl.float32))
    return mask, q_decay, k_decay, block_decay


@triton.jit
def _load(ptr, t, T, cols, n_cols, row_stride):
    """(BT, len(cols)) tile of rows t of a (T, n_cols) view with row stride `row_stride`, as fp32."""
    m = (t < T)[:, None] & (cols < n_cols)[None, :]
    return tl.load(ptr + t[:, None] * row_stride + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _fwd_kernel(Q, K, V, G, S0, O, SF, scale, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, HAS_S0: tl.constexpr,
                PREC: tl.constexpr):
    i_bh, i_e = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    g = tl.load(G + h)
    r, d, e = tl.arange(0, BT), tl.arange(0, BD), i_e * BE + tl.arange(0, BE)
    qk_off, v_off, s_off = b * T * H * D + h * D, b * T * H * E + h * E, (b * H + h) * D * E
    s_mask = (d < D)[:, None] & (e < E)[None, :]
    s_ptrs = d[:, None] * E + e[None, :]
    state = tl.zeros((BD, BE), dtype=tl.float32)
    if HAS_S0:
        state = tl.load(S0 + s_off + s_ptrs, mask=s_mask, other=0.0).to(tl.float32)
    for start in range(0, T, BT):
        mask, q_decay, k_decay, block_decay = _decay_tables(g, r, T, start, BT)
        t = start + r
        q = _load(Q + qk_off, t, T, d, D, H * D) * scale
        k = _load(K + qk_off, t, T, d, D, H * D)
        v = _load(V + v_off, t, T, e, E, H * E)
        a = tl.dot(q, tl.trans(k), input_precision=PREC) * mask
        o = tl.dot(a, v, input_precision=PREC) + tl.dot(q * q_decay[:, None], state, input_precision=PREC)
        o_mask = (t < T)[:, None] & (e < E)[None, :]
        tl.store(O + v_off + t[:, None] * H * E + e[None, :], o.to(O.dtype.element_ty), mask=o_mask)
        state = block_decay * state + tl.dot(tl.trans(k * k_decay[:, None]), v, input_precision=PREC)
    tl.store(SF + s_off + s_ptrs, state, mask=s_mask)


@triton.jit
def _dq_kernel(K, V, G, S0, DO, DQ, scale, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr,
               BT: tl.constexpr, BDO: tl.constexpr, BEF: tl.constexpr, HAS_S0: tl.constexpr,
               PREC: tl.constexpr):
    i_bh, i_d = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    g = tl.load(G + h)
    r, d, e = tl.arange(0, BT), i_d * BDO + tl.arange(0, BDO), tl.arange(0, BEF)
    qk_off, v_off, s_off = b * T * H * D + h * D, b * T * H * E + h * E, (b * H + h) * D * E
    s_mask = (d < D)[:, None] & (e < E)[None, :]
    state = tl.zeros((BDO, BEF), dtype=tl.float32)  # rows d of S
    if HAS_S0:
        state = tl.load(S0 + s_off + d[:, None] * E + e[None, :], mask=s_mask, other=0.0).to(tl.float32)
    for start in range(0, T, BT):
        mask, q_decay, k_decay, block_decay = _decay_tables(g, r, T, start, BT)
        t = start + r
        k = _load(K + qk_off, t, T, d, D, H * D)
        v = _load(V + v_off, t, T, e, E, H * E)
        do = _load(DO + v_off, t, T, e, E, H * E)
        p = tl.dot(do, tl.trans(v), input_precision=PREC) * mask
        dq = tl.dot(p, k, input_precision=PREC)
        dq += tl.dot(do * q_decay[:, None], tl.trans(state), input_precision=PREC)
        dq_mask = (t < T)[:, None] & (d < D)[None, :]
        tl.store(DQ + qk_off + t[:, None] * H * D + d[None, :], (dq * scale).to(DQ.dtype.element_ty),
                 mask=dq_mask)
        state = block_decay * state + tl.dot(tl.trans(k * k_decay[:, None]), v, input_precision=PREC)


@triton.jit
def _dk_kernel(Q, V, G, DO, DSF, DK, DS0, scale, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr,
               BT: tl.constexpr, BDO: tl.constexpr, BEF: tl.constexpr, HAS_S0: tl.constexpr,
               PREC: tl.constexpr):
    i_bh, i_d = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    g = tl.load(G + h)
    r, d, e = tl.arange(0, BT), i_d * BDO + tl.arange(0, BDO), tl.arange(0, BEF)
    qk_off, v_off, s_off = b * T * H * D + h * D, b * T * H * E + h * E, (b * H + h) * D * E
    s_mask = (d < D)[:, None] & (e < E)[None, :]
    s_ptrs = d[:, None] * E + e[None, :]
    dstate = tl.load(DSF + s_off + s_ptrs, mask=s_mask, other=0.0).to(tl.float32)  # rows d of dS
    n_blocks = tl.cdiv(T, BT)
    for i in range(0, n_blocks):
        start = (n_blocks - 1 - i) * BT
        mask, q_decay, k_decay, block_decay = _decay_tables(g, r, T, start, BT)
        t = start + r
        q = _load(Q + qk_off, t, T, d, D, H * D) * scale
        v = _load(V + v_off, t, T, e, E, H * E)
        do = _load(DO + v_off, t, T, e, E, H * E)
        p = tl.dot(do, tl.trans(v), input_precision=PREC) * mask
        dk = tl.dot(tl.trans(p), q, input_precision=PREC)
        dk += tl.dot(v * k_decay[:, None], tl.trans(dstate), input_precision=PREC)
        dk_mask = (t < T)[:, None] & (d < D)[None, :]
        tl.store(DK + qk_off + t[:, None] * H * D + d[None, :], dk.to(DK.dtype.element_ty), mask=dk_mask)
        dstate = block_decay * dstate + tl.dot(tl.trans(q * q_decay[:, None]), do, input_precision=PREC)
    if HAS_S0:
        tl.store(DS0 + s_off + s_ptrs, dstate.to(DS0.dtype.element_ty), mask=s_mask)


@triton.jit
def _dv_kernel(Q, K, G, DO, DSF, DV, scale, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr,
               BT: tl.constexpr, BDF: tl.constexpr, BEO: tl.constexpr, PREC: tl.constexpr):
    i_bh, i_e = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    g = tl.load(G + h)
    r, d, e = tl.arange(0, BT), tl.arange(0, BDF), i_e * BEO + tl.arange(0, BEO)
    qk_off, v_off, s_off = b * T * H * D + h * D, b * T * H * E + h * E, (b * H + h) * D * E
    s_mask = (d < D)[:, None] & (e < E)[None, :]
    dstate = tl.load(DSF + s_off + d[:, None] * E + e[None, :], mask=s_mask, other=0.0).to(tl.float32)
    n_blocks = tl.cdiv(T, BT)
    for i in range(0, n_blocks):
        start = (n_blocks - 1 - i) * BT
        mask, q_decay, k_decay, block_decay = _decay_tables(g, r, T, start, BT)
        t = start + r
        q = _load(Q + qk_off, t, T, d, D, H * D) * scale
        k = _load(K + qk_off, t, T, d, D, H * D)
        do = _load(DO + v_off, t, T, e, E, H * E)
        a = tl.dot(q, tl.trans(k), input_precision=PREC) * mask
        dv = tl.dot(tl.trans(a), do, input_precision=PREC)
        dv += tl.dot(k * k_decay[:, None], dstate, input_precision=PREC)
        dv_mask = (t < T)[:, None] & (e < E)[None, :]
        tl.store(DV + v_off + t[:, None] * H * E + e[None, :], dv.to(DV.dtype.element_ty), mask=dv_mask)
        dstate = block_decay * dstate + tl.dot(tl.trans(q * q_decay[:, None]), do, input_precision=PREC)


def _pow2(n, lo=16):
    return max(lo, triton.next_power_of_2(n))


def _precision(dtype):
    # fp32 inputs keep full fp32 products; 16-bit inputs lose nothing to tf32 operands.
    return "ieee" if dtype == torch.float32 else "tf32"


class TritonLightningAttn(torch.autograd.Function):
    """Same contract as `chunk.ChunkLightningAttn`: (o in q's dtype, final state fp32)."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, initial_state, scale, chunk_size):
        q, k, v = (x.contiguous() for x in (q, k, v))
        B, T, H, D = q.shape
        E = v.shape[-1]
        g = log_decay.detach().to(device=q.device, dtype=torch.float32).clamp(min=LOG_DECAY_FLOOR).contiguous()
        s0 = initial_state.contiguous() if initial_state is not None else None
        o = torch.empty_like(v, dtype=q.dtype)
        final = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32)
        BE = min(_pow2(E), 32)
        _fwd_kernel[(B * H, triton.cdiv(E, BE))](
            q, k, v, g, s0 if s0 is not None else final, o, final, float(scale), T, H, D, E,
            BT=chunk_size, BD=_pow2(D), BE=BE, HAS_S0=s0 is not None, PREC=_precision(q.dtype))
        ctx.save_for_backward(q, k, v, g, s0)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, g, s0 = ctx.saved_tensors
        B, T, H, D = q.shape
        E = v.shape[-1]
        do = do.contiguous()
        dfinal = dfinal.to(torch.float32).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        ds0 = torch.empty_like(s0) if s0 is not None else None
        BT, BDO, BEO, prec = ctx.chunk_size, min(_pow2(D), 32), min(_pow2(E), 32), _precision(q.dtype)
        scale = float(ctx.scale)
        _dq_kernel[(B * H, triton.cdiv(D, BDO))](
            k, v, g, s0 if s0 is not None else dfinal, do, dq, scale, T, H, D, E,
            BT=BT, BDO=BDO, BEF=_pow2(E), HAS_S0=s0 is not None, PREC=prec)
        _dk_kernel[(B * H, triton.cdiv(D, BDO))](
            q, v, g, do, dfinal, dk, ds0 if ds0 is not None else dfinal, scale, T, H, D, E,
            BT=BT, BDO=BDO, BEF=_pow2(E), HAS_S0=s0 is not None, PREC=prec)
        _dv_kernel[(B * H, triton.cdiv(E, BEO))](
            q, k, g, do, dfinal, dv, scale, T, H, D, E, BT=BT, BDF=_pow2(D), BEO=BEO, PREC=prec)
        return dq, dk, dv, None, ds0, None, None


def triton_lightning_attn(q, k, v, log_decay, scale=1.0, initial_state=None, output_final_state=False,
                          chunk_size=64):
    """Triton forward and backward. Returns (o, final state fp32 or None)."""
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"impl='triton' takes fp16/bf16/fp32 inputs, got {q.dtype}; use impl='chunk'")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"impl='triton' needs chunk_size a power of 2 >= 16, got {chunk_size}")
    o, final = TritonLightningAttn.apply(q, k, v, log_decay, initial_state, scale, chunk_size)
    return o, (final if output_final_state else None)
