"""Dynamic stochastic decoding (DDS; Li et al., "Dynamic Stochastic Decoding Strategy for
Open-Domain Dialogue Generation", arXiv 2406.07850): a small head reads the model's hidden states,
predicts a diversity score d in (0, 1) and a mapping turns it into the sampling temperature.

    d = DiversityHead(h)                      h: pooled prompt states (sequence) or h_t (token)
    T = mapping(d; t_min, t_max)              linear | exponential | inverse_sigmoid
    p_t = softmax(processed logits / T)       then top-k / top-p / typical as usual

Decisions where the paper text was not available (the spec marks them unconfirmed):
- mappings, d in [0, 1], t_min < t_max, each monotone increasing in d:
    linear           T = t_min + (t_max - t_min) d                 T(0) = t_min, T(1) = t_max
    exponential      T = t_min (t_max / t_min)^d                   geometric; T(0) = t_min, T(1) = t_max
    inverse_sigmoid  T = t_min + (t_max - t_min) sigmoid(k (d - 1/2))   k = 10: a sharp switch;
                     misses the ends by (t_max - t_min) sigmoid(-k/2): T(0) ~ 0.109, T(1) ~ 1.491
                     for 0.1 / 1.5 (the spec's "temperature-shift" reading; the scheduled-sampling
                     reading T_max k / (k + e^((1-d)/k')) is not used)
- head: Linear(D, H) -> tanh -> Linear(H, 1) -> sigmoid, H = D by default, run in float32.
- sequence level: h = the mean of the final-norm hidden states over the prompt's real tokens (left
  padding excluded; the EOS a runner prompt starts with included), one T per row for the whole
  reply. Token level: h_t = the hidden state whose logits the step samples from (the prompt's last
  position, then each fed token's), so T_t depends only on the tokens before t (no leakage).
- where T enters: the temperature warper's place in transformers' order. The loop applies the
  repetition penalty and min-new-tokens to the raw logits; `warp` then divides each row by its T and
  applies top-k, top-p and typical. Both processors commute with dividing by T > 0 (the penalty
  keeps signs: (x / p) / T = (x / T) / p; -inf stays -inf), so this is `transformers.generate`
  with temperature=T per row.
- T below GREEDY_BELOW (1e-3): that row takes its argmax (the T -> 0 limit; logits / T would
  overflow float32 for tiny T). The row still takes part in the draw, so the generator advances as
  for every other row.
- head=None, score=d: a constant score; DDS is then exactly `Sample(temperature=T(d))` (the neutral
  setting, the ablation baseline of every DDS table), with no hidden states read.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from torch import nn

from rizzrun.decoders.base import Decoder
from rizzrun.decoders.loop import ModelStepper

__all__ = ["DynamicTemperature", "DiversityHead", "DDSStepper", "temperature_of", "pool_prompt",
           "head_from_state", "load_head", "MAPPINGS", "GRANULARITIES", "GREEDY_BELOW"]

MAPPINGS = ("linear", "exponential", "inverse_sigmoid")
GRANULARITIES = ("sequence", "token")
GREEDY_BELOW = 1e-3


# --- the mappings -------------------------------------------------------------------------------

def _check_bounds(t_min, t_max, k) -> tuple[float, float, float]:
    for name, value in (("t_min", t_min), ("t_max", t_max), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
            raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number > 0")
    if not t_min < t_max:
        raise ValueError(f"t_min={t_min!r}, t_max={t_max!r} is not allowed: t_min must be < t_max")
    return float(t_min), float(t_max), float(k)


def temperature_of(d, mapping: str = "linear", t_min: float = 0.1, t_max: float = 1.5, k: float = 10.0) -> torch.Tensor:
    """T (same shape as d) from diversity scores d in [0, 1] (a tensor or a number), float32;
    the formulas are in the module docstring. Vectorised; monotone increasing in d."""
    t_min, t_max, k = _check_bounds(t_min, t_max, k)
    d = torch.as_tensor(d, dtype=torch.float32)
    if mapping == "linear":
        return t_min + (t_max - t_min) * d
    if mapping == "exponential":
        return t_min * torch.pow(torch.tensor(t_max / t_min, dtype=torch.float32, device=d.device), d)
    if mapping == "inverse_sigmoid":
        return t_min + (t_max - t_min) * torch.sigmoid(k * (d - 0.5))
    raise ValueError(f"mapping={mapping!r} is not allowed: allowed are " + ", ".join(map(repr, MAPPINGS)))


# --- the head -----------------------------------------------------------------------------------

class DiversityHead(nn.Module):
    """d = sigmoid(Linear(H, 1)(tanh(Linear(D, H)(h)))): (..., D) -> (..., ) float32 in (0, 1).

    d_model: D, the width of the hidden states it reads; hidden: H (None: D). It runs in float32
    with autocast off, whatever dtype its weights are kept in. `logit(h)` is the pre-sigmoid score.
    """

    def __init__(self, d_model: int, hidden: Optional[int] = None):
        super().__init__()
        for name, value in (("d_model", d_model), ("hidden", d_model if hidden is None else hidden)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= 1")
        self.d_model = int(d_model)
        self.hidden = int(d_model if hidden is None else hidden)
        self.proj = nn.Linear(self.d_model, self.hidden)
        self.out = nn.Linear(self.hidden, 1)

    def logit(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.d_model:
            raise ValueError(f"the diversity head reads hidden states of width {self.d_model}, got shape "
                             f"{tuple(h.shape)}: the head was trained on another model's states")
        with torch.autocast(device_type=h.device.type, enabled=False):
            x = torch.tanh(nn.functional.linear(h.float(), self.proj.weight.float(), self.proj.bias.float()))
            return nn.functional.linear(x, self.out.weight.float(), self.out.bias.float()).squeeze(-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(h))


def pool_prompt(hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C) float32 mean of hidden (B, T, C) over the positions where mask (B, T) bool is True
    (every position when mask is None); a row needs at least one True."""
    hidden = hidden.float()
    if mask is None:
        return hidden.mean(dim=1)
    mask = mask.to(hidden.device)
    count = mask.sum(dim=1, keepdim=True)
    if bool((count == 0).any()):
        raise ValueError("pool_prompt: a row of mask has no real token to pool")
    return (hidden * mask.unsqueeze(-1)).sum(dim=1) / count


