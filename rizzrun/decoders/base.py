"""`Decoder`: what every decoder shares, so that a new one is a small class.

A decoder is the decode loop (`rizzrun.decoders.loop.decode_loop`: KV cache, repetition penalty,
min-new-tokens, EOS and padding, all as `transformers.generate`) plus two choices:

    choose(scores (B, V) float32, generator) -> ids (B,)   how the next token is picked
    stepper(model, batch_size, max_len, device) -> Stepper where the loop reads logits from

The default `choose` is `transformers.generate`'s: argmax when do_sample is False, else the
warpers (temperature, top-k, top-p, typical: `warp`) then one draw from the softmax. The default
`stepper` is `ModelStepper` (one model, one cache). A method that only changes how the next token
is chosen overrides `choose` (or just its defaults: `Typical`); one that needs more forwards or
another cache (principle-guided decoding's two caches, PMPD's weight precision per step, ThinK's
pruned keys, a temperature predicted from hidden states) returns its own stepper. A decoder that
reads text (a principle prompt) gets the run's tokenizer through `use_tokenizer` before it
generates: every caller that builds decoders from a config calls it
(`rizzrun.runner.build.build_decoder`).

Randomness comes from a private torch.Generator on the logits' device, so the global RNG is
never consumed. With seed set, every generate() call starts from that seed: the output depends
only on (model, prompt, settings), not on how many calls came before (periodic samples stay
comparable across checkpoints). With seed=None each call draws a fresh nondeterministic seed.
With `row_seeds` set (a list, one per row of the next generate() call) every row draws from its own
stream instead (`RowStreams`: inverse-CDF draws from a generator per row), so a row's tokens do not
depend on which other rows share its batch: on-policy rollouts are the same whether one process or
several make them (rizzrun.rollouts.sample_rollout).
"""

from __future__ import annotations

import inspect
import numbers

import torch

from rizzrun.decoders.loop import ModelStepper, _check_max_new_tokens, decode_loop
from rizzrun.decoders.processors import (
    _check_min_new_tokens,
    _check_repetition_penalty,
    _check_temperature,
    _check_top_k,
    _check_top_p,
    _check_typical_p,
    apply_temperature,
    top_k_filter,
    top_p_filter,
    typical_filter,
)

__all__ = ["Decoder", "RowStreams"]


