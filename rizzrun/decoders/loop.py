"""The cached decode loop every decoder shares, and where it reads logits from (`ModelStepper`).

The model interface the loop relies on (rizzrun Llama and RWKV keep it; see docs/contracts.md):
    cache = model.init_cache(batch_size, max_len=None, device=None, dtype=None, **state_options)
    logits = model.step(input_ids (B, Tnew), cache) -> (B, Tnew, V)   # appends to the cache
    logits = model.step(input_ids, cache, key_padding_mask=(B, Tnew) bool)  # only for padded prompts
    logits, hidden = model.step(input_ids, cache, return_hidden=True)      # hidden (B, Tnew, C)
    model.config.max_seq_len                                          # longest sequence allowed
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

from rizzrun.decoders.processors import (
    _check_min_new_tokens,
    _check_repetition_penalty,
    _normalize_eos,
    _penalize_,
)

__all__ = ["ModelStepper", "cache_repeats", "decode_loop", "left_pad"]

ChooseNext = Callable[[torch.Tensor], torch.Tensor]


class ModelStepper:
    """Where the decode loop reads logits from: one model and one decoding cache (the default).

    prefill(ids (B, T), padding (B, T) bool or None) -> logits (B, V) of each row's last position
    step(tokens (B, 1)) -> logits (B, V) of the token just fed

    The loop calls prefill once, then step once per generated token except the last; a decoder
    that needs more (a second cache, weights switched per step, a temperature from the hidden
    states) hands the loop its own stepper with these two methods (`Decoder.stepper`). Logits may
    be in the model's dtype and may be a view the next call overwrites: the loop copies them.
    state_options go to `model.init_cache` (each layer's `init_state`, e.g. ThinK's key pruning).

    Optional, for `decode_loop(..., num_return_sequences=G)` (a prompt prefilled once, decoded G
    times): can_expand() -> bool, then, after prefill on B rows, expand(G): from then on the
    stepper holds B * G rows, row b * G + g a copy of row b. A stepper without them (or whose
    can_expand() is False) is made for the B * G repeated prompts instead and prefills each copy.
    """

    def __init__(self, model, batch_size: int, max_len: int, device=None, **state_options):
        self.model = model
        self.cache = model.init_cache(batch_size, max_len=max_len, device=device, **state_options)

    def prefill(self, ids: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        if padding is None:
            return self.model.step(ids, self.cache)[:, -1]
        return self.model.step(ids, self.cache, key_padding_mask=padding)[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.step(tokens, self.cache)[:, -1]

    def can_expand(self) -> bool:
        """Whether `expand` may follow `prefill`: the cache can repeat its rows (`cache_repeats`)
        and this class keeps no per-row state of its own, i.e. it overrides neither prefill nor
        step, or it defines its own expand (a subclass with a temperature per row, say, falls back
        to prefilling every copy unless it expands that state too)."""
        cls = type(self)
        own_rows = cls.prefill is not ModelStepper.prefill or cls.step is not ModelStepper.step
        return cache_repeats(self.cache) and (not own_rows or cls.expand is not ModelStepper.expand)

    def expand(self, repeats: int) -> None:
        """After prefill: the cache becomes B * repeats rows, row b * repeats + g a copy of row b."""
        self.cache = self.cache.repeat_interleave(repeats)


def cache_repeats(cache) -> bool:
    """Whether a decoding cache can be repeated row-wise: it has `repeat_interleave(repeats)` and,
    if it has `can_repeat_interleave()` (`DecodingCache`: every layer's state can), that says so."""
    if not callable(getattr(cache, "repeat_interleave", None)):
        return False
    check = getattr(cache, "can_repeat_interleave", None)
    return bool(check()) if callable(check) else True


# A stepper factory: (model, batch_size, max_len, device) -> an object with prefill and step.
MakeStepper = Callable[..., "ModelStepper"]

# How often the loop asks the device whether every row has finished: reading that flag makes the
# host wait for the device, so on an accelerator it is read every few steps (finished rows only
# produce padding meanwhile, and the output is cut back to where the last row finished). On the
# CPU there is nothing to overlap and the check is read every step.
_CHECK_EVERY_ACCELERATOR = 8


def _inference(model):
    """torch.inference_mode(), or torch.no_grad() for a model sharded by FSDP2 (`trainer.strategy=fsdp`):
    its parameter all-gathers need the version counters that inference tensors lack."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support
        return torch.inference_mode()
    return torch.no_grad() if isinstance(model, FSDPModule) else torch.inference_mode()


def _check_max_new_tokens(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"max_new_tokens={n!r} is not allowed: it must be an integer >= 0")
    return int(n)


def _check_pad_token_id(p) -> int | None:
    if p is not None and (isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0):
        raise ValueError(f"pad_token_id={p!r} is not allowed: it must be None or an integer >= 0")
    return None if p is None else int(p)


def _is_int_sequence(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.ndim == 1 and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    return isinstance(x, Sequence) and not isinstance(x, str) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in x
    )


def left_pad(prompts, pad_token_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts of unequal lengths: -> (input_ids (B, T) long, attention_mask (B, T) long).

    prompts: a non-empty list of non-empty sequences of ints (or 1-D integer tensors); T is the
    longest length. Row b holds T - len(prompts[b]) copies of pad_token_id, then the prompt;
    attention_mask is 0 on the padding and 1 on the prompt (the Hugging Face convention).
    """
    pad_token_id = _check_pad_token_id(pad_token_id)
    if pad_token_id is None:
        raise ValueError("pad_token_id=None is not allowed here: left_pad needs an integer >= 0")
    if (
        isinstance(prompts, (str, torch.Tensor))
        or not isinstance(prompts, Sequence)
        or len(prompts) == 0
        or not all(_is_int_sequence(p) and len(p) > 0 for p in prompts)
    ):
        raise ValueError(
            f"prompts={prompts!r} is not allowed: it must be a non-empty list of non-empty sequences "
            "of ints (or 1-D integer tensors)"
        )
    rows = [p.tolist() if isinstance(p, torch.Tensor) else [int(i) for i in p] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_token_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def _model_device(model) -> torch.device:
    first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return torch.device("cpu") if first is None else first.device


def _prepare_prompts(model, prompt_ids, attention_mask, pad: int):
    """(ids (B, T), key_padding_mask (B, T) bool or None when no row is padded)."""
    if not isinstance(prompt_ids, torch.Tensor):
        if attention_mask is not None:
            raise ValueError(
                "attention_mask is only for a (B, T) tensor of prompt_ids; a list of prompts is "
                "left-padded by generate itself, so pass attention_mask=None"
            )
        try:
            prompt_ids, attention_mask = left_pad(prompt_ids, pad, device=_model_device(model))
        except ValueError:
            raise ValueError(
                f"prompt_ids must be an integer tensor of shape (B, T) with B, T >= 1, or a non-empty "
                f"list of non-empty lists of ints, got {type(prompt_ids).__name__}: {prompt_ids!r:.200}"
            ) from None
    if (
        prompt_ids.ndim != 2
        or prompt_ids.is_floating_point()
        or prompt_ids.is_complex()
        or prompt_ids.dtype == torch.bool
        or prompt_ids.shape[0] < 1
        or prompt_ids.shape[1] < 1
    ):
        raise ValueError(
            f"prompt_ids must be an integer tensor of shape (B, T) with B, T >= 1, got "
            f"{prompt_ids.dtype} tensor of shape {tuple(prompt_ids.shape)}"
        )
    if bool((prompt_ids < 0).any()):
        raise ValueError(f"prompt_ids holds negative ids (min {int(prompt_ids.min())}); allowed: ids >= 0")
    if attention_mask is None:
        return prompt_ids, None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != prompt_ids.shape:
        got = (
            f"shape {tuple(attention_mask.shape)}"
            if isinstance(attention_mask, torch.Tensor)
            else type(attention_mask).__name__
        )
        raise ValueError(
            f"attention_mask must be a tensor of the shape of prompt_ids {tuple(prompt_ids.shape)}, got {got}"
        )
    mask = attention_mask.to(prompt_ids.device)
    real = mask != 0
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask holds values other than 0 and 1; allowed: 1 = real token, 0 = padding")
    # Left padding: in every row some 0s, then only 1s, the last position real.
    bad = ~real[:, -1] | (real[:, :-1] & ~real[:, 1:]).any(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"attention_mask row {row} is {mask[row].tolist()}: not left padding; allowed: in every row "
            "0s (padding) first, then 1s (the prompt), ending with a 1"
        )
    return prompt_ids, (None if bool(real.all()) else real)


def decode_loop(
    model,
    prompt_ids,
    choose_next: ChooseNext,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    check_every: int | None = None,
    stepper: MakeStepper | None = None,
    num_return_sequences: int = 1,
) -> torch.Tensor:
    """Autoregressive decoding with a KV cache; returns (B * G, T + n), n <= max_new_tokens,
    G = num_return_sequences.

    prompt_ids: (B, T) integer tensor, T >= 1, left-padded when attention_mask (B, T) is given
    (1 = real token, 0 = padding, Hugging Face's convention); or a list of B prompts (lists of
    ints) of any lengths, which are left-padded here with the pad id below (see `left_pad`).
    The returned rows keep that left padding, as `transformers.generate` returns them.

    Each step, the next-token logits go through the processors in the order of
    `transformers.generate`: the repetition penalty (CTRL, Keskar et al., arXiv 1909.05858;
    1.0 = off) over the prompt's real tokens and the tokens generated so far (left padding is
    not penalized), then min-new-tokens (every EOS id forbidden while fewer than min_new_tokens
    tokens have been generated; 0 = off). The result, float32 (B, V), goes to choose_next, which
    maps it to token ids (B,) long (argmax, or warpers then sampling) and must not modify it;
    it may be a buffer that the next step overwrites: copy it to keep it.

    A row stops once it emits any id in eos_token_id (int or list); its later positions hold the
    pad id: pad_token_id, else the first EOS id (Hugging Face's default). Prompts given as a list
    are left-padded with that same id, or 0 without EOS. The loop ends when every row has
    stopped or after max_new_tokens tokens, and the output is cut to the step where the last row
    stopped. Whether all rows stopped is read every check_every steps (default: every step on
    the CPU, every 8 on an accelerator, where each read stalls the host); the output is the same
    for any value.

    Logits come from `stepper(model, batch_size, max_len, device)` (default `ModelStepper`: one
    cache of max_len = T + max_new_tokens positions): the prompt is prefilled in one call (with
    the padding mask when some row is padded), then one token is fed per step, with no step after
    the last token. Runs under
    torch.inference_mode() (torch.no_grad() for a model sharded by FSDP2) with the model in eval mode; the model's previous train/eval mode is
    restored afterwards.

    num_return_sequences G >= 1 (transformers' name): G continuations of every prompt, row
    b * G + g the g-th of prompt b, exactly what the B * G prompts `prompt_ids.repeat_interleave(G,
    0)` would give (same tokens, greedy or sampled, for the same draws): the B prompts are
    prefilled once, then the stepper's cache is repeated (`ModelStepper.expand`). A stepper that
    cannot (`can_expand()` missing or False: a cache type without `repeat_interleave`, a decoder
    stepper with per-row state of its own) is made for the B * G repeated prompts instead, each
    copy prefilled as before: same output, the old cost.
    """
    n = _check_max_new_tokens(max_new_tokens)
    eos = _normalize_eos(eos_token_id)
    penalty = _check_repetition_penalty(repetition_penalty)
    min_new = _check_min_new_tokens(min_new_tokens)
    given_pad = _check_pad_token_id(pad_token_id)
    pad = given_pad if given_pad is not None else (eos[0] if eos else 0)
    if check_every is not None and (
        isinstance(check_every, bool) or not isinstance(check_every, numbers.Integral) or check_every < 1
    ):
        raise ValueError(f"check_every={check_every!r} is not allowed: it must be None or an integer >= 1")
    if (isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, numbers.Integral)
            or num_return_sequences < 1):
        raise ValueError(f"num_return_sequences={num_return_sequences!r} is not allowed: it must be an integer >= 1")
    repeats = int(num_return_sequences)
    ids, padding = _prepare_prompts(model, prompt_ids, attention_mask, pad)
    batch, prompt_len = ids.shape
    max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if max_seq_len is not None and prompt_len + n > max_seq_len:
        raise ValueError(
            f"prompt length {prompt_len} + max_new_tokens {n} = {prompt_len + n} exceeds "
            f"model.config.max_seq_len={max_seq_len}; shorten the prompt or lower max_new_tokens"
        )
    if n == 0:
        return ids.repeat_interleave(repeats, dim=0) if repeats > 1 else ids.clone()
    device = ids.device
    if check_every is None:
        check_every = 1 if device.type == "cpu" else _CHECK_EVERY_ACCELERATOR

    was_training = model.training
    model.eval()
    try:
        with _inference(model):
            out = _decode(model, ids, padding, choose_next, n, eos, pad, penalty, min_new, check_every,
                          stepper or ModelStepper, repeats)
    finally:
        model.train(was_training)
    # Inference tensors cannot be modified in place or saved for backward outside
    # inference mode; callers get an ordinary tensor.
    return out.clone()


def _repeat_rows(x, repeats: int):
    return None if x is None else x.repeat_interleave(repeats, dim=0)


def _decode(model, ids, padding, choose_next, n, eos, pad, penalty, min_new, check_every, make_stepper,
            repeats: int = 1):
    prompt_len = ids.shape[1]
    device = ids.device
    stepper = make_stepper(model, ids.shape[0], prompt_len + n, device)
    can_expand = getattr(stepper, "can_expand", None)
    if repeats > 1 and not (callable(can_expand) and can_expand()):
        # The old path, kept for steppers and caches that cannot repeat rows: every copy prefilled.
        ids, padding = _repeat_rows(ids, repeats), _repeat_rows(padding, repeats)
        stepper = make_stepper(model, ids.shape[0], prompt_len + n, device)
        repeats = 1
    logits = stepper.prefill(ids, padding)
    if repeats > 1:  # each prompt prefilled once; its G copies share that prefill from here on
        stepper.expand(repeats)
        logits = logits.repeat_interleave(repeats, dim=0)
        ids, padding = _repeat_rows(ids, repeats), _repeat_rows(padding, repeats)
    batch = ids.shape[0]
    vocab = logits.shape[-1]

    # Everything the loop writes is allocated here, once.
    out = torch.empty(batch, prompt_len + n, dtype=ids.dtype, device=device)
    out[:, :prompt_len] = ids
    scores = torch.empty(batch, vocab, dtype=torch.float32, device=device)
    history = None  # (B, T + n) long: the ids the repetition penalty gathers
    if penalty != 1.0:
        if bool((ids >= vocab).any()):
            raise ValueError(f"prompt_ids holds ids >= the model's {vocab} output logits; allowed: 0 <= id < {vocab}")
        if padding is None and ids.dtype == torch.long:
            history = out
        else:
            history = torch.empty(batch, prompt_len + n, dtype=torch.long, device=device)
            # Padding positions point at the row's last prompt token, which is real and counted
            # anyway: they add nothing to the penalty (Hugging Face ignores left padding too).
            history[:, :prompt_len] = ids if padding is None else torch.where(padding, ids, ids[:, -1:])
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    if eos and pad >= vocab:
        raise ValueError(f"pad_token_id={pad} is not allowed: it must be < the model's {vocab} output logits")
    suppressed = [i for i in eos if i < vocab]
    suppressed = torch.tensor(suppressed, device=device) if suppressed and min_new > 0 else None
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    single_eos = eos[0] if len(eos) == 1 else None
    steps = n
    for i in range(n):
        pos = prompt_len + i
        suppress = suppressed is not None and i < min_new
        if history is not None or suppress:
            # The processors work in place on the buffer, never on the model's output.
            scores.copy_(logits)
            if history is not None:
                _penalize_(scores, history[:, :pos], penalty)
            if suppress:
                scores.index_fill_(-1, suppressed, -math.inf)
            token = choose_next(scores)
        else:
            token = choose_next(logits.float())
        if eos_ids is not None:
            token = torch.where(finished, pad, token)
            finished |= (token == single_eos) if single_eos is not None else torch.isin(token, eos_ids)
        out[:, pos] = token
        if history is not None and history is not out:
            history[:, pos] = token
        # No step after the last token: its logits would never be used.
        if i + 1 == n or (eos_ids is not None and (i + 1) % check_every == 0 and bool(finished.all())):
            steps = i + 1
            break
        logits = stepper.step(out[:, pos : pos + 1])

    if eos_ids is not None and check_every > 1 and bool(finished.all()):
        # Rows may have finished before the check saw it: cut after the last row's first EOS.
        hit = torch.isin(out[:, prompt_len : prompt_len + steps], eos_ids)
        steps = int(hit.int().argmax(dim=1).max()) + 1
    return out[:, : prompt_len + steps]
