"""Ancestral sampling with temperature, top-k and top-p (nucleus, Holtzman et al., arXiv 1904.09751)."""

from __future__ import annotations

import numbers

import torch

from rizzrun.decoders.greedy import _check_max_new_tokens, decode_loop
from rizzrun.decoders.processors import (
    _check_temperature,
    _check_top_k,
    _check_top_p,
    apply_temperature,
    top_k_filter,
    top_p_filter,
)

__all__ = ["Sample"]


class Sample:
    """Sample each next token from softmax(top_p(top_k(logits / temperature))).

    Same processor order as Hugging Face `generate(do_sample=True)`. top_k=0 and top_p=1.0
    turn those filters off. Randomness comes from a private torch.Generator on the prompt's
    device, so the global RNG is never consumed. With seed set, every generate() call starts
    from that seed: the output depends only on (model, prompt, settings), not on how many
    calls came before, which lets periodic eval samples be compared across checkpoints.
    With seed=None each call draws a fresh nondeterministic seed.

    generate(model, prompt_ids (B, T), eos_token_id=None, max_new_tokens=None) -> (B, T + n).
    """

    def __init__(
        self,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ):
        self.max_new_tokens = _check_max_new_tokens(max_new_tokens)
        self.temperature = _check_temperature(temperature)
        self.top_k = _check_top_k(top_k)
        self.top_p = _check_top_p(top_p)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed={seed!r} is not allowed: it must be None or an integer >= 0")
        self.seed = None if seed is None else int(seed)

    def _processed_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:
            logits = apply_temperature(logits, self.temperature)
        if self.top_k:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p < 1.0:
            logits = top_p_filter(logits, self.top_p)
        return logits

    def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None) -> torch.Tensor:
        n = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        device = prompt_ids.device if isinstance(prompt_ids, torch.Tensor) else "cpu"
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)

        def choose_next(logits: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(self._processed_logits(logits), dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

        return decode_loop(model, prompt_ids, choose_next, n, eos_token_id)

    def __repr__(self) -> str:
        return (
            f"Sample(max_new_tokens={self.max_new_tokens}, temperature={self.temperature}, "
            f"top_k={self.top_k}, top_p={self.top_p}, seed={self.seed})"
        )
