"""Greedy decoding, and the cached decode loop every decoder shares.

The model interface the loop relies on (rizzrun Llama keeps it; see docs/contracts.md):
    cache = model.init_cache(batch_size, max_len=None, device=None, dtype=None)
    logits = model.step(input_ids (B, Tnew), cache) -> (B, Tnew, V)   # appends to the cache
    model.config.max_seq_len                                          # longest sequence allowed
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch

__all__ = ["Greedy", "decode_loop"]

ChooseNext = Callable[[torch.Tensor], torch.Tensor]


def _check_max_new_tokens(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"max_new_tokens={n!r} is not allowed: it must be an integer >= 0")
    return int(n)


def _normalize_eos(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, numbers.Integral) else eos_token_id
    ok = isinstance(ids, Sequence) and len(ids) > 0 and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in ids
    )
    if isinstance(eos_token_id, bool) or not ok:
        raise ValueError(
            f"eos_token_id={eos_token_id!r} is not allowed: it must be None, an int >= 0 "
            "or a non-empty list of ints >= 0"
        )
    return [int(i) for i in ids]


def decode_loop(
    model,
    prompt_ids: torch.Tensor,
    choose_next: ChooseNext,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Autoregressive decoding with a KV cache; returns (B, T + n), n <= max_new_tokens.

    prompt_ids: (B, T) integer tensor, T >= 1 (no padding: all prompts have length T).
    choose_next: maps float32 next-token logits (B, V) to token ids (B,) long.
    The prompt is prefilled in one `model.step`, then one token is fed per step. A row stops
    once it emits any id in eos_token_id (int or list); later positions of that row hold the
    first EOS id. The loop ends when every row has stopped or after max_new_tokens tokens,
    so n is the number of steps actually taken. Runs under torch.inference_mode() with the
    model in eval mode; the model's previous train/eval mode is restored afterwards.
    """
    if (
        not isinstance(prompt_ids, torch.Tensor)
        or prompt_ids.ndim != 2
        or prompt_ids.is_floating_point()
        or prompt_ids.is_complex()
        or prompt_ids.dtype == torch.bool
        or prompt_ids.shape[0] < 1
        or prompt_ids.shape[1] < 1
    ):
        got = (
            f"{prompt_ids.dtype} tensor of shape {tuple(prompt_ids.shape)}"
            if isinstance(prompt_ids, torch.Tensor)
            else type(prompt_ids).__name__
        )
        raise ValueError(f"prompt_ids must be an integer tensor of shape (B, T) with B, T >= 1, got {got}")
    n = _check_max_new_tokens(max_new_tokens)
    eos = _normalize_eos(eos_token_id)
    batch, prompt_len = prompt_ids.shape
    max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if max_seq_len is not None and prompt_len + n > max_seq_len:
        raise ValueError(
            f"prompt length {prompt_len} + max_new_tokens {n} = {prompt_len + n} exceeds "
            f"model.config.max_seq_len={max_seq_len}; shorten the prompt or lower max_new_tokens"
        )
    if n == 0:
        return prompt_ids.clone()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = prompt_ids.device
            cache = model.init_cache(batch, max_len=prompt_len + n, device=device)
            logits = model.step(prompt_ids, cache)[:, -1]
            eos_ids = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
            finished = torch.zeros(batch, dtype=torch.bool, device=device)
            new_tokens = []
            for i in range(n):
                token = choose_next(logits.float())
                if eos_ids is not None:
                    token = torch.where(finished, eos[0], token)
                    finished |= torch.isin(token, eos_ids)
                new_tokens.append(token)
                # No step after the last token: its logits would never be used.
                if i + 1 == n or (eos_ids is not None and bool(finished.all())):
                    break
                logits = model.step(token[:, None].to(prompt_ids.dtype), cache)[:, -1]
            out = torch.cat([prompt_ids, torch.stack(new_tokens, dim=1).to(prompt_ids.dtype)], dim=1)
    finally:
        model.train(was_training)
    # Inference tensors cannot be modified in place or saved for backward outside
    # inference mode; callers get an ordinary tensor.
    return out.clone()


class Greedy:
    """Greedy decoding: at every step take the argmax token (lowest id among exact ties).

    generate(model, prompt_ids (B, T), eos_token_id=None, max_new_tokens=None) -> (B, T + n);
    max_new_tokens given to generate overrides the constructor's (default 64).
    """

    def __init__(self, max_new_tokens: int = 64):
        self.max_new_tokens = _check_max_new_tokens(max_new_tokens)

    def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None) -> torch.Tensor:
        n = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        return decode_loop(model, prompt_ids, lambda logits: logits.argmax(dim=-1), n, eos_token_id)

    def __repr__(self) -> str:
        return f"Greedy(max_new_tokens={self.max_new_tokens})"
