"""Logits processors: temperature, top-k and top-p (nucleus) filtering.

Pure functions on logits of shape (..., V) (usually (B, V)); they return a new tensor and never
modify their input. Filtered entries are set to -inf, so a softmax afterwards gives them
probability 0. Semantics follow Hugging Face `generate` (`TemperatureLogitsWarper`,
`TopKLogitsWarper`, `TopPLogitsWarper`), which the tests check entry by entry; applied in that
order (temperature, then top-k, then top-p) they reproduce `generate(do_sample=True, ...)`.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter"]


def _check_temperature(t) -> float:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not (0 < t < math.inf):
        raise ValueError(
            f"temperature={t!r} is not allowed: it must be a finite number > 0 "
            "(use Greedy for the temperature -> 0 limit)"
        )
    return float(t)


def _check_top_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"top_k={k!r} is not allowed: it must be an integer >= 0 (0 = no top-k filtering)")
    return int(k)


def _check_top_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 < p <= 1):
        raise ValueError(f"top_p={p!r} is not allowed: it must be a number with 0 < top_p <= 1 (1 = off)")
    return float(p)


def _check_min_tokens_to_keep(m) -> int:
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"min_tokens_to_keep={m!r} is not allowed: it must be an integer >= 1")
    return int(m)


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim < 1 or not logits.is_floating_point():
        if isinstance(logits, torch.Tensor):
            got = f"{logits.dtype} tensor of shape {tuple(logits.shape)}"
        else:
            got = type(logits).__name__
        raise ValueError(f"logits must be a floating-point tensor of shape (..., V), got {got}")


def apply_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Temperature scaling: logits / t, shape (..., V) -> (..., V).

    t < 1 sharpens the distribution, t > 1 flattens it; t must be a finite number > 0.
    """
    t = _check_temperature(t)
    _check_logits(logits)
    return logits / t


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Top-k filtering (Fan et al. 2018, arXiv 1805.04833), shape (..., V) -> (..., V).

    Keeps every entry >= the k-th largest logit of its row and sets the rest to -inf, so tokens
    tied with the k-th one all survive (Hugging Face convention). k = 0 turns the filter off;
    k >= V keeps everything; k is raised to min_tokens_to_keep when smaller.
    """
    k = _check_top_k(k)
    min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)
    _check_logits(logits)
    if k == 0:
        return logits.clone()
    k = min(max(k, min_tokens_to_keep), logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Top-p (nucleus) filtering (Holtzman et al., arXiv 1904.09751), shape (..., V) -> (..., V).

    Keeps the smallest set of most probable tokens whose total probability reaches p
    (>= p) and sets the rest to -inf; the top min_tokens_to_keep tokens always survive.
    p = 1 turns the filter off (as `generate` does: it skips the warper for top_p = 1.0).

    Boundary convention (Hugging Face's): rank tokens by ascending logit; a token is dropped
    when the probability of itself plus every token ranked below it is <= 1 - p. Tokens with
    equal logits are ranked by a stable sort, i.e. among ties the lower vocabulary index counts
    as less probable and is dropped first. (HF's own unstable sort agrees with this on short
    rows; on long rows with ties its choice among the tied tokens is unspecified.)
    Probabilities are computed in float32 whatever the logits dtype.
    """
    p = _check_top_p(p)
    min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)
    _check_logits(logits)
    if p == 1.0:
        return logits.clone()
    ascending, order = torch.sort(logits, dim=-1, stable=True)
    # Tail mass rather than head mass so the comparison is the same float expression HF uses:
    # keeping "head mass before the token < p" would differ from it by rounding at the boundary.
    tail_mass = torch.softmax(ascending.float(), dim=-1).cumsum(dim=-1)
    drop_sorted = tail_mass <= 1.0 - p
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)