def head_from_state(state: dict) -> DiversityHead:
    """A DiversityHead from a state dict with keys proj.weight, proj.bias, out.weight, out.bias,
    optionally under `head.` or `objective.head.` (a DiversityRegression's, a checkpoint's)."""
    for prefix in ("", "head.", "objective.head."):
        if f"{prefix}proj.weight" in state and f"{prefix}out.weight" in state:
            break
    else:
        raise ValueError(f"no diversity head in the state: expected 'head.proj.weight' and 'head.out.weight', got "
                         f"keys {sorted(state)[:8]}")
    weight = state[f"{prefix}proj.weight"]
    head = DiversityHead(weight.shape[1], weight.shape[0])
    head.load_state_dict({k: state[f"{prefix}{k}"] for k in ("proj.weight", "proj.bias", "out.weight", "out.bias")})
    return head.float()


def load_head(run_dir: Union[str, Path], checkpoint: Optional[str] = None) -> tuple[DiversityHead, tuple[str, ...]]:
    """(head, granularities it was trained at) from a run folder whose objective was
    `objective=dds_head` (rizzrun.objectives.diversity.DiversityRegression): its latest verified
    checkpoint's `objective.*` weights (rizzrun.runner.generate.objective_weights). ValueError when
    the folder is no such run."""
    from omegaconf import OmegaConf

    from rizzrun.layout import CONFIG
    from rizzrun.runner.checkpoint import checked_checkpoint
    from rizzrun.runner.generate import objective_weights

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / CONFIG).is_file():
        raise ValueError(f"head={str(run_dir)!r} is not allowed: not a rizzrun run folder (no {CONFIG}); give the "
                         "folder of a run trained with objective=dds_head")
    cfg = OmegaConf.load(run_dir / CONFIG)
    target = str(cfg.objective.get("_target_", ""))
    if not target.endswith("DiversityRegression"):
        raise ValueError(f"head={str(run_dir)!r} is not allowed: that run's objective is {target}, which trains no "
                         "diversity head; give a run trained with objective=dds_head")
    state = objective_weights(checked_checkpoint(run_dir, checkpoint))
    granularity = str(cfg.objective.get("granularity", "both"))
    trained = GRANULARITIES if granularity == "both" else (granularity,)
    return head_from_state(state), trained


