"""OPAD, principle-guided decoding (Zhu, Liu, Zhang, Guo, Mao, arXiv 2502.14204, ICLR 2025).

One model read twice per token: with a principle c put before the prompt (pi_c(. | c, x, y_<t), the
constrained context) and without it (pi(. | x, y_<t), the unconstrained one), each in its own
decoding cache, both advanced with the same emitted tokens. The per-step reward is the log-ratio
r_t(y) = log pi_c(y) - log pi(y), and the KL-regularised optimum around pi_c is

    pi*(y) = pi_c(y) exp(beta r_t(y)) / Z_t,   log pi* = (1 + beta) log pi_c - beta log pi + const,

classifier-free guidance on log-probabilities with scale 1 + beta; beta = 0 is decoding the
principle-prompted model. Costs two forward passes per token (about half Greedy's tokens/s).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch

from rizzrun.decoders.base import Decoder

__all__ = ["PrincipleGuided", "guided_log_probs", "DEFAULT_PRINCIPLE"]

DEFAULT_PRINCIPLE = "Please be helpful, honest and harmless.\n"
_MODES = ("math", "code")


def _finite_floor(log_u: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """log_u with each -inf replaced by its row's smallest finite value; a row with no finite
    value becomes `fallback` (reward 0 there)."""
    finite = torch.isfinite(log_u)
    floor = torch.where(finite, log_u, math.inf).amin(dim=-1, keepdim=True)
    out = torch.where(finite, log_u, floor)
    return torch.where(finite.any(dim=-1, keepdim=True), out, fallback)


def guided_log_probs(base: torch.Tensor, reward_c: torch.Tensor, reward_u: torch.Tensor, beta: float) -> torch.Tensor:
    """log_softmax(base + beta * (reward_c - reward_u)), all (B, V) float32, with the -inf rules:

    - a token with base = -inf or reward_c = -inf (impossible under the constrained model) stays
      -inf, whatever reward_u is (no -inf - (-inf) = NaN);
    - a token with reward_u = -inf but the other two finite would get +inf and all the mass:
      its reward_u is clamped to the row's smallest finite reward_u (the strongest penalty the
      unconstrained model gives any token it allows); a row with no finite reward_u gets reward 0.

    Math mode calls it with base = reward_c = log pi_c and reward_u = log pi.
    """
    if beta == 0:
        return torch.log_softmax(base, dim=-1)
    if not bool(torch.isinf(reward_u).any()):
        # -inf in base or reward_c alone gives -inf (never NaN): no masking needed
        return torch.log_softmax(base + beta * (reward_c - reward_u), dim=-1)
    impossible = (base == -math.inf) | (reward_c == -math.inf)
    reward_u = _finite_floor(reward_u, reward_c)
    combined = base + beta * (reward_c - reward_u)
    return torch.log_softmax(combined.masked_fill(impossible, -math.inf), dim=-1)


def _check_principle(principle) -> str | list[int]:
    if isinstance(principle, str):
        return principle
    if isinstance(principle, torch.Tensor):
        principle = principle.tolist()
    if isinstance(principle, (list, tuple)) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in principle
    ):
        return [int(i) for i in principle]
    raise ValueError(f"principle={principle!r:.200} is not allowed: it must be a text or a list of token ids >= 0")


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta={beta!r} is not allowed: it must be a finite number >= 0 (0 = principle prompt only)")
    return float(beta)


def _check_start_ids(start_ids) -> list[int] | None:
    if start_ids is None:
        return None
    if isinstance(start_ids, (list, tuple)) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in start_ids
    ):
        return [int(i) for i in start_ids]
    raise ValueError(f"start_ids={start_ids!r:.200} is not allowed: it must be null or a list of token ids >= 0")


class PrincipleGuided(Decoder):
    """OPAD (arXiv 2502.14204): decode from pi* = pi_c exp(beta (log pi_c - log pi)) / Z per step.

    principle: the principle c, a text (encoded with the run's tokenizer in `use_tokenizer`, on
        its own, without special tokens: end it with a separator such as a newline) or a list of
        token ids (plain-PyTorch use without a tokenizer). Empty: pi* = pi_c = pi.
    beta (>= 0): reward strength (multiplies the reward, as the released code does; the paper's
        1/beta notation is unconfirmed). 0 = decoding the principle-prompted model.
    window_mode: "math" (default): the closed form above, reward window 1.
        "code": the released code's loop (`infer_hh.py`), quirks kept: the first token comes from
        pi_c alone; from the second on, the reward sums two steps, r = (log pi_c,t + log pi_c,t-1)
        - (log pi_t + log pi_t-1), where the t-1 distributions are read at the *candidate* ids
        (so that term is not a constant), and at the first reward step the t-1 distribution is
        log_softmax of the prompt logits averaged over the row's real prompt positions (padding
        excluded; the released code averages over all positions of its unpadded single prompt).
        Scores = log_softmax(log pi_c,t + beta r). The released loop uses beta = 1 and
        temperature 1 on pi_c only; here temperature (when sampling) scales the whole log pi*.
    start_ids: token ids that open a document (BOS; the EOS rizzrun puts before a prompt). A row
        whose first real token is one of them gets the principle right after it ([BOS] c x), so
        the principle reads as the start of the document, like a system message; other rows get
        it first (c x). None: the tokenizer's BOS and EOS ids when `use_tokenizer` was called,
        else none.
    The shared knobs (max_new_tokens, repetition_penalty, min_new_tokens, do_sample, temperature,
    top_k, top_p, typical_p, seed) are `Decoder`'s; they act on the scores log pi* (B, V) float32
    (normalised log-probabilities), so the repetition penalty sees log-probabilities, and it
    counts the prompt and generated tokens, not the principle.

    The two caches: the unconstrained one holds the prompt as given (its left padding kept); the
    constrained one holds each row's principle + real prompt tokens, left-padded to the longest
    such row. The constrained context is longer by len(c): with the new tokens it must fit
    model.config.max_seq_len (ValueError otherwise). Works for any model with init_cache/step
    (rizzrun Llama, RWKV).
    """

    def __init__(
        self,
        principle: str | list[int] = DEFAULT_PRINCIPLE,
        beta: float = 1.0,
        window_mode: Literal["math", "code"] = "math",
        start_ids: list[int] | None = None,
        max_new_tokens: int = 64,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        typical_p: float = 1.0,
        seed: int | None = None,
    ):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, do_sample, temperature, top_k, top_p,
                         typical_p, seed)
        self.principle = _check_principle(principle)
        self.beta = _check_beta(beta)
        if window_mode not in _MODES:
            raise ValueError(f"window_mode={window_mode!r} is not allowed: it must be one of {', '.join(_MODES)}")
        self.window_mode = window_mode
        self.start_ids = _check_start_ids(start_ids)
        self._principle_ids = [] if self.principle == "" else (None if isinstance(self.principle, str)
                                                               else list(self.principle))
        self._tokenizer_start_ids: list[int] = []

    def use_tokenizer(self, tokenizer) -> None:
        """Encode a text principle with the run's tokenizer (no special tokens) and take its BOS
        and EOS ids as the default start_ids."""
        if isinstance(self.principle, str):
            self._principle_ids = list(tokenizer.encode(self.principle)) if self.principle else []
        ids = [getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None),
               *(getattr(tokenizer, "eos_ids", None) or ())]
        self._tokenizer_start_ids = sorted({int(i) for i in ids if isinstance(i, numbers.Integral)})

    def principle_ids(self) -> list[int]:
        """The principle's token ids (ValueError for a text principle before `use_tokenizer`)."""
        if self._principle_ids is None:
            raise ValueError(f"principle={self.principle!r:.80} is a text: call use_tokenizer(tokenizer) first (the "
                             "runner does), or pass principle as a list of token ids")
        return self._principle_ids

    def opening_ids(self) -> list[int]:
        """The ids after which the principle goes when a row starts with one (see start_ids)."""
        return self._tokenizer_start_ids if self.start_ids is None else self.start_ids

    def stepper(self, model, batch_size: int, max_len: int, device):
        return PrincipleStepper(model, batch_size, max_len, device, self.principle_ids(), self.beta,
                                self.window_mode, self.opening_ids())


