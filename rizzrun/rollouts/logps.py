"""Log-probabilities of a rollout's completion tokens under a model: what every `prompts`
objective scores with (policy, old policy, reference, teacher)."""

from __future__ import annotations

import torch

__all__ = ["completion_logps", "token_entropy", "token_logps"]


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, C, V), targets (N, C) long -> (N, C) float32 log softmax(logits)[target]
    (logit[target] - logsumexp, in float32 whatever the logits' dtype)."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(model, rollout: dict, temperature: float | torch.Tensor | None = None,
                     with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32: log pi(completion token t | prompt, completion < t) for every rollout row,
    from logits / temperature (default: the rollout's `temperature`, as TRL scores the sampling
    distribution); 0 where completion_mask is False. One forward over prompt ++ completion with
    the prompt's left padding masked (a model reads left padding as `generate` does); the
    completion's right padding comes after every real token, so causal attention never reads it.
    Gradients flow when called outside no_grad. with_entropy: also return the (N, C) float32 entropy
    (nats, no grad) of softmax(logits / temperature) at those positions, from the same forward."""
    ids, mask = rollout["input_ids"], rollout["attention_mask"]
    completion_mask = rollout["completion_mask"]
    C = completion_mask.shape[1]
    P = ids.shape[1] - C
    if P < 1:
        raise ValueError(f"rollout input_ids has {ids.shape[1]} positions for {C} completion tokens: no prompt")
    padding = torch.cat([mask[:, :P], torch.ones_like(completion_mask)], dim=1)
    inputs = ids[:, :-1]
    logits = model(inputs, key_padding_mask=None if bool(padding.all()) else padding[:, :-1])
    logits = logits[:, P - 1:]  # the positions that predict completion tokens 0..C-1
    t = rollout.get("temperature") if temperature is None else temperature
    if t is not None:
        t = float(t)
        if t <= 0:
            raise ValueError(f"temperature={t}: must be > 0")
        if t != 1.0:
            logits = logits / t
    logps = token_logps(logits, ids[:, P:]) * completion_mask
    return (logps, token_entropy(logits)) if with_entropy else logps


@torch.no_grad()
def token_entropy(logits: torch.Tensor, rows: int = 8) -> torch.Tensor:
    """(N, C, V) logits -> (N, C) float32 entropy in nats, a few rows at a time (bounded memory)."""
    out = []
    for chunk in logits.detach().split(rows, dim=0):
        lp = torch.log_softmax(chunk.float(), dim=-1)
        out.append(-(lp.exp() * lp).sum(-1))
    return torch.cat(out, dim=0) if out else logits.new_zeros(logits.shape[:2], dtype=torch.float32)