# --- the stepper --------------------------------------------------------------------------------

class DDSStepper(ModelStepper):
    """`ModelStepper` that also reads the final-norm hidden states (`model.step(...,
    return_hidden=True)`) and keeps the temperature of the step it returns logits for:

    temperature (B,) float32: T of the logits last returned (what `DynamicTemperature.warp` uses)
    scores: list of (B,) diversity scores, one per returned logits (sequence level: one, at prefill)
    """

    def __init__(self, model, batch_size, max_len, device, head: nn.Module, granularity: str, to_temperature):
        super().__init__(model, batch_size, max_len, device)
        self.head, self.granularity, self.to_temperature = head, granularity, to_temperature
        self.temperature: Optional[torch.Tensor] = None
        self.scores: list[torch.Tensor] = []

    def _set(self, h: torch.Tensor) -> None:
        d = self.head(h).float().reshape(-1)
        self.scores.append(d)
        self.temperature = self.to_temperature(d)

    def prefill(self, ids, padding):
        logits, hidden = self.model.step(ids, self.cache, key_padding_mask=padding, return_hidden=True)
        self._set(pool_prompt(hidden, padding) if self.granularity == "sequence" else hidden[:, -1])
        return logits[:, -1]

    def step(self, tokens):
        if self.granularity == "sequence":
            return self.model.step(tokens, self.cache)[:, -1]
        logits, hidden = self.model.step(tokens, self.cache, return_hidden=True)
        self._set(hidden[:, -1])
        return logits[:, -1]


# --- the decoder --------------------------------------------------------------------------------

