"""Log-probabilities of a rollout's completion tokens under a model: what every `prompts`
objective scores with (policy, old policy, reference, teacher).

A rollout's G completions of a prompt share it: where the model can train through its decoding cache
(`Llama.trains_through_cache`), the prompt runs once per group, its cache repeated G times, and only the
completions run per row, the same logits and gradients as the forward over every copy for about half
its cost on short-answer tasks (the prompt is half of each row there)."""

from __future__ import annotations

import torch

__all__ = ["completion_logits", "completion_logps", "prompt_group_size", "token_entropy", "token_logps"]


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, C, V), targets (N, C) long -> (N, C) float32 log softmax(logits)[target]
    (logit[target] - logsumexp, in float32 whatever the logits' dtype)."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(model, rollout: dict, temperature: float | torch.Tensor | None = None,
                     with_entropy: bool = False, share_prompts: bool = True
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32: log pi(completion token t | prompt, completion < t) for every rollout row,
    from logits / temperature (default: the rollout's `temperature`, as TRL scores the sampling
    distribution); 0 where completion_mask is False. The logits are `completion_logits`' (a model
    reads left padding as `generate` does; the completion's right padding comes after every real
    token, so causal attention never reads it). Gradients flow when called outside no_grad.
    with_entropy: also return the (N, C) float32 entropy (nats, no grad) of softmax(logits /
    temperature) at those positions, from the same forward.
    share_prompts: run a group's prompt once (module docstring) when `prompt_group_size` finds groups
    and the model can; False: always the forward over every row."""
    logits = completion_logits(model, rollout, share_prompts)
    t = rollout.get("temperature") if temperature is None else temperature
    if t is not None:
        t = float(t)
        if t <= 0:
            raise ValueError(f"temperature={t}: must be > 0")
        if t != 1.0:
            logits = logits / t
    completion_mask = rollout["completion_mask"]
    logps = token_logps(logits, rollout["input_ids"][:, -completion_mask.shape[1]:]) * completion_mask
    return (logps, token_entropy(logits)) if with_entropy else logps


def completion_logits(model, rollout: dict, share_prompts: bool = True) -> torch.Tensor:
    """(N, C, V) logits at the positions that predict completion tokens 0..C-1 (temperature not applied),
    with gradients outside no_grad: the forward over prompt ++ completion with the prompt's left padding
    masked, or a group's prompt once (module docstring; share_prompts False: never)."""
    ids, mask = rollout["input_ids"], rollout["attention_mask"]
    completion_mask = rollout["completion_mask"]
    C = completion_mask.shape[1]
    P = ids.shape[1] - C
    if P < 1:
        raise ValueError(f"rollout input_ids has {ids.shape[1]} positions for {C} completion tokens: no prompt")
    padding = torch.cat([mask[:, :P].bool(), torch.ones_like(completion_mask, dtype=torch.bool)], dim=1)
    G = prompt_group_size(rollout) if share_prompts and _trains_through_cache(model) else 1
    if G > 1:
        return _shared_prompt_logits(model, ids, padding, P, G)
    logits = model(ids[:, :-1], key_padding_mask=None if bool(padding.all()) else padding[:, :-1])
    return logits[:, P - 1:]


def prompt_group_size(rollout: dict) -> int:
    """G > 1 when the rollout's rows are groups of G adjacent rows (its `group` ids) whose prompt
    positions (input_ids and attention_mask before the completion) are the same; else 1."""
    group = rollout.get("group")
    ids, mask = rollout["input_ids"], rollout["attention_mask"]
    N = ids.shape[0]
    if group is None or N < 2 or group.shape != (N,):
        return 1
    G = N // int(torch.unique_consecutive(group).numel())
    if G < 2 or N % G:
        return 1
    P = ids.shape[1] - rollout["completion_mask"].shape[1]
    for x in (group.view(-1, G), ids[:, :P].reshape(-1, G, P), mask[:, :P].reshape(-1, G, P)):
        if not bool((x == x[:, :1]).all()):
            return 1
    return G


def _trains_through_cache(model) -> bool:
    check = getattr(model, "trains_through_cache", None)
    return callable(check) and bool(check())


def _shared_prompt_logits(model, ids: torch.Tensor, padding: torch.Tensor, P: int, G: int) -> torch.Tensor:
    """(N, C, V) logits at the positions that predict completion tokens 0..C-1 of ids (N, P + C), rows in
    groups of G with one prompt: the N / G prompts through `model.step` on a fresh cache, the last
    position's logits and the cache repeated G times, then the completions' first C - 1 tokens per row."""
    N, L = ids.shape
    prompt_padding = padding[::G, :P]
    cache = model.init_cache(N // G, max_len=L - 1)
    first = model.step(ids[::G, :P], cache,
                       key_padding_mask=None if bool(prompt_padding.all()) else prompt_padding)[:, -1:]
    first = first.repeat_interleave(G, dim=0)
    if L - 1 == P:  # one completion token: nothing after the prompt to run
        return first
    return torch.cat([first, model.step(ids[:, P:-1], cache.repeat_interleave(G))], dim=1)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, rows: int = 8) -> torch.Tensor:
    """(N, C, V) logits -> (N, C) float32 entropy in nats, a few rows at a time (bounded memory)."""
    out = []
    for chunk in logits.detach().split(rows, dim=0):
        lp = torch.log_softmax(chunk.float(), dim=-1)
        out.append(-(lp.exp() * lp).sum(-1))
    return torch.cat(out, dim=0) if out else logits.new_zeros(logits.shape[:2], dtype=torch.float32)
