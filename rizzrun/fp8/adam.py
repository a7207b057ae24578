"""AdamW with FP8 moments (Fishman et al., arXiv 2409.12517, section on FP8 optimizer states).

AdamW (Loshchilov & Hutter, arXiv 1711.05101) with torch.optim.AdamW's update (amsgrad=False,
maximize=False), computed in fp32 against fp32 master weights:
    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
Between steps the moments are stored in FP8, each with its own per-tensor scale computed from the
value being stored (current scaling, so the stored tensor never saturates):
    state["exp_avg"]            float8_e4m3fn   m * alpha_m,        alpha_m = 448 / amax|m|
    state["exp_avg_sq_sqrt"]    float8_e5m2     sqrt(v) * alpha_v,  alpha_v = 57344 / amax sqrt(v)
    state["exp_avg_scale"], state["exp_avg_sq_sqrt_scale"]: fp32 scalars; state["step"]: fp32 scalar.
Each step dequantises, updates in fp32, applies the update with the fp32 moments, then requantises.

Decision (unconfirmed in the paper: the form of the second moment): E5M2 stores sqrt(v), not v.
Per-tensor scaling anchors the largest element at 57344; E5M2 keeps values down to 2^-16, a ratio
of 2^31.8 below the max, and E4M3 keeps m down to 2^-9 / 448, a ratio of 2^17.8. Storing v, an
element whose |g| is 2^-16 of the tensor's largest has v at 2^-32 of the max: v flushes to 0 while
m survives, and the update becomes m / eps (a blow-up for eps = 1e-8). Storing sqrt(v) its ratio is
2^-16, inside the range, so wherever m is nonzero sqrt(v) is too. The cost: sqrt(v), hence the
denominator, carries E5M2's 2^-3 relative rounding instead of half of it. store_sqrt_v=False keeps the
v-storing variant (state key "exp_avg_sq") to show the failure (tests/test_fp8.py).
Rounding is to nearest (deterministic), so a resumed run continues bit-identically: load_state_dict
keeps the stored FP8 and fp32 dtypes (torch's Optimizer would cast them to the parameter's dtype).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from rizzrun.fp8.casts import E4M3, E5M2, current_scale, saturating_cast

__all__ = ["AdamWFP8", "adamw_fp8"]


def _quantize(t: torch.Tensor, dtype: torch.dtype):
    scale = current_scale(t.abs().amax(), dtype)
    return saturating_cast(t * scale, dtype), scale


class AdamWFP8(torch.optim.Optimizer):
    """torch.optim.AdamW's update with m stored in E4M3 and sqrt(v) (or v) in E5M2, per-tensor scaled.

    params: parameters or groups (fp32 master weights, updated in fp32); lr, betas, eps, weight_decay as
    in torch.optim.AdamW (defaults too). Moment memory: 2 bytes per parameter instead of 8.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, store_sqrt_v: bool = True):
        if not lr > 0:
            raise ValueError(f"lr={lr!r} is not allowed: it must be > 0")
        if not (len(tuple(betas)) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas={betas!r} is not allowed: two numbers in [0, 1)")
        if not eps > 0 or weight_decay < 0:
            raise ValueError(f"eps={eps!r} must be > 0 and weight_decay={weight_decay!r} >= 0")
        defaults = dict(lr=float(lr), betas=tuple(float(b) for b in betas), eps=float(eps),
                        weight_decay=float(weight_decay))
        super().__init__(params, defaults)
        self.store_sqrt_v = bool(store_sqrt_v)
        self._v_key = "exp_avg_sq_sqrt" if self.store_sqrt_v else "exp_avg_sq"

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        vk, vs = self._v_key, self._v_key + "_scale"
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamWFP8 does not support sparse gradients")
                g = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, dtype=E4M3, memory_format=torch.preserve_format)
                    state["exp_avg_scale"] = torch.ones((), device=p.device)
                    state[vk] = torch.zeros_like(p, dtype=E5M2, memory_format=torch.preserve_format)
                    state[vs] = torch.ones((), device=p.device)
                state["step"] += 1
                t = state["step"].item()
                m = state["exp_avg"].float() / state["exp_avg_scale"]
                v = state[vk].float() / state[vs]
                if self.store_sqrt_v:
                    v = v.square()
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                master = p.float()
                master.mul_(1 - lr * wd)
                denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
                master.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))
                p.copy_(master)
                state["exp_avg"], state["exp_avg_scale"] = _quantize(m, E4M3)
                state[vk], state[vs] = _quantize(v.sqrt_() if self.store_sqrt_v else v, E5M2)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loading, then every stored tensor back in the dtype it was saved with (exact:
        FP8 -> fp32 -> FP8 round-trips), so the FP8 moments stay FP8 and the scales stay fp32."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, entry in saved.items():
            p = params[int(index)]
            for key, value in entry.items():
                if torch.is_tensor(value):
                    self.state[p][key] = value.to(device=p.device, copy=True)


def adamw_fp8(
    model_or_params: torch.nn.Module | Iterable[torch.Tensor],
    lr: float = 3e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> AdamWFP8:
    """The runner's factory (conf/optimizer/adamw_fp8.yaml): the parameter groups and argument checks
    of rizzrun.optim.adamw (decay on ndim >= 2 only; groups in that order), with FP8 moments."""
    from rizzrun.optim import adamw

    reference = adamw(model_or_params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in reference.param_groups]
    d = reference.defaults
    return AdamWFP8(groups, lr=d["lr"], betas=d["betas"], eps=d["eps"], weight_decay=d["weight_decay"])