class RowStreams:
    """One random stream per row: `uniform(device)` -> (N,) float32, the next draw in [0, 1) of each
    row's own CPU generator (seeded by `seeds`), so a row's draws do not depend on the other rows."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, device=None) -> torch.Tensor:
        return torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(device)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, V) probabilities, (B,) uniforms in [0, 1) -> (B,) ids: the first id whose cumulative
    probability exceeds u times the row's total (a zero-probability id is never picked)."""
    cdf = probs.double().cumsum(dim=-1)
    target = (u.double() * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _check_seed(seed) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed={seed!r} is not allowed: it must be None or an integer >= 0")
    return None if seed is None else int(seed)


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: it must be true or false")
    return value


class Decoder:
    """Base decoder; see the module docstring. Knobs (the names and semantics of
    `transformers.generate`):

    max_new_tokens (>= 0), repetition_penalty (CTRL, arXiv 1909.05858; 1.0 = off),
    min_new_tokens (EOS forbidden until then; 0 = off), do_sample (False = argmax), and, when
    sampling: temperature (> 0), top_k (0 = off), top_p (1.0 = off), typical_p (locally typical
    sampling, arXiv 2202.00666; 1.0 = off), seed (None = fresh per call); compile (True: the
    decode step runs as one `torch.compile`d graph, `rizzrun.decoders.compiled`: same tokens,
    faster steps after a one-time compile per batch size and cache length; softmax-attention
    Llama only).

    generate(model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
    pad_token_id=None, num_return_sequences=1) -> (B * G, T + n); prompt_ids (B, T) tensor,
    left-padded when attention_mask is given, or a list of prompts of any lengths (see
    `decode_loop`); max_new_tokens given to generate overrides the constructor's.
    num_return_sequences G: G completions per prompt, row b * G + g the g-th of prompt b, the
    same tokens as generate(prompt_ids.repeat_interleave(G, 0), ...) (and `row_seeds` then holds
    B * G seeds, one per output row), but each prompt prefilled once and its cache repeated
    (`decode_loop`); a stepper that cannot repeat its state prefills every copy, as before.
    """

    row_seeds: list[int] | None = None  # set for a call: a random stream per row (RowStreams)

    def __init__(
        self,
        max_new_tokens: int = 64,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        typical_p: float = 1.0,
        seed: int | None = None,
        compile: bool = False,
    ):
        self.max_new_tokens = _check_max_new_tokens(max_new_tokens)
        self.repetition_penalty = _check_repetition_penalty(repetition_penalty)
        self.min_new_tokens = _check_min_new_tokens(min_new_tokens)
        self.do_sample = _check_flag("do_sample", do_sample)
        self.temperature = _check_temperature(temperature)
        self.top_k = _check_top_k(top_k)
        self.top_p = _check_top_p(top_p)
        self.typical_p = _check_typical_p(typical_p)
        self.seed = _check_seed(seed)
        self.compile = _check_flag("compile", compile)

    # --- the two choices ---------------------------------------------------------------------

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """The warpers, (B, V) -> (B, V): temperature, top-k, top-p, typical, in the order of
        `transformers.generate(do_sample=True)`; the ones that are off are skipped."""
        if self.temperature != 1.0:
            scores = apply_temperature(scores, self.temperature)
        return self.truncate(scores)

    def truncate(self, scores: torch.Tensor) -> torch.Tensor:
        """The truncation warpers after the temperature, (B, V) -> (B, V): top-k, top-p, typical."""
        if self.top_k:
            scores = top_k_filter(scores, self.top_k)
        if self.top_p < 1.0:
            scores = top_p_filter(scores, self.top_p)
        if self.typical_p < 1.0:
            scores = typical_filter(scores, self.typical_p)
        return scores

    def choose(self, scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Next ids (B,) long from the processed float32 scores (B, V), which it must not modify:
        argmax (lowest id among exact ties), or one draw from softmax(warp(scores))."""
        if not self.do_sample:
            return scores.argmax(dim=-1)
        return self._pick(self.warp(scores), generator)

    def _pick(self, warped: torch.Tensor, generator) -> torch.Tensor:
        """One id per row drawn from softmax(warped), the fully warped scores; `generator` a
        torch.Generator (one multinomial draw for the batch) or `RowStreams` (a draw per row)."""
        probs = torch.softmax(warped, dim=-1)
        if isinstance(generator, RowStreams):
            if len(generator) != probs.shape[0]:
                raise ValueError(f"row_seeds has {len(generator)} seeds for {probs.shape[0]} rows; give one per row")
            return inverse_cdf(probs, generator.uniform(probs.device))
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def stepper(self, model, batch_size: int, max_len: int, device):
        """Where logits come from for one generate() call: `ModelStepper`, or with compile=True
        `CompiledStepper` (the decode step as one compiled graph; ValueError for a model it
        cannot compile)."""
        if self.compile:
            from rizzrun.decoders.compiled import CompiledStepper

            return CompiledStepper(model, batch_size, max_len, device)
        return ModelStepper(model, batch_size, max_len, device)

    def use_tokenizer(self, tokenizer) -> None:
        """Called with the run's tokenizer before generating; a decoder that reads text keeps it."""

    def check_model(self, model) -> None:
        """Raise ValueError, naming what is missing, when this decoder cannot decode `model` (a
        decoder that needs a key/value cache, say); cheap, so a run calls it before training
        rather than failing at its first sample. Default: every model with init_cache/step."""

    # --- the loop --------------------------------------------------------------------------------

    def generate(
        self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None, pad_token_id=None,
        num_return_sequences: int = 1,
    ) -> torch.Tensor:
        n = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        generator = None

        def choose_next(scores: torch.Tensor) -> torch.Tensor:
            nonlocal generator
            if generator is None and self.do_sample and self.row_seeds is not None:
                generator = RowStreams(self.row_seeds)
            if generator is None and self.do_sample:  # on the device the logits live on
                generator = torch.Generator(device=scores.device)
                if self.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(self.seed)
            return self.choose(scores, generator)

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
            stepper=self.stepper,
            num_return_sequences=num_return_sequences,
        )

    def settings(self) -> dict:
        """The knobs, as a config would set them: the constructor's parameters of this class, in
        their order, with their values (`__repr__` shows them)."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"
