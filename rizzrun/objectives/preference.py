"""What every preference objective shares: the `preference` batch, joining a prompt with its
completions, and per-token / per-sequence log-probabilities of the completions.

A `preference` batch (docs/contracts.md "Batch kinds") holds B pairs, every tensor right-padded:

    prompt_ids (B, P) long,   prompt_mask (B, P) bool    (True = a real token; real tokens first)
    chosen_ids (B, C) long,   chosen_mask (B, C) bool
    rejected_ids (B, R) long, rejected_mask (B, R) bool
    row (B,) long             the pair's id in its data (unique across the data's splits), which
                              is what a table of precomputed reference outputs is indexed by

`pair_sequences` turns it into one (2B, L) batch of next-token sequences, chosen rows first, so
the policy (and the reference) run one forward over both completions, as TRL's
`concatenated_forward` does. Labels follow the `lm` convention: labels[t] is the target of
position t, and -100 (`IGNORE`) marks every position whose target is not a completion token
(the prompt and the padding), so masks come from labels, never from attention masks.

Log-probabilities are computed in float32 with autocast off (a bf16 sum over a long completion
drifts), as logit[label] - logsumexp(logits), which never materialises a (B, T, V) log-softmax.
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE", "PREFERENCE_KEYS", "check_preference_batch", "join", "pair_sequences", "token_logps",
           "sequence_logps", "decay_weights", "completion_lengths"]

IGNORE = -100
PREFERENCE_KEYS = ("prompt_ids", "prompt_mask", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask", "row")


def check_preference_batch(batch: dict) -> None:
    """ValueError naming what is missing or mis-shaped in a `preference` batch."""
    missing = [k for k in PREFERENCE_KEYS if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}; a 'preference' batch has keys {list(PREFERENCE_KEYS)}")
    B = batch["row"].shape[0]
    for part in ("prompt", "chosen", "rejected"):
        ids, mask = batch[f"{part}_ids"], batch[f"{part}_mask"]
        if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] != B:
            raise ValueError(f"{part}_ids {tuple(ids.shape)} and {part}_mask {tuple(mask.shape)} must both be "
                             f"(B, T) with B = {B} (the rows of 'row')")


def join(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
         completion_mask: torch.Tensor, pad_id: int = 0, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real prompt tokens followed by its real completion tokens, as next-token inputs.

    prompt_* (B, P), completion_* (B, C); masks True on real tokens, which come first in a row.
    With s_i = prompt_i ++ completion_i (n_i tokens) and L = max_i n_i (or `length` >= that):
    input_ids (B, L - 1) = s_i[:-1] right-padded with pad_id; labels (B, L - 1) with
    labels[t] = s_i[t + 1] where position t + 1 holds a completion token, else IGNORE.
    """
    p = prompt_mask.sum(1)
    c = completion_mask.sum(1)
    n = p + c
    L = int(n.max()) if n.numel() else 1
    if length is not None:
        if length < L:
            raise ValueError(f"length={length} is shorter than the longest prompt + completion ({L} tokens)")
        L = length
    pos = torch.arange(L, device=prompt_ids.device).expand(prompt_ids.shape[0], L)
    in_prompt = pos < p[:, None]
    in_completion = (pos >= p[:, None]) & (pos < n[:, None])
    from_prompt = prompt_ids.gather(1, pos.clamp(max=max(prompt_ids.shape[1] - 1, 0))) if prompt_ids.shape[1] else None
    c_index = (pos - p[:, None]).clamp(0, max(completion_ids.shape[1] - 1, 0))
    from_completion = completion_ids.gather(1, c_index) if completion_ids.shape[1] else None
    seq = torch.full_like(pos, pad_id, dtype=torch.long)
    if from_prompt is not None:
        seq = torch.where(in_prompt, from_prompt.long(), seq)
    if from_completion is not None:
        seq = torch.where(in_completion, from_completion.long(), seq)
    labels = torch.where(in_completion, seq, torch.full_like(seq, IGNORE))
    return seq[:, :-1].contiguous(), labels[:, 1:].contiguous()


def pair_sequences(batch: dict, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (2B, L - 1), labels (2B, L - 1)) of a `preference` batch: rows 0..B-1 are
    prompt + chosen, rows B..2B-1 prompt + rejected, padded to one length (see `join`)."""
    check_preference_batch(batch)
    p, m = batch["prompt_ids"], batch["prompt_mask"]
    n = max(int((m.sum(1) + batch[f"{k}_mask"].sum(1)).max()) if m.shape[0] else 1 for k in ("chosen", "rejected"))
    chosen = join(p, m, batch["chosen_ids"], batch["chosen_mask"], pad_id, length=n)
    rejected = join(p, m, batch["rejected_ids"], batch["rejected_mask"], pad_id, length=n)
    return torch.cat([chosen[0], rejected[0]]), torch.cat([chosen[1], rejected[1]])


def token_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """(B, T) float32 log p(label_t) from logits (B, T, V); 0.0 where labels == ignore_index."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: "
                         "expected logits (B, T, V) with labels (B, T)")
    mask = labels != ignore_index
    safe = torch.where(mask, labels, torch.zeros_like(labels)).long()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.float()
        picked = x.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        lp = picked - torch.logsumexp(x, dim=-1)
    return lp * mask


def completion_lengths(labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """(B,) number of completion tokens (labels != ignore_index) per row."""
    return (labels != ignore_index).sum(-1)


def decay_weights(labels: torch.Tensor, gamma: float, ignore_index: int = IGNORE) -> torch.Tensor:
    """(B, T) float32 gamma ** c_t on completion tokens, 0 elsewhere; c_t = the token's index in
    its completion counted from 1 (D²PO, arXiv 2502.14340, as its code counts: the first
    completion token has weight gamma). gamma = 1 gives the plain mask."""
    mask = labels != ignore_index
    if gamma == 1.0:
        return mask.float()
    count = mask.long().cumsum(-1).float()
    return torch.pow(torch.tensor(float(gamma), device=labels.device), count) * mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, reduce: str = "sum", gamma: float = 1.0,
                   ignore_index: int = IGNORE) -> torch.Tensor:
    """(B,) float32 log-probability of each row's completion: sum_t w_t log p(y_t) with
    w_t = gamma ** c_t (`decay_weights`; all 1 for gamma = 1).

    reduce="mean" divides by the (unweighted) number of completion tokens, clamped to >= 1 (an
    empty completion scores 0), as the D²PO code does for its length-normalised losses."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce={reduce!r} is not allowed: allowed are 'sum', 'mean'")
    total = (token_logps(logits, labels, ignore_index) * decay_weights(labels, gamma, ignore_index)).sum(-1)
    if reduce == "mean":
        total = total / completion_lengths(labels, ignore_index).clamp_min(1)
    return total
