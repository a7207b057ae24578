"""Shared statistical check for samplers (decoders README, equivalence 7): the frequencies of
many fixed-seed draws must match the distribution the sampler claims to draw from."""

from __future__ import annotations

import torch


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-squared goodness-of-fit p-value of `counts` (V,) against `probs` (V,).

    Categories with probability 0 must have count 0 (else p = 0: the sampler drew an excluded
    token); the others are pooled so every expected count is >= 5 (the usual validity rule).
    p = Q(k/2, x/2), the regularised upper incomplete gamma function, k = categories - 1.
    """
    counts, probs = counts.double(), probs.double()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    keep = probs > 0
    counts, probs = counts[keep], probs[keep] / probs[keep].sum()
    n = counts.sum()
    order = torch.argsort(probs, descending=True)
    pooled_c, pooled_e, acc_c, acc_e = [], [], 0.0, 0.0
    for i in order.tolist():  # pool the rarest categories together
        acc_c += float(counts[i])
        acc_e += float(probs[i] * n)
        if acc_e >= 5:
            pooled_c.append(acc_c)
            pooled_e.append(acc_e)
            acc_c = acc_e = 0.0
    if acc_e > 0:
        if pooled_e:
            pooled_c[-1] += acc_c
            pooled_e[-1] += acc_e
        else:
            pooled_c, pooled_e = [acc_c], [acc_e]
    if len(pooled_e) < 2:
        return 1.0
    c, e = torch.tensor(pooled_c, dtype=torch.float64), torch.tensor(pooled_e, dtype=torch.float64)
    stat = ((c - e) ** 2 / e).sum()
    dof = torch.tensor((len(pooled_e) - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(dof, stat / 2))


def draw_counts(choose, scores: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """Counts (V,) of `draws` ids picked by choose(scores (draws, V), generator) from one row of
    scores repeated `draws` times (one call, fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    ids = choose(scores.expand(draws, -1).contiguous(), generator)
    return torch.bincount(ids, minlength=scores.shape[-1])