class PrincipleStepper:
    """The two caches of OPAD behind the loop's stepper interface.

    prefill(ids (B, T), padding (B, T) bool or None) -> scores (B, V) float32 = log pi*
    step(tokens (B, 1)) -> scores (B, V) float32
    After every call, logits_c and logits_u (B, V) hold the raw logits of the constrained and
    unconstrained context at the last position (for inspection and tests).
    """

    def __init__(self, model, batch_size: int, max_len: int, device, principle_ids: list[int], beta: float,
                 window_mode: str = "math", opening_ids=()):
        self.model, self.batch_size, self.max_len, self.device = model, batch_size, max_len, device
        self.principle_ids, self.beta, self.window_mode = list(principle_ids), beta, window_mode
        self.opening_ids = set(opening_ids)
        self.cache_c = self.cache_u = None
        self.logits_c = self.logits_u = None
        self._prev_c = self._prev_u = None  # code mode: the t-1 log-distributions

    def constrained_prompt(self, ids: torch.Tensor, padding: torch.Tensor | None):
        """(ids_c (B, Tc) long, padding_c (B, Tc) bool or None): each row's real tokens with the
        principle inserted (after a leading opening id, else first), left-padded with id 0."""
        rows = []
        for b in range(ids.shape[0]):
            real = ids[b] if padding is None else ids[b][padding[b]]
            real = real.tolist()
            cut = 1 if real and real[0] in self.opening_ids else 0
            rows.append(real[:cut] + self.principle_ids + real[cut:])
        width = max(len(r) for r in rows)
        ids_c = torch.zeros(len(rows), width, dtype=ids.dtype, device=ids.device)
        pad_c = torch.zeros(len(rows), width, dtype=torch.bool, device=ids.device)
        for b, r in enumerate(rows):
            ids_c[b, width - len(r):] = torch.tensor(r, dtype=ids.dtype)
            pad_c[b, width - len(r):] = True
        return ids_c, (None if bool(pad_c.all()) else pad_c)

    def prefill(self, ids: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        new_tokens = self.max_len - ids.shape[1]
        ids_c, pad_c = self.constrained_prompt(ids, padding)
        limit = getattr(getattr(model, "config", None), "max_seq_len", None)
        total = ids_c.shape[1] + new_tokens
        if limit is not None and total > limit:
            raise ValueError(
                f"principle ({len(self.principle_ids)} tokens) + prompt ({ids_c.shape[1] - len(self.principle_ids)} "
                f"tokens) + max_new_tokens {new_tokens} = {total} exceeds model.config.max_seq_len={limit}; "
                "shorten the principle or the prompt, or lower max_new_tokens")
        if self.principle_ids:
            vocab = getattr(getattr(model, "config", None), "vocab_size", None)
            if vocab is not None and max(self.principle_ids) >= vocab:
                raise ValueError(f"principle ids {self.principle_ids[:20]} hold id {max(self.principle_ids)}; "
                                 f"allowed: ids < the model's vocab_size={vocab}")
        self.cache_u = model.init_cache(self.batch_size, max_len=self.max_len, device=self.device)
        self.cache_c = model.init_cache(self.batch_size, max_len=total, device=self.device)
        full_u = model.step(ids, self.cache_u, key_padding_mask=padding)
        full_c = model.step(ids_c, self.cache_c, key_padding_mask=pad_c)
        self.logits_u, self.logits_c = full_u[:, -1], full_c[:, -1]
        log_c = torch.log_softmax(self.logits_c.float(), dim=-1)
        if self.window_mode == "math":
            return guided_log_probs(log_c, log_c, torch.log_softmax(self.logits_u.float(), dim=-1), self.beta)
        # code mode: no reward for the first token; the first window term is the prompt mean
        self._prev_c = torch.log_softmax(_masked_mean(full_c, pad_c), dim=-1)
        self._prev_u = torch.log_softmax(_masked_mean(full_u, padding), dim=-1)
        return log_c

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.logits_u = self.model.step(tokens, self.cache_u)[:, -1]
        self.logits_c = self.model.step(tokens, self.cache_c)[:, -1]
        log_c = torch.log_softmax(self.logits_c.float(), dim=-1)
        log_u = torch.log_softmax(self.logits_u.float(), dim=-1)
        if self.window_mode == "math":
            return guided_log_probs(log_c, log_c, log_u, self.beta)
        scores = guided_log_probs(log_c, log_c + self._prev_c, log_u + self._prev_u, self.beta)
        self._prev_c, self._prev_u = log_c, log_u
        return scores


def _masked_mean(logits: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """(B, T, V) -> (B, V) float32: the mean over each row's real positions (padding True = real)."""
    logits = logits.float()
    if padding is None:
        return logits.mean(dim=1)
    real = padding.unsqueeze(-1)
    return torch.where(real, logits, 0.0).sum(dim=1) / real.sum(dim=1)