class DynamicTemperature(Decoder):
    """DDS sampling (arXiv 2406.07850): each row's temperature from a diversity head (see the module
    docstring for the formulas and decisions), then top-k / top-p / typical as `Sample`.

    granularity: "sequence" (one T per row, from the pooled prompt) | "token" (T_t per step).
    mapping: "linear" | "exponential" | "inverse_sigmoid"; t_min < t_max (defaults 0.1 / 1.5);
      k: the inverse sigmoid's sharpness (10).
    head: None (then `score` is the constant d: DDS == Sample(temperature=T(score)), the neutral
      setting), a run folder trained with objective=dds_head (loaded at the first generate:
      `load_head`; its granularity must cover this one), or an nn.Module mapping hidden states
      (..., D) -> d (...,) in [0, 1] (plain PyTorch use).
    score: the constant d in [0, 1] used when head is None (0.5).
    max_new_tokens, repetition_penalty, min_new_tokens, top_k, top_p, typical_p, seed: as `Sample`.

    After generate(): `last_temperatures` (B, S) float32, the T each row sampled each step with
    (S = 1 at sequence level; the constant's for head=None), `last_scores` likewise the d's.
    """

    def __init__(
        self,
        granularity: Literal["sequence", "token"] = "sequence",
        mapping: Literal["linear", "exponential", "inverse_sigmoid"] = "linear",
        t_min: float = 0.1,
        t_max: float = 1.5,
        k: float = 10.0,
        head: Union[None, str, nn.Module] = None,
        score: float = 0.5,
        max_new_tokens: int = 64,
        top_k: int = 0,
        top_p: float = 1.0,
        typical_p: float = 1.0,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        seed: Optional[int] = None,
    ):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, do_sample=True, top_k=top_k,
                         top_p=top_p, typical_p=typical_p, seed=seed)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity={granularity!r} is not allowed: allowed are "
                             + ", ".join(map(repr, GRANULARITIES)))
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping={mapping!r} is not allowed: allowed are " + ", ".join(map(repr, MAPPINGS)))
        self.t_min, self.t_max, self.k = _check_bounds(t_min, t_max, k)
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not 0 <= score <= 1:
            raise ValueError(f"score={score!r} is not allowed: it must be a number in [0, 1]")
        if head is not None and not isinstance(head, (str, Path, nn.Module)):
            raise ValueError(f"head={head!r} is not allowed: it must be null, a run folder (objective=dds_head) "
                             "or an nn.Module")
        if isinstance(head, (str, Path)) and not Path(head).expanduser().is_dir():
            raise ValueError(f"head={str(head)!r} is not allowed: no such folder; give a run folder trained with "
                             "objective=dds_head")
        self.granularity, self.mapping, self.score = granularity, mapping, float(score)
        self.head = str(head) if isinstance(head, Path) else head
        self._head_module: Optional[nn.Module] = head if isinstance(head, nn.Module) else None
        self._active: Optional[DDSStepper] = None
        self.last_temperatures: Optional[torch.Tensor] = None
        self.last_scores: Optional[torch.Tensor] = None

    def temperature_for(self, d) -> torch.Tensor:
        """T(d) under this decoder's mapping and bounds."""
        return temperature_of(d, self.mapping, self.t_min, self.t_max, self.k)

    def _head(self) -> nn.Module:
        if self._head_module is None:
            head, trained = load_head(self.head)
            if self.granularity not in trained:
                raise ValueError(f"granularity={self.granularity!r} is not allowed with head={self.head!r}: that "
                                 f"head was trained at granularity {trained[0]!r} only; set "
                                 f"decoder.granularity={trained[0]} or train with objective.granularity=both")
            self._head_module = head
        return self._head_module

    def stepper(self, model, batch_size, max_len, device):
        if self.head is None:
            self._active = None
            return ModelStepper(model, batch_size, max_len, device)
        head = self._head().to(device)
        self._active = DDSStepper(model, batch_size, max_len, device, head, self.granularity, self.temperature_for)
        return self._active

    def _row_temperatures(self, scores: torch.Tensor) -> torch.Tensor:
        if self._active is None:
            return self.temperature_for(torch.full((scores.shape[0],), self.score)).to(scores.device)
        return self._active.temperature.to(scores.device)

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, V) -> (B, V): each row / its T (rows with T < GREEDY_BELOW: 0 at the argmax, -inf
        elsewhere), then top-k, top-p, typical."""
        t = self._row_temperatures(scores)
        if self.head is None:  # one T for every row: exactly Sample's temperature warper
            scores = scores / float(t[0])
        else:
            scores = scores / t[:, None]
        cold = t < GREEDY_BELOW
        if bool(cold.any()):
            onehot = torch.full_like(scores, -math.inf).scatter_(-1, scores.argmax(-1, keepdim=True), 0.0)
            scores = torch.where(cold[:, None], onehot, scores)
        return self.truncate(scores)

    def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
                 pad_token_id=None, num_return_sequences: int = 1) -> torch.Tensor:
        try:  # num_return_sequences > 1: with a head, every copy prefilled (DDSStepper does not expand)
            out = super().generate(model, prompt_ids, eos_token_id, max_new_tokens, attention_mask, pad_token_id,
                                   num_return_sequences)
            if self._active is not None and self._active.scores:
                self.last_scores = torch.stack(self._active.scores, dim=1).clone()
            elif self.head is None:
                self.last_scores = torch.full((out.shape[0], 1), self.score)
            else:  # nothing generated (max_new_tokens=0): no temperature was used
                self.last_scores = torch.empty(out.shape[0], 0)
            self.last_temperatures = self.temperature_for(self.last_scores)
        finally:
            self._active = None
        return out

    def settings(self) -> dict:
        keys = ("granularity", "mapping", "t_min", "t_max", "k", "head", "score", "max_new_tokens", "top_k", "top_p",
                "typical_p", "repetition_penalty", "min_new_tokens", "seed")
        out = {key: getattr(self, key) for key in keys}
        if isinstance(out["head"], nn.Module):
            out["head"] = type(out["head"]).__name__
        return out
