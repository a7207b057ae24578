"""WKV (RWKV-4, arXiv 2305.13048) as Triton kernels: the stable running-max recurrence forward
(see `recurrent`) and its backward, joined by an autograd.Function. One program per (batch row,
block of channels) walks over time; runs on a GPU, or on a CPU under TRITON_INTERPRET=1.

Backward, per channel, in the plain sums a_t, b_t (state after token t), den_t = b_{t-1} + e^{u+k_t}:
    dL/da_{t-1} = gy_t / den_t + e^{-w} dL/da_t,   dL/db_{t-1} = -gy_t y_t / den_t + e^{-w} dL/db_t
    gk_t = gy_t e^{u+k_t} (v_t - y_t) / den_t + (dL/da_t v_t + dL/db_t) e^{k_t}
    gv_t = gy_t e^{u+k_t} / den_t + dL/da_t e^{k_t};   gu = sum_t gy_t e^{u+k_t} (v_t - y_t) / den_t
    gw   = -sum_t e^{-w} (dL/da_t a_{t-1} + dL/db_t b_{t-1})
The adjoints are kept as ga' e^r with a running max r (reverse pass), as the forward keeps
a' e^p; r_t <= -p_t, so every exponent the kernel takes is <= 0. The forward saves the state
before each step (3 float32 arrays of (B, T, C)) for the reverse pass. As in `chunk`, p is a
stabiliser: the final p gets no gradient, the initial p gets the one through a e^p, b e^p.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import NEG_INF


@triton.jit
def _wkv_fwd(w_ptr, u_ptr, k_ptr, v_ptr, y_ptr, a0_ptr, b0_ptr, p0_ptr, aT_ptr, bT_ptr, pT_ptr,
             sa_ptr, sb_ptr, sp_ptr, T, C, SAVE: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_b = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cs < C
    w = tl.load(w_ptr + cs, mask=cm, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + cs, mask=cm, other=0.0).to(tl.float32)
    a = tl.load(a0_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    b = tl.load(b0_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    p = tl.load(p0_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    base = pid_b * T * C
    for t in range(T):
        off = base + t * C + cs
        kt = tl.load(k_ptr + off, mask=cm, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=cm, other=0.0).to(tl.float32)
        if SAVE:
            tl.store(sa_ptr + off, a, mask=cm)
            tl.store(sb_ptr + off, b, mask=cm)
            tl.store(sp_ptr + off, p, mask=cm)
        q = tl.maximum(p, u + kt)
        e1 = tl.exp(p - q)
        e2 = tl.exp(u + kt - q)
        y = (e1 * a + e2 * vt) / (e1 * b + e2)
        tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=cm)
        q2 = tl.maximum(p - w, kt)
        e1 = tl.exp(p - w - q2)
        e2 = tl.exp(kt - q2)
        a = e1 * a + e2 * vt
        b = e1 * b + e2
        p = q2
    tl.store(aT_ptr + pid_b * C + cs, a, mask=cm)
    tl.store(bT_ptr + pid_b * C + cs, b, mask=cm)
    tl.store(pT_ptr + pid_b * C + cs, p, mask=cm)


@triton.jit
def _wkv_bwd(w_ptr, u_ptr, k_ptr, v_ptr, gy_ptr, sa_ptr, sb_ptr, sp_ptr, gaT_ptr, gbT_ptr, pT_ptr,
             gk_ptr, gv_ptr, gw_ptr, gu_ptr, ga0_ptr, gb0_ptr, gp0_ptr, T, C, BLOCK_C: tl.constexpr):
    pid_b = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cs < C
    w = tl.load(w_ptr + cs, mask=cm, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + cs, mask=cm, other=0.0).to(tl.float32)
    ga = tl.load(gaT_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    gb = tl.load(gbT_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    r = -tl.load(pT_ptr + pid_b * C + cs, mask=cm, other=0.0).to(tl.float32)
    # zeros from a loaded vector, not tl.zeros: that one is a @jit helper of triton.language, which
    # the interpreter cannot run when triton was imported before TRITON_INTERPRET was set
    gw = w * 0.0
    gu = w * 0.0
    base = pid_b * T * C
    for i in range(T):
        off = base + (T - 1 - i) * C + cs
        kt = tl.load(k_ptr + off, mask=cm, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=cm, other=0.0).to(tl.float32)
        gyt = tl.load(gy_ptr + off, mask=cm, other=0.0).to(tl.float32)
        a = tl.load(sa_ptr + off, mask=cm, other=0.0)
        b = tl.load(sb_ptr + off, mask=cm, other=0.0)
        p = tl.load(sp_ptr + off, mask=cm, other=0.0)
        q = tl.maximum(p, u + kt)
        e1 = tl.exp(p - q)
        e2 = tl.exp(u + kt - q)
        den = e1 * b + e2
        y = (e1 * a + e2 * vt) / den
        gyd = gyt / den
        ek = tl.exp(r + kt)
        gdiag = gyd * e2 * (vt - y)
        tl.store(gk_ptr + off, (gdiag + (ga * vt + gb) * ek).to(gk_ptr.dtype.element_ty), mask=cm)
        tl.store(gv_ptr + off, (gyd * e2 + ga * ek).to(gv_ptr.dtype.element_ty), mask=cm)
        gu += gdiag
        gw -= (ga * a + gb * b) * tl.exp(r + p - w)
        r2 = tl.maximum(r - w, -q)
        f1 = tl.exp(r - w - r2)
        f2 = tl.exp(-q - r2)
        ga = ga * f1 + gyd * f2
        gb = gb * f1 - gyd * y * f2
        r = r2
    # (ga, gb) e^r is now the gradient of the initial plain sums a_0 e^{p_0}, b_0 e^{p_0}
    a0 = tl.load(sa_ptr + base + cs, mask=cm, other=0.0)
    b0 = tl.load(sb_ptr + base + cs, mask=cm, other=0.0)
    f = tl.exp(r + tl.load(sp_ptr + base + cs, mask=cm, other=0.0))
    tl.store(ga0_ptr + pid_b * C + cs, ga * f, mask=cm)
    tl.store(gb0_ptr + pid_b * C + cs, gb * f, mask=cm)
    tl.store(gp0_ptr + pid_b * C + cs, (ga * a0 + gb * b0) * f, mask=cm)
    tl.store(gw_ptr + pid_b * C + cs, gw, mask=cm)
    tl.store(gu_ptr + pid_b * C + cs, gu, mask=cm)


def _block_c(C: int) -> int:
    return min(64, triton.next_power_of_2(C))


class _WKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, k, v, a0, b0, p0):
        B, T, C = k.shape
        k, v = k.contiguous(), v.contiguous()
        w32, u32 = w.float().contiguous(), u.float().contiguous()
        a0, b0, p0 = (x.float().contiguous() for x in (a0, b0, p0))
        y = torch.empty_like(k)
        aT, bT, pT = (torch.empty(B, C, dtype=torch.float32, device=k.device) for _ in range(3))
        save = any(ctx.needs_input_grad)
        saved = [torch.empty(B, T, C, dtype=torch.float32, device=k.device) if save else aT for _ in range(3)]
        grid = (B, triton.cdiv(C, _block_c(C)))
        _wkv_fwd[grid](w32, u32, k, v, y, a0, b0, p0, aT, bT, pT, *saved, T, C, SAVE=save, BLOCK_C=_block_c(C))
        if save:
            ctx.save_for_backward(w32, u32, k, v, *saved, pT)
            ctx.dtypes = (w.dtype, u.dtype, a0.dtype)
        ctx.mark_non_differentiable(pT)
        return y, aT, bT, pT

    @staticmethod
    def backward(ctx, gy, gaT, gbT, _gpT):
        w, u, k, v, sa, sb, sp, pT = ctx.saved_tensors
        B, T, C = k.shape
        gy = torch.zeros_like(k) if gy is None else gy.contiguous()
        gaT = torch.zeros_like(pT) if gaT is None else gaT.float().contiguous()
        gbT = torch.zeros_like(pT) if gbT is None else gbT.float().contiguous()
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        gw, gu, ga0, gb0, gp0 = (torch.empty(B, C, dtype=torch.float32, device=k.device) for _ in range(5))
        grid = (B, triton.cdiv(C, _block_c(C)))
        _wkv_bwd[grid](w, u, k, v, gy, sa, sb, sp, gaT, gbT, pT, gk, gv, gw, gu, ga0, gb0, gp0, T, C,
                       BLOCK_C=_block_c(C))
        wd, ud, _ = ctx.dtypes
        return gw.sum(0).to(wd), gu.sum(0).to(ud), gk, gv, ga0, gb0, gp0


def wkv_triton(w, u, k, v, state=None, output_final_state: bool = False):
    """k, v (B, T, C); w, u (C,); state (a, b, p) (B, C) or None -> (wkv (B, T, C), state | None).
    Computes in float32 (a float64 input is computed in float32 too)."""
    B, T, C = k.shape
    if state is None:
        a0 = torch.zeros(B, C, dtype=torch.float32, device=k.device)
        state = (a0, a0.clone(), torch.full_like(a0, NEG_INF))
    y, aT, bT, pT = _WKV.apply(w, u, k, v, *state)
    return y, ((aT, bT, pT) if output_final_state else None)
