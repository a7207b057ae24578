"""Logits processors: repetition penalty, min-new-tokens, temperature, top-k, top-p and typical.

Pure functions on logits of shape (B, V) (temperature, top-k, top-p also take (..., V)); they
return a new tensor and never modify their input. Filtered entries are set to -inf, so a softmax
afterwards gives them probability 0. Semantics follow Hugging Face `generate`
(`RepetitionPenaltyLogitsProcessor`, `MinNewTokensLengthLogitsProcessor`,
`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `TypicalLogitsWarper`), which
the tests check entry by entry. `generate` applies them in this order: the processors (repetition
penalty, then min-new-tokens) for every decoding strategy, then, only when sampling, the warpers
(temperature, then top-k, then top-p, then typical). The decoders in this package keep that
order: `decode_loop` applies the two processors, `Decoder.warp` the four warpers.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

__all__ = [
    "apply_repetition_penalty",
    "min_new_tokens_filter",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "typical_filter",
]


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


def _check_typical_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 < p <= 1):
        raise ValueError(f"typical_p={p!r} is not allowed: it must be a number with 0 < typical_p <= 1 (1 = off)")
    return float(p)


def _check_min_tokens_to_keep(m) -> int:
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"min_tokens_to_keep={m!r} is not allowed: it must be an integer >= 1")
    return int(m)


def _check_repetition_penalty(r) -> float:
    if isinstance(r, bool) or not isinstance(r, numbers.Real) or not (0 < r < math.inf):
        raise ValueError(
            f"repetition_penalty={r!r} is not allowed: it must be a finite number > 0 "
            "(1.0 = off, > 1 discourages repeats, < 1 encourages them)"
        )
    return float(r)


def _check_min_new_tokens(m) -> int:
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
        raise ValueError(f"min_new_tokens={m!r} is not allowed: it must be an integer >= 0 (0 = off)")
    return int(m)


def _normalize_eos(eos_token_id) -> list[int]:
    """None -> [], an int -> [it], a non-empty list of ints >= 0 -> itself; else ValueError."""
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, numbers.Integral) else eos_token_id
    ok = isinstance(ids, Sequence) and not isinstance(ids, str) and len(ids) > 0 and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in ids
    )
    if isinstance(eos_token_id, bool) or not ok:
        raise ValueError(
            f"eos_token_id={eos_token_id!r} is not allowed: it must be None, an int >= 0 "
            "or a non-empty list of ints >= 0"
        )
    return [int(i) for i in ids]


def _describe(x) -> str:
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_logits(logits, ndim=None) -> None:
    if (
        not isinstance(logits, torch.Tensor)
        or logits.ndim < 1
        or not logits.is_floating_point()
        or (ndim is not None and logits.ndim != ndim)
    ):
        shape = "(..., V)" if ndim is None else "(B, V)"
        raise ValueError(f"logits must be a floating-point tensor of shape {shape}, got {_describe(logits)}")


def _penalize_(scores: torch.Tensor, index: torch.Tensor, penalty: float) -> torch.Tensor:
    """In place: scores[b, index[b, j]] -> CTRL-penalized, once per distinct id; returns scores.

    Gathers the logits of every id in `index` (B, L), penalizes them and scatters them back.
    An id present several times in a row is gathered from the same unpenalized entry each time
    and written back with the same value, so repeats are penalized exactly once.
    """
    picked = scores.gather(-1, index)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter_(-1, index, picked)


def apply_repetition_penalty(
    logits: torch.Tensor, input_ids: torch.Tensor, penalty: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Repetition penalty of CTRL (Keskar et al., arXiv 1909.05858), shape (B, V) -> (B, V).

    For every id that occurs in row b of input_ids (B, L) (the prompt and the tokens generated
    so far), the logit of that id in row b is divided by `penalty` when it is >= 0 and multiplied
    by it when it is < 0, once however often the id occurs. penalty > 1 makes repeats less
    likely, penalty < 1 more likely, 1.0 is a no-op. (CTRL divides every logit by the penalty;
    the sign rule, which keeps a penalty from raising a negative logit, is Hugging Face's.)

    mask (B, L), optional: True / 1 = the id at that position counts, False / 0 = it is ignored.
    `generate` passes the attention mask of the left-padded prompt extended by ones for the
    generated tokens, which is what Hugging Face does: `generate` hands
    `RepetitionPenaltyLogitsProcessor` the number of leading padding positions of each row as
    `prompt_ignore_length`, so left padding is never penalized. Ids >= V (an embedding larger
    than the output layer) are ignored, as in Hugging Face: those tokens cannot be generated.
    """
    penalty = _check_repetition_penalty(penalty)
    _check_logits(logits, ndim=2)
    if (
        not isinstance(input_ids, torch.Tensor)
        or input_ids.ndim != 2
        or input_ids.is_floating_point()
        or input_ids.is_complex()
        or input_ids.dtype == torch.bool
        or input_ids.shape[0] != logits.shape[0]
    ):
        raise ValueError(
            f"input_ids must be an integer tensor of shape (B, L) with B = {logits.shape[0]} (the rows "
            f"of logits), got {_describe(input_ids)}"
        )
    if input_ids.numel() and bool((input_ids < 0).any()):
        raise ValueError(f"input_ids holds negative ids (min {int(input_ids.min())}); allowed: ids >= 0")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != input_ids.shape):
        raise ValueError(
            f"mask must be a tensor of the shape of input_ids {tuple(input_ids.shape)}, got {_describe(mask)}"
        )
    vocab = logits.shape[-1]
    counts = input_ids < vocab
    if mask is not None:
        counts &= mask.bool()
    # Ignored positions point at an extra column, dropped afterwards.
    index = torch.where(counts, input_ids, vocab).long()
    wide = torch.nn.functional.pad(logits, (0, 1))
    return _penalize_(wide, index, penalty)[:, :vocab].contiguous()


