"""FP8 casts, fake quantisation and per-tensor scaling (emulated FP8 on any device).

Formats (arXiv 2209.05433, the OCP FP8 formats; used by Fishman et al., arXiv 2409.12517):
E4M3 = torch.float8_e4m3fn, max 448, no inf (forward: weights and activations);
E5M2 = torch.float8_e5m2, max 57344, has inf (backward: gradients).

PyTorch's own fp32 -> e4m3fn cast changed across releases: torch 2.13.0 saturates (finite
overflow and +-inf -> +-448), older releases gave NaN for |x| > 464. `saturating_cast` clamps
first, so its result is the same on every version; the fp32 -> e5m2 cast (IEEE-like) still
rounds |x| >= 61440 to inf without the clamp.

Scaling: a tensor t is cast as Q(t) = cast(clamp(t * alpha, -M, M)) / alpha with the per-tensor
scale alpha = M / amax * 2^-margin. "Current" scaling takes amax from t itself; "delayed" scaling
(NVIDIA Transformer Engine's recipe, the one the paper uses) takes it from a history of previous
steps, so a sudden outlier saturates at +-M instead of rescaling.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["E4M3", "E5M2", "E4M3_MAX", "E5M2_MAX", "fp8_max", "saturating_cast", "unclamped_e4m3_cast", "fake_quant",
           "grad_fake_quant", "current_scale", "DelayedScale"]

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
E4M3_MAX = 448.0
E5M2_MAX = 57344.0
_MAX = {E4M3: E4M3_MAX, E5M2: E5M2_MAX}


def fp8_max(dtype: torch.dtype) -> float:
    """Largest finite value of an FP8 dtype (448 for E4M3, 57344 for E5M2)."""
    try:
        return _MAX[dtype]
    except KeyError:
        raise ValueError(f"dtype={dtype} is not an FP8 format: use torch.float8_e4m3fn or torch.float8_e5m2") from None


def saturating_cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x clamped to [-max, max] of `dtype`, then cast (round to nearest even): +-inf and finite
    overflow -> +-max, NaN stays NaN, independent of the torch version. Any shape."""
    m = fp8_max(dtype)
    return x.float().clamp(-m, m).to(dtype)  # clamp propagates NaN


def unclamped_e4m3_cast(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> e4m3fn as torch releases before 2.13 cast without a clamp (spec smooth_swiglu.md
    section 4): 448 < |x| <= 464 rounds to +-448, |x| > 464 (and +-inf) becomes NaN. For tests and
    demos of what the clamp in `saturating_cast` prevents."""
    x = x.float()
    return torch.where(x.abs() > 464, float("nan"), x.clamp(-E4M3_MAX, E4M3_MAX)).to(E4M3)


def current_scale(amax: torch.Tensor, dtype: torch.dtype, margin: int = 0) -> torch.Tensor:
    """Per-tensor scale alpha = max(dtype) / amax / 2^margin (fp32 scalar); 1 where amax is 0 or not finite."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    ok = torch.isfinite(amax) & (amax > 0)
    return torch.where(ok, fp8_max(dtype) / torch.where(ok, amax, 1.0) / 2.0 ** margin, 1.0)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dtype, scale):
        xs = x.float() * scale
        ctx.save_for_backward(xs.abs() <= fp8_max(dtype))
        return saturating_cast(xs, dtype).float() / scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def fake_quant(x: torch.Tensor, dtype: torch.dtype, scale) -> torch.Tensor:
    """Q(x) = saturating_cast(x * scale, dtype) / scale as an fp32 tensor of x's shape.

    Backward: straight-through estimator, the identity inside the representable range
    (|x * scale| <= max) and 0 where the cast saturated (the clipped STE of
    torch.fake_quantize_per_tensor_affine). `scale` is a float or a scalar tensor, not differentiated.
    """
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device).detach()
    return _FakeQuant.apply(x, dtype, scale)


class _GradFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        scale = current_scale(grad.detach().abs().amax(), ctx.dtype)
        return saturating_cast(grad * scale, ctx.dtype).float().div(scale).to(grad.dtype), None


def grad_fake_quant(x: torch.Tensor, dtype: torch.dtype = E5M2) -> torch.Tensor:
    """Identity forward; backward replaces the incoming gradient g by Q(g) in `dtype` with current
    per-tensor scaling (the gradient of a GEMM output, cast before the backward GEMMs)."""
    return _GradFakeQuant.apply(x, dtype)


class DelayedScale(nn.Module):
    """Delayed per-tensor scaling for one tensor role (Transformer Engine's DelayedScaling recipe).

    `forward(x)` returns fake_quant(x, dtype, alpha) with alpha = current_scale(a, dtype, margin)
    where a = max of the amax history (algo "max") or its most recent entry ("most_recent").
    In training mode it then records amax(x) (the next call's statistic, never this one's). With an
    empty history (first call) it uses amax(x) itself.

    The history (history,) and the count of recorded steps are buffers: with persistent=True they
    are in the state_dict, so a checkpoint holds them and a resumed run scales exactly as the
    uninterrupted one; a state_dict without them (an unquantised twin's) loads too, starting an
    empty history. persistent=False keeps them out (the state_dict keys of the unquantised twin).
    """

    def __init__(self, dtype: torch.dtype = E4M3, history: int = 16, algo: str = "max", margin: int = 0,
                 persistent: bool = True):
        super().__init__()
        fp8_max(dtype)
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history={history!r} is not allowed: it must be an integer >= 1")
        if algo not in ("max", "most_recent"):
            raise ValueError(f"algo={algo!r} is not allowed: use 'max' or 'most_recent'")
        self.dtype, self.algo, self.margin = dtype, algo, int(margin)
        self.register_buffer("amax_history", torch.zeros(history), persistent=persistent)  # [0] = most recent
        self.register_buffer("seen", torch.zeros((), dtype=torch.long), persistent=persistent)

    def reset_buffers(self, device=None) -> None:
        """An empty history on `device` (after a build on the meta device)."""
        device = self.amax_history.device if device is None else device
        self.amax_history = torch.zeros_like(self.amax_history, device=device)
        self.seen = torch.zeros((), dtype=torch.long, device=device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # A checkpoint of the unquantised twin has no statistics: keep (start) an empty history.
        for name in ("amax_history", "seen"):
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    def amax(self) -> torch.Tensor | None:
        """The amax the next cast will use; None before the first recorded step."""
        if int(self.seen) == 0:
            return None
        return self.amax_history[0] if self.algo == "most_recent" else self.amax_history.max()

    def record(self, amax: torch.Tensor) -> None:
        self.amax_history.copy_(torch.roll(self.amax_history, 1))
        self.amax_history[0] = amax
        self.seen.add_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amax_now = x.detach().abs().amax().float()
        amax = self.amax()
        scale = current_scale(amax_now if amax is None else amax, self.dtype, self.margin)
        if self.training:
            self.record(amax_now)
        return fake_quant(x, self.dtype, scale)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, history={self.amax_history.numel()}, algo={self.algo}, margin={self.margin}"
