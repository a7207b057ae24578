"""Optimizer and learning-rate schedules.

AdamW (Loshchilov & Hutter, arXiv 1711.05101) with weight decay on matrices only, and
LambdaLR schedules: linear warmup + cosine decay (SGDR, Loshchilov & Hutter, arXiv 1608.03983,
one cycle without restarts) and linear warmup + constant.

Used from Hydra with `_partial_: true`: the config fixes the hyper-parameters and the runner
calls `adamw(model)` then `warmup_cosine(optimizer)`.

Step convention for the schedules: the runner calls `scheduler.step()` once after every
`optimizer.step()`. Counting optimizer updates from k = 1, update k runs with the factor
f(k) defined below (LambdaLR's last_epoch is k - 1 at that moment), so no update is wasted
at lr = 0 and the last update of a `total_steps` run uses exactly min_lr_ratio * lr.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["adamw", "warmup_cosine", "constant", "default_warmup", "DEFAULT_WARMUP_CAP", "DEFAULT_WARMUP_DIVISOR"]

# warmup_steps=None (conf/scheduler/cosine.yaml's default) adapts to the run's length:
# min(50, total_steps // 8). Long runs keep the 50-step warmup of the fixed default it replaces
# (so the 400-step demo trains exactly as before); a short run (`trainer.max_steps=20`) warms up
# for an eighth of it and still decays. A warmup the user sets is used as given.
DEFAULT_WARMUP_CAP = 50
DEFAULT_WARMUP_DIVISOR = 8


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def adamw(
    model_or_params: torch.nn.Module | Iterable[torch.Tensor],
    lr: float = 3e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with two parameter groups, always in this order:

    param_groups[0]: parameters with ndim >= 2 (linear weights, embeddings), weight_decay given;
    param_groups[1]: parameters with ndim < 2 (norm gains, biases), weight_decay 0.

    Decay shrinks weights towards 0; for a norm gain the neutral value is 1 and a bias sets an
    offset, so decaying them only fights the model. Embeddings are decayed like any matrix
    (the GPT-2/nanoGPT choice): with tied embeddings the same matrix is the output projection,
    and the rule stays purely shape-based, so it also works for a bare iterable of parameters.
    Parameters with requires_grad=False are left out; shared (tied) parameters appear once.
    Both groups are always present (possibly empty) so checkpoints keep one layout.
    """
    if not _is_real(lr) or lr <= 0:
        raise ValueError(f"lr={lr!r} is not allowed: it must be a finite number > 0")
    if not _is_real(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} is not allowed: it must be a finite number >= 0")
    try:  # Hydra hands over a ListConfig, not a tuple
        beta_pair = tuple(betas)
    except TypeError:
        beta_pair = ()
    if len(beta_pair) != 2 or not all(_is_real(b) and 0 <= b < 1 for b in beta_pair):
        raise ValueError(f"betas={betas!r} is not allowed: it must be two numbers in [0, 1), e.g. (0.9, 0.95)")
    if not _is_real(eps) or eps <= 0:
        raise ValueError(f"eps={eps!r} is not allowed: it must be a finite number > 0")

    if isinstance(model_or_params, torch.nn.Module):
        candidates = list(model_or_params.parameters())
    elif isinstance(model_or_params, torch.Tensor):
        candidates = [model_or_params]
    else:
        try:
            candidates = list(model_or_params)
        except TypeError:
            candidates = None
        if candidates is None or not all(isinstance(p, torch.Tensor) for p in candidates):
            raise ValueError(
                "model_or_params must be an nn.Module or an iterable of parameter tensors, "
                f"got {type(model_or_params).__name__}"
            )

    decay, no_decay, seen = [], [], set()
    for p in candidates:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    if not seen:
        raise ValueError("model_or_params has no parameters with requires_grad=True to optimize")

    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    beta_pair = (float(beta_pair[0]), float(beta_pair[1]))
    return torch.optim.AdamW(groups, lr=float(lr), betas=beta_pair, eps=float(eps))


def _check_warmup(warmup_steps) -> int:
    if not _is_int(warmup_steps) or warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps!r} is not allowed: it must be an integer >= 0")
    return int(warmup_steps)


def default_warmup(total_steps: int) -> int:
    """The warmup used when warmup_steps is None: min(50, total_steps // 8), e.g. 2 for a
    20-step run, 50 from 400 steps on."""
    return min(DEFAULT_WARMUP_CAP, total_steps // DEFAULT_WARMUP_DIVISOR)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int | None = None,
    total_steps: int = 1000,
    min_lr_ratio: float = 0.1,
) -> LambdaLR:
    """Linear warmup then cosine decay to min_lr_ratio * lr, constant afterwards.

    Factor applied to each group's lr at update k = 1, 2, ... (W = warmup_steps,
    N = total_steps, m = min_lr_ratio):
        k <= W:      f = k / W                       (lr/W at the first update, lr at update W)
        W < k < N:   f = m + (1 - m) * (1 + cos(pi * (k - W) / (N - W))) / 2
        k >= N:      f = m
    E.g. W=4, N=12, m=0.1: f(1)=0.25, f(4)=1, f(8)=0.55, f(12)=0.1.
    With W == N there is no decay phase: lr rises to its peak at update N, then drops to m.
    warmup_steps=None (the config's default) means W = default_warmup(N) = min(50, N // 8), so a
    default never conflicts with a short run; an explicit W > N is refused.
    """
    if not _is_int(total_steps) or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} is not allowed: it must be an integer >= 1")
    warmup_steps = default_warmup(int(total_steps)) if warmup_steps is None else _check_warmup(warmup_steps)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps={warmup_steps} is not allowed with total_steps={total_steps}: "
            "warmup_steps must be <= total_steps"
        )
    if not _is_real(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio={min_lr_ratio!r} is not allowed: it must be a number in [0, 1]")
    w, n, m = warmup_steps, int(total_steps), float(min_lr_ratio)

    def factor(last_epoch: int) -> float:
        k = last_epoch + 1
        if k <= w:
            return k / w
        if k >= n:
            return m
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * (k - w) / (n - w)))

    return LambdaLR(optimizer, factor)


def constant(optimizer: torch.optim.Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """Linear warmup then constant lr: update k = 1, 2, ... uses lr * min(1, k / warmup_steps).

    warmup_steps = 0 means lr from the first update.
    """
    w = _check_warmup(warmup_steps)

    def factor(last_epoch: int) -> float:
        k = last_epoch + 1
        return min(1.0, k / w) if w else 1.0

    return LambdaLR(optimizer, factor)
