"""Several reward functions with weights, combined as TRL's GRPOTrainer combines them.

For N completions and F functions: per_function (N, F) float32 holds each function's value, NaN
where it returned None (does not apply); total (N,) = nansum_f(w_f * per_function[:, f]), and NaN
for a row where every function returned None (unscorable: an on-policy objective must leave it
out of group statistics and give it no advantage, as TRL >= 1.x does). Metrics use TRL's names:
`rewards/<name>/mean` and `rewards/<name>/std` (nan-aware, std unbiased) per function, and
`reward`, the nan-aware mean of total.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch

__all__ = ["RewardScores", "RewardSet", "nanstd"]

RewardFunction = Callable[..., Sequence[Any]]


def nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased standard deviation ignoring NaN entries (n - 1 in the denominator, n = non-NaN
    count; NaN when n < 2), over `dim` or all of x."""
    kept = ~torch.isnan(x)
    count = kept.sum() if dim is None else kept.sum(dim)
    mean = torch.nanmean(x) if dim is None else torch.nanmean(x, dim=dim, keepdim=True)
    squares = torch.where(kept, (x - mean) ** 2, torch.zeros_like(x))
    total = squares.sum() if dim is None else squares.sum(dim)
    return torch.sqrt(total / (count - 1))


class RewardScores(NamedTuple):
    """per_function (N, F) float32 (NaN = the function returned None), total (N,) float32 (NaN =
    unscorable), names (F,) of the functions in column order."""

    per_function: torch.Tensor
    total: torch.Tensor
    names: tuple[str, ...]


def _name_of(fn: RewardFunction) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


class RewardSet:
    """Reward functions (a mapping name -> function, or a sequence named by the functions' own
    names) with weights (a mapping or a sequence in the same order; default 1.0 each).

    scores = rewards(prompts, completions, **columns) -> RewardScores; every function is called as
    fn(prompts=..., completions=..., **columns) and must return one number or None per completion.
    """

    def __init__(self, functions: Mapping[str, RewardFunction] | Sequence[RewardFunction],
                 weights: Mapping[str, float] | Sequence[float] | None = None):
        if isinstance(functions, Mapping):
            names, fns = [str(k) for k in functions], list(functions.values())
        else:
            fns = list(functions)
            names = [_name_of(f) for f in fns]
        if not fns:
            raise ValueError("a RewardSet needs at least one reward function")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"reward functions named twice: {', '.join(twice)}; give them names "
                             "(a mapping name -> function)")
        for name, fn in zip(names, fns):
            if not callable(fn):
                raise ValueError(f"reward {name!r} is {fn!r}, not a function")
        if weights is None:
            ws = [1.0] * len(fns)
        elif isinstance(weights, Mapping):
            unknown = sorted(set(map(str, weights)) - set(names))
            if unknown:
                raise ValueError(f"weights for unknown rewards: {', '.join(unknown)}; rewards: {', '.join(names)}")
            ws = [weights.get(n, 1.0) for n in names]
        else:
            ws = list(weights)
            if len(ws) != len(fns):
                raise ValueError(f"{len(ws)} weights for {len(fns)} reward functions; give one weight per function")
        for name, w in zip(names, ws):
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
                raise ValueError(f"weight of reward {name!r} is {w!r}; allowed: a finite number")
        self.names: tuple[str, ...] = tuple(names)
        self.functions: tuple[RewardFunction, ...] = tuple(fns)
        self.weights = torch.tensor([float(w) for w in ws], dtype=torch.float32)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **columns: Any) -> RewardScores:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions; repeat each prompt once per completion")
        for key, values in columns.items():
            if len(values) != n:
                raise ValueError(f"column {key!r} has {len(values)} values for {n} completions; one per completion")
        per_function = torch.empty(n, len(self.functions), dtype=torch.float32)
        for j, (name, fn) in enumerate(zip(self.names, self.functions)):
            values = list(fn(prompts=list(prompts), completions=list(completions), **columns))
            if len(values) != n:
                raise ValueError(f"reward {name!r} returned {len(values)} values for {n} completions; "
                                 "it must return one number or None per completion")
            for i, v in enumerate(values):
                if v is None:
                    per_function[i, j] = math.nan
                elif isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ValueError(f"reward {name!r} returned {v!r} for completion {i}; allowed: a finite number, "
                                     "or None when it does not apply")
                else:
                    per_function[i, j] = float(v)
        total = (per_function * self.weights).nansum(dim=1)
        total[torch.isnan(per_function).all(dim=1)] = math.nan
        return RewardScores(per_function, total, self.names)

    @staticmethod
    def metrics(scores: RewardScores) -> dict[str, float]:
        """TRL's reward metrics: rewards/<name>/mean and /std (nan-aware), reward (mean total)."""
        out: dict[str, float] = {}
        for j, name in enumerate(scores.names):
            column = scores.per_function[:, j]
            out[f"rewards/{name}/mean"] = float(torch.nanmean(column))
            out[f"rewards/{name}/std"] = float(nanstd(column))
        out["reward"] = float(torch.nanmean(scores.total))
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {float(w):g}" for n, w in zip(self.names, self.weights))
        return f"RewardSet({parts})"
