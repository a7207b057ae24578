"""Generate a group of completions per prompt with any decoder, score them, summarise them
(docs/contracts.md "Rollouts" gives the rollout's tensors)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

import torch

from rizzrun.rewards.combine import RewardSet, nanstd

__all__ = ["completion_texts", "rollout_metrics", "sample_rollout", "score_rollout", "score_rows"]


@torch.no_grad()
def sample_rollout(model, decoder, batch: dict, num_generations: int, eos_id: int, pad_id: int = 0,
                   row_seeds=None) -> dict:
    """`num_generations` completions of every prompt of a `prompts` batch (prompt_ids (B, P) left-padded,
    prompt_mask (B, P), row (B,)) by `decoder.generate` (eval mode, the model's own cache; draws from the
    decoder's seed as set, or, with `row_seeds` (B*G ints, completion order), each completion from its own
    stream: then a completion does not depend on the other prompts of the batch, nor on how batches are cut
    across processes). Returns the rollout without rewards: input_ids, attention_mask,
    completion_mask, truncated, group, row, temperature (see the module docstring of rizzrun.rollouts).
    A decoder whose generate takes `num_return_sequences` (`Decoder`) prefills each prompt once and
    repeats its cache G times (same tokens); any other gets the B * G repeated prompts."""
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations={num_generations!r}: must be an integer >= 1")
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"].bool()
    B, P = prompt_ids.shape
    G = num_generations
    ids = prompt_ids.repeat_interleave(G, dim=0)
    mask = prompt_mask.repeat_interleave(G, dim=0)
    if row_seeds is not None and len(row_seeds) != B * G:
        raise ValueError(f"row_seeds has {len(row_seeds)} seeds for {B * G} completions; give one per completion")
    previous = getattr(decoder, "row_seeds", None)
    if row_seeds is not None:  # each completion from its own random stream (Decoder.row_seeds)
        decoder.row_seeds = list(row_seeds)
    try:
        if G > 1 and _takes_num_return_sequences(decoder):  # each prompt prefilled once, not G times
            out = decoder.generate(model, prompt_ids, eos_token_id=eos_id, attention_mask=prompt_mask.long(),
                                   pad_token_id=pad_id, num_return_sequences=G)
        else:
            out = decoder.generate(model, ids, eos_token_id=eos_id, attention_mask=mask.long(), pad_token_id=pad_id)
    finally:
        if row_seeds is not None:
            decoder.row_seeds = previous
    completion = out[:, P:]
    if completion.shape[1] == 0:  # max_new_tokens = 0: one empty position keeps shapes regular
        completion = completion.new_full((B * G, 1), pad_id)
        completion_mask = torch.zeros_like(completion, dtype=torch.bool)
        truncated = torch.ones(B * G, dtype=torch.bool, device=out.device)
    else:
        is_eos = completion == eos_id
        seen = is_eos.cumsum(dim=1)
        # up to and including the first EOS (TRL): positions where no EOS came before
        completion_mask = (seen - is_eos.long()) == 0
        truncated = ~is_eos.any(dim=1)
        completion = completion.masked_fill(~completion_mask, pad_id)
    return {
        "input_ids": torch.cat([ids, completion], dim=1),
        "attention_mask": torch.cat([mask, completion_mask], dim=1),
        "completion_mask": completion_mask,
        "truncated": truncated,
        "group": torch.arange(B, device=ids.device).repeat_interleave(G),
        "row": batch["row"].repeat_interleave(G),
        "temperature": torch.tensor(float(getattr(decoder, "temperature", 1.0) if getattr(decoder, "do_sample", True)
                                          else 1.0)),
    }


def _takes_num_return_sequences(decoder) -> bool:
    """Whether decoder.generate names a `num_return_sequences` parameter (a **kwargs catch-all does
    not count: it may drop it; a wrapper made with functools.wraps shows the wrapped signature)."""
    try:
        return "num_return_sequences" in inspect.signature(decoder.generate).parameters
    except (TypeError, ValueError):
        return False


def completion_texts(rollout: dict, tokenizer) -> list[str]:
    """The completions' text: tokens before the first EOS (EOS and padding dropped), ids the
    tokenizer does not have (a vocabulary padded past it) skipped."""
    texts = []
    eos = tokenizer.eos_id
    C = rollout["completion_mask"].shape[1]
    for ids, keep in zip(rollout["input_ids"][:, -C:].tolist(), rollout["completion_mask"].tolist()):
        toks = [t for t, k in zip(ids, keep) if k and t != eos and t < tokenizer.vocab_size]
        texts.append(tokenizer.decode(toks))
    return texts


def score_rollout(rollout: dict, tokenizer, rewards: RewardSet, prompts: Sequence[str],
                  columns: dict[str, Sequence[Any]] | None = None) -> tuple[list[str], dict]:
    """Score a rollout in place: `rewards` (N,) and `reward_per_function` (N, F) from the reward
    functions on (prompt, completion text) pairs. `prompts` and each of `columns` hold one value per
    prompt of the batch (B) and are repeated per completion here. Returns (completion texts, rollout)."""
    N = rollout["completion_mask"].shape[0]
    B = len(prompts)
    # The prompt of every row: from `group` when the rollout has it (so 2B prompts for B prompts x G
    # completions are refused, not spread over the rows), else row n belongs to prompt n // G.
    if "group" in rollout:
        group = [int(g) for g in rollout["group"].tolist()]
        have = max(group) + 1 if group else 0
    else:
        have = B if B and N % B == 0 else -1
        group = [n // (N // B) for n in range(N)] if have > 0 else []
    if B == 0 or B != have:
        raise ValueError(f"{B} prompts for {N} completions" + (f" of {have} prompts" if have > 0 else "")
                         + "; give one prompt per row of the prompts batch")
    texts = completion_texts(rollout, tokenizer)
    per_prompt = {k: list(v) for k, v in (columns or {}).items()}
    for key, values in per_prompt.items():
        if len(values) != B:
            raise ValueError(f"column {key!r} has {len(values)} values for {B} prompts")
    score_rows(rollout, texts, rewards, [prompts[g] for g in group],
               {k: [v[g] for g in group] for k, v in per_prompt.items()})
    return texts, rollout


def score_rows(rollout: dict, texts: Sequence[str], rewards: RewardSet, prompts: Sequence[str],
               columns: dict[str, Sequence[Any]]) -> dict:
    """Set the rollout's `rewards` (N,) and `reward_per_function` (N, F) from the reward functions on
    one (prompt, completion text, columns) per row; the rollout, returned."""
    scores = rewards(list(prompts), list(texts), **columns)
    device = rollout["completion_mask"].device
    rollout["rewards"] = scores.total.to(device)
    rollout["reward_per_function"] = scores.per_function.to(device)
    return rollout


def rollout_metrics(rollout: dict, names: Sequence[str], num_generations: int) -> dict[str, torch.Tensor]:
    """TRL 1.16's rollout metrics of a scored rollout (contracts "Rollouts"), NaN-aware: reward (mean),
    reward_std (unbiased std over the batch), frac_reward_zero_std (groups of at least two scored rewards,
    all equal), rewards/<name>/mean|std, completions/*. A NaN left (nothing scored) is reported as 0."""
    rewards = rollout["rewards"].float().cpu()
    per_fn = rollout["reward_per_function"].float().cpu()
    lengths = rollout["completion_mask"].sum(dim=1).float().cpu()
    truncated = rollout["truncated"].cpu()
    groups = rewards.view(-1, num_generations)
    if num_generations > 1:  # TRL: a group's std is undefined (NaN, not zero) below two scored rewards
        zero_std = (_spread(groups) <= 0) & ((~torch.isnan(groups)).sum(dim=1) >= 2)
    else:  # TRL's zeros when num_generations == 1
        zero_std = torch.ones(groups.shape[0], dtype=torch.bool)
    out = {
        "reward": torch.nanmean(rewards),
        "reward_std": nanstd(rewards) if rewards.numel() > 1 else torch.tensor(0.0),  # TRL: the batch's
        # A group without spread, its scored rewards all equal: compared exactly, not by the float std,
        # which is ~6e-8, not 0, for 8 rewards of 0.7 (TRL's isclose(std, 0) misses that one).
        "frac_reward_zero_std": zero_std.float().mean(),
        "completions/mean_length": lengths.mean(),
        "completions/min_length": lengths.min(),
        "completions/max_length": lengths.max(),
        "completions/clipped_ratio": truncated.float().mean(),
        "completions/mean_terminated_length": lengths[~truncated].mean() if bool((~truncated).any())
        else torch.tensor(0.0),
    }
    for j, name in enumerate(names):
        out[f"rewards/{name}/mean"] = torch.nanmean(per_fn[:, j])
        out[f"rewards/{name}/std"] = nanstd(per_fn[:, j])
    return {k: torch.nan_to_num(v.float(), nan=0.0) for k, v in out.items()}


def _spread(groups: torch.Tensor) -> torch.Tensor:
    """(B, G) rewards -> (B,) max - min over the non-NaN ones (-inf when none, 0 when one)."""
    nan = torch.isnan(groups)
    return groups.masked_fill(nan, -math.inf).amax(dim=1) - groups.masked_fill(nan, math.inf).amin(dim=1)