def min_new_tokens_filter(
    logits: torch.Tensor, num_new_tokens: int, min_new_tokens: int, eos_token_id
) -> torch.Tensor:
    """Forbid end-of-sequence until min_new_tokens tokens are generated; (B, V) -> (B, V).

    While num_new_tokens (tokens generated so far, the same for every row) < min_new_tokens, the
    logits of every id in eos_token_id (an int or a list of ints) are set to -inf; otherwise the
    logits are returned unchanged (a copy). Ids >= V are ignored. As Hugging Face's
    `MinNewTokensLengthLogitsProcessor`, which `generate` adds only when an EOS id is known and
    min_new_tokens > 0.
    """
    min_new_tokens = _check_min_new_tokens(min_new_tokens)
    if isinstance(num_new_tokens, bool) or not isinstance(num_new_tokens, numbers.Integral) or num_new_tokens < 0:
        raise ValueError(f"num_new_tokens={num_new_tokens!r} is not allowed: it must be an integer >= 0")
    eos = _normalize_eos(eos_token_id)
    _check_logits(logits, ndim=2)
    eos = [i for i in eos if i < logits.shape[-1]]
    if num_new_tokens >= min_new_tokens or not eos:
        return logits.clone()
    return logits.index_fill(-1, torch.tensor(eos, device=logits.device), -math.inf)


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


def typical_filter(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling's filter (Meister et al., arXiv 2202.00666), (..., V) -> (..., V).

    With p = softmax(logits) and its entropy H, each token's distance from the expected
    surprisal is eps(y) = |-log p(y) - H|. Tokens are ranked by eps ascending and the shortest
    prefix whose probability reaches `mass` is kept (the token that crosses `mass` included);
    every token whose eps ties the last kept one's is kept too, as are the first
    min_tokens_to_keep of the ranking; the rest is set to -inf. -inf inputs (filtered by an
    earlier warper) count as probability 0 and are never kept unless min_tokens_to_keep needs
    them. mass = 1 turns the filter off (`generate` skips the warper for typical_p = 1.0).

    Hugging Face's `TypicalLogitsWarper`, which the tests match mask for mask: entropy with
    nansum (0 * -inf terms ignored), cumulative mass in the logits' dtype, removal where
    eps > eps of the crossing token (strict, so ties survive). Small masses may drop the argmax
    when it is far more likely than "typical": that is the method, not a bug.
    """
    mass = _check_typical_p(mass)
    min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)
    _check_logits(logits)
    if mass == 1.0:
        return logits.clone()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -torch.nansum(logp * p, dim=-1, keepdim=True)
    shifted = (-logp - entropy).abs()
    sorted_shifted, order = torch.sort(shifted, dim=-1)
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    drop_sorted = sorted_shifted > sorted_shifted.gather(-1, last)
    drop_sorted[..., :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)
