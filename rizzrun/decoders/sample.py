"""Ancestral sampling with temperature, top-k and top-p (nucleus, Holtzman et al., arXiv 1904.09751)."""

from __future__ import annotations

import numbers

import torch

from rizzrun.decoders.greedy import _check_max_new_tokens, decode_loop
from rizzrun.decoders.processors import (
    _check_min_new_tokens,
    _check_repetition_penalty,
    _check_temperature,
    _check_top_k,
    _check_top_p,
    apply_temperature,
    top_k_filter,
    top_p_filter,
)

__all__ = ["Sample"]


class Sample:
    """Sample each next token from softmax(top_p(top_k(processed logits / temperature))).

    The processed logits are the model's after the repetition penalty (CTRL, Keskar et al.,
    arXiv 1909.05858; 1.0 = off) and min-new-tokens (EOS forbidden until that many tokens are
    generated; 0 = off), applied by `decode_loop`; then come the warpers, temperature, top-k
    (0 = off), top-p (1.0 = off), in that order: the order of `transformers.generate(do_sample=True)`.

    Randomness comes from a private torch.Generator on the logits' device, so the global RNG is
    never consumed. With seed set, every generate() call starts from that seed: the output
    depends only on (model, prompt, settings), not on how many calls came before, which lets
    periodic eval samples be compared across checkpoints. With seed=None each call draws a fresh
    nondeterministic seed.

    generate(model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
    pad_token_id=None) -> (B, T + n); prompt_ids (B, T) tensor, left-padded when attention_mask
    is given, or a list of prompts of any lengths (see `decode_loop`).
    """

    def __init__(
        self,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        seed: int | None = None,
    ):
        self.max_new_tokens = _check_max_new_tokens(max_new_tokens)
        self.temperature = _check_temperature(temperature)
        self.top_k = _check_top_k(top_k)
        self.top_p = _check_top_p(top_p)
        self.repetition_penalty = _check_repetition_penalty(repetition_penalty)
        self.min_new_tokens = _check_min_new_tokens(min_new_tokens)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed={seed!r} is not allowed: it must be None or an integer >= 0")
        self.seed = None if seed is None else int(seed)

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """The warpers, (B, V) -> (B, V): temperature, then top-k, then top-p; off ones skipped."""
        if self.temperature != 1.0:
            scores = apply_temperature(scores, self.temperature)
        if self.top_k:
            scores = top_k_filter(scores, self.top_k)
        if self.top_p < 1.0:
            scores = top_p_filter(scores, self.top_p)
        return scores

    def _pick(self, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One token per row drawn from softmax(scores), scores being the fully processed logits."""
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(-1)

    def generate(
        self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None, pad_token_id=None
    ) -> torch.Tensor:
        n = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        generator = None

        def choose_next(scores: torch.Tensor) -> torch.Tensor:
            nonlocal generator
            if generator is None:  # on the device the logits live on
                generator = torch.Generator(device=scores.device)
                if self.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(self.seed)
            return self._pick(self.warp(scores), generator)

        return decode_loop(
            model,
            prompt_ids,
            choose_next,
            n,
            eos_token_id,
            attention_mask=attention_mask,
            pad_token_id=pad_token_id,
            repetition_penalty=self.repetition_penalty,
            min_new_tokens=self.min_new_tokens,
        )

    def __repr__(self) -> str:
        return (
            f"Sample(max_new_tokens={self.max_new_tokens}, temperature={self.temperature}, "
            f"top_k={self.top_k}, top_p={self.top_p}, repetition_penalty={self.repetition_penalty}, "
            f"min_new_tokens={self.min_new_tokens}, seed={self.seed})"
        )
