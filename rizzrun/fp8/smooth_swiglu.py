"""Smooth-SwiGLU (Fishman, Chmiel, Banner, Soudry, arXiv 2409.12517) and plain FP8 SwiGLU.

SwiGLU (arXiv 2002.05202): h = up(x) * silu(gate(x)), y = down(h); x (..., C), h (..., F), y (..., C).
Submodule names are those of rizzrun.models.llama.SwiGLU (`gate` = W2 inside Swish, `up` = W1 the
linear branch, `down` = W3), so a SwiGLU state_dict loads into this class (and, fp8=False, back).

FP8 path (fp8=True), emulated with fake quantisation (rizzrun.fp8.casts): every forward GEMM takes
E4M3 operands, y = Q(x) Q(W)^T.
- Activations (x, and the input of `down`) and the weights W1, W2 (and W3 when not smoothing) use
  delayed per-tensor scaling (amax history, margin 0): a sudden outlier saturates at +-448.
- smooth=False: plain FP8 SwiGLU, y = Q(h) Q(W3)^T -- the baseline that breaks on outliers of h.
- smooth=True: per-channel s_i = 1 / max_t |stat_{t,i}| (clamped >= 1e-12, stop-gradient, over all
  tokens of the call), y = Q(s * h) Q(W3 diag(s^-1))^T. stat = h (scale_from="h", the default: every
  channel of the cast tensor has max 1) or the linear branch up(x) (scale_from="up"; the paper's
  equivalent statement; then an outlier of the Swish branch is not removed).
  Decision: W3 diag(s^-1) is cast with *current* scaling. It depends on this batch's s (an activation
  statistic made in the same step), so its amax is known now; a delayed amax would saturate the
  column of an outlier channel exactly when s_i drops, undoing the smoothing.
- Backward: STE through every cast (rizzrun.fp8.casts.fake_quant); with fp8_grad=True the gradient
  arriving at each GEMM output is fake-quantised to E5M2 with current per-tensor scaling (the
  paper's hybrid recipe; current rather than delayed scaling for gradients is our simplification).
fp8=False computes SwiGLU exactly (no scaling at all; without quantisation the smoothing is an
identity, see `smooth_forward(..., quantize=False)`).
With fp8=True the amax histories are persistent buffers: in the state_dict, so a checkpoint holds
them and a resumed run scales bit-identically (a SwiGLU state_dict, without them, loads with empty
histories); with fp8=False they stay out of it (SwiGLU's keys exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.fp8.casts import E4M3, E5M2, DelayedScale, current_scale, fake_quant, grad_fake_quant
from rizzrun.models.llama import SwiGLU

__all__ = ["SmoothSwiGLU", "absorb_smoothing", "smoothing_scale"]

SCALE_EPS = 1e-12


def smoothing_scale(stat: torch.Tensor, eps: float = SCALE_EPS) -> torch.Tensor:
    """s_i = 1 / max(max_t |stat_{t,i}|, eps) over every leading dim; stat (..., F) -> s (F,), no gradient."""
    return stat.detach().abs().reshape(-1, stat.shape[-1]).amax(0).float().clamp_min(eps).reciprocal()


@torch.no_grad()
def absorb_smoothing(mlp: nn.Module, s: torch.Tensor) -> nn.Module:
    """Fold a static s (F,) into a SwiGLU-shaped module in place: W1 <- diag(s) W1 (rows of up.weight
    (F, C)), W3 <- W3 diag(s^-1) (columns of down.weight (C, F)). Unquantised output unchanged; the
    module then computes s * h before `down`, so its FP8 cast of h sees the smoothed channels."""
    s = s.to(mlp.up.weight.dtype)
    mlp.up.weight.mul_(s[:, None])
    mlp.down.weight.div_(s[None, :])
    return mlp


class SmoothSwiGLU(SwiGLU):
    """SwiGLU with an optional emulated FP8 forward, with (smooth=True) or without per-channel smoothing.

    Build as `SmoothSwiGLU(d_model, d_ff)` (exactly SwiGLU) or e.g. `SmoothSwiGLU(d_model, d_ff, fp8=True)`.
    x (..., d_model) -> (..., d_model). amax_history / amax_algo: the delayed-scaling history length
    and statistic ("max" | "most_recent").
    """

    def __init__(self, d_model: int, d_ff: int, fp8: bool = False, smooth: bool = True, scale_from: str = "h",
                 amax_history: int = 16, amax_algo: str = "max", fp8_grad: bool = True):
        if scale_from not in ("h", "up"):
            raise ValueError(f"scale_from={scale_from!r} is not allowed: use 'h' (max of the product) or 'up' "
                             "(max of the linear branch)")
        super().__init__(d_model, d_ff)  # gate, up, down and their init (reset_parameters): SwiGLU's
        self.fp8, self.smooth, self.scale_from, self.fp8_grad = bool(fp8), bool(smooth), scale_from, bool(fp8_grad)
        # One delayed scale per FP8 tensor role: the shared input x, the weights, the input of `down`.
        self.q_x, self.q_gate, self.q_up, self.q_h, self.q_down = (
            DelayedScale(E4M3, amax_history, amax_algo, persistent=self.fp8) for _ in range(5))

    def reset_buffers(self, device=None) -> None:
        """Empty delayed-scaling histories on `device` (`Llama.reset_buffers`, after a meta build)."""
        for q in (self.q_x, self.q_gate, self.q_up, self.q_h, self.q_down):
            q.reset_buffers(device)

    def _gemm_out(self, y: torch.Tensor) -> torch.Tensor:
        return grad_fake_quant(y, E5M2) if self.fp8_grad and torch.is_grad_enabled() else y

    def _branches(self, x: torch.Tensor, quantize: bool):
        if not quantize:
            return self.up(x), self.gate(x)
        xq = self.q_x(x)
        a = self._gemm_out(F.linear(xq, self.q_up(self.up.weight)))
        g = self._gemm_out(F.linear(xq, self.q_gate(self.gate.weight)))
        return a, g

    def smooth_forward(self, x: torch.Tensor, s: torch.Tensor | None = None, quantize: bool = True) -> torch.Tensor:
        """y = Q(s * h) Q(W3 diag(s^-1))^T; s (F,) given (static) or None (the max-based s of this call);
        quantize=False makes Q the identity (then y equals SwiGLU up to fp32 rounding)."""
        a, g = self._branches(x, quantize)
        h = a * F.silu(g)
        if s is None:
            s = smoothing_scale(h if self.scale_from == "h" else a)
        s = s.detach().to(h.dtype)
        w3 = self.down.weight / s[None, :]
        if not quantize:
            return F.linear(h * s, w3)
        hq = self.q_h(h * s)
        w3q = fake_quant(w3, E4M3, current_scale(w3.detach().abs().amax(), E4M3))
        return self._gemm_out(F.linear(hq, w3q))

    def plain_fp8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = Q(h) Q(W3)^T with delayed scaling everywhere: FP8 SwiGLU without smoothing."""
        a, g = self._branches(x, True)
        h = a * F.silu(g)
        return self._gemm_out(F.linear(self.q_h(h), self.q_down(self.down.weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp8:
            return super().forward(x)
        y = self.smooth_forward(x) if self.smooth else self.plain_fp8_forward(x)
        return y.to(x.dtype)  # the emulated GEMMs run in fp32

    def extra_repr(self) -> str:
        return f"fp8={self.fp8}, smooth={self.smooth}, scale_from={self.scale_from!r}, fp8_grad={self.fp8_grad}"
