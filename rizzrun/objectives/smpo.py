"""SMPO, Simple Margin Preference Optimization: a reference-free, length-normalised margin loss on
preference pairs plus a balancing SFT loss on both completions.

No paper: the method of the Vikhr models team, library `VikhrModels/effective_llm_alignment`
(trainer `SimpleMarginPOTrainer`, 2025-03 version). Spec: ../shared/methods/objectives/smpo.md.

    l(y) = (1/|y|) sum_t log p(y_t | x, y_<t)               (completion tokens only)
    z    = l(y_w) - l(y_l) - m                              (m: the current target margin)
    L_po = max(0, -beta z)^2      smooth_lower_bound (default; = beta^2 max(0, m - delta)^2)
           -log sigmoid(beta z)   sigmoid
           max(0, -beta z)        hinge
           (beta z)^2             ipo
    L    = mean_pairs(L_po) + r CE(chosen) + (1 - r) CE(rejected)

CE is the token-mean cross-entropy over every completion token of the batch's chosen (rejected)
completions; the rejected NLL is *minimised* with weight 1 - r (a stabiliser, not unlikelihood).
Margin schedule: m = 0.01 + (target_margin - 0.01) * min(step / max_steps, 1), step = optimizer
steps done so far (`set_step`).
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Literal, Optional

import torch

from rizzrun.objectives.preference import IGNORE, pair_sequences, token_logps

__all__ = ["SMPO", "LOSS_TYPES", "MARGIN_START", "margin_at", "smpo_pair_loss", "adjust_token_logps"]

log = logging.getLogger(__name__)

LOSS_TYPES = ("smooth_lower_bound", "sigmoid", "hinge", "ipo")
MARGIN_START = 0.01  # the schedule's first margin (reference scheduler)


def _real(name: str, value, *, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high}")
        allowed = "a finite number" + (" " + " and ".join(parts) if parts else "") + (" or null" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not allowed: it must be {allowed}")
    return float(value)


def _int(name: str, value, low: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= {low}"
                         + (" or null" if allow_none else ""))
    return int(value)


def margin_at(step: int, target_margin: float, max_steps: int) -> float:
    """The scheduled margin after `step` optimizer steps: linear from MARGIN_START (step 0) to
    `target_margin` (step >= max_steps)."""
    return MARGIN_START + (target_margin - MARGIN_START) * min(step / max_steps, 1.0)


def smpo_pair_loss(delta: torch.Tensor, margin: float, beta: float, loss_type: str) -> torch.Tensor:
    """Per-pair L_po (B,) of delta = l(y_w) - l(y_l) (B,), see the module docstring."""
    z = beta * (delta - margin)
    if loss_type == "smooth_lower_bound":
        return torch.relu(-z).square()
    if loss_type == "sigmoid":
        return -torch.nn.functional.logsigmoid(z)
    if loss_type == "hinge":
        return torch.relu(-z)
    if loss_type == "ipo":
        return z.square()
    raise ValueError(f"loss_type={loss_type!r} is not allowed: allowed are " + ", ".join(map(repr, LOSS_TYPES)))


def _quantile_floor(lp: torch.Tensor, where: torch.Tensor, q: float, min_tokens: int):
    """Detached q-quantile of lp[where], or None when fewer than min_tokens are selected."""
    if int(where.sum()) < min_tokens:
        return None
    return torch.quantile(lp.detach()[where], q)


def adjust_token_logps(lp: torch.Tensor, labels: torch.Tensor, rejected: torch.Tensor, *,
                       eos_id: Optional[int] = None, lower_clip_percentile: Optional[float] = None,
                       upper_clip_percentile: Optional[float] = None, min_log_prob: Optional[float] = None,
                       min_clip_tokens: int = 50) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The intended semantics of SMPO's 2025 flags on per-token log-probs, in this order.

    lp, labels (N, T) (`token_logps` and the `join` labels), rejected (N,) bool: rows holding a
    rejected completion (the others hold chosen ones). Only completion tokens (labels != -100)
    change; everything else is returned as is.
      1. eos_id: a rejected row whose last completion token is eos_id gets lp -> -lp there.
      2. lower_clip_percentile p: q = the detached p-quantile of the rejected completion tokens'
         lp (after 1); rejected lp -> max(lp, q). Skipped when fewer than min_clip_tokens tokens.
         upper_clip_percentile p': q' = the p'-quantile of the chosen tokens; chosen lp -> min(lp, q')
         (same fallback, over chosen tokens).
      3. min_log_prob c: rejected lp -> max(lp, c).
    A clamped token takes the constant bound, so it gives no gradient.
    Returns (lp', {"clipped_fraction": clamped rejected tokens / rejected tokens}).
    """
    completion = labels != IGNORE
    rej_tok = completion & rejected[:, None]
    cho_tok = completion & ~rejected[:, None]
    out = lp
    if eos_id is not None:
        count = completion.long().cumsum(-1)
        last = completion & (count == count[:, -1:])  # each row's last completion token
        flip = last & rejected[:, None] & (labels == eos_id)
        out = torch.where(flip, -out, out)
    clamped = torch.zeros_like(completion)
    if lower_clip_percentile is not None:
        q = _quantile_floor(out, rej_tok, lower_clip_percentile, min_clip_tokens)
        if q is not None:
            low = rej_tok & (out < q)
            clamped = clamped | low
            out = torch.where(low, q, out)
    if upper_clip_percentile is not None:
        q = _quantile_floor(out, cho_tok, upper_clip_percentile, min_clip_tokens)
        if q is not None:
            out = torch.where(cho_tok & (out > q), q, out)
    if min_log_prob is not None:
        low = rej_tok & (out < min_log_prob)
        clamped = clamped | low
        out = torch.where(low, out.new_tensor(min_log_prob), out)
    fraction = clamped.sum().float() / rej_tok.sum().clamp_min(1).float()
    return out, {"clipped_fraction": fraction.detach()}


class SMPO:
    """SMPO (VikhrModels/effective_llm_alignment, no arXiv paper): reference-free margin loss on
    length-normalised log-likelihoods plus chosen/rejected SFT. batch_kind "preference".

    loss, metrics = SMPO(...)(model, batch)
      batch: a `preference` batch (rizzrun.objectives.preference); model(input_ids) -> (2B, T, V).
      Log-probs in float32 (token_logps); l(y) is the mean over the completion's tokens (an empty
      completion counts as 1 token and scores 0).
      metrics (detached scalars, per-pair means unless said):
        loss, rewards/chosen = mean beta*l(y_w), rewards/rejected = mean beta*l(y_l),
        rewards/accuracies = mean 1[beta l(y_w) > beta l(y_l)] (strict), rewards/margins,
        logps/chosen, logps/rejected = mean *summed* completion log-probs (TRL-comparable; before
        any flag), chosen_sft_loss, rejected_sft_loss (token-mean CE), rewards/target_margin (m),
        pairs (B), tokens (completion tokens, chosen + rejected); with a clip flag on also
        rejected_clipped_fraction.
      The rewards and the accuracy use the l(y) the loss sees (after the flags); the SFT losses
      the plain log-probs.

    Arguments (defaults: the reference code's current defaults, except the 2025 flags):
      beta=1.2, target_margin=0.35 (>= 0), chosen_sft_ratio=0.8 (r in [0, 1]),
      loss_type: smooth_lower_bound | sigmoid | hinge | ipo.
      margin_schedule=True: m rises linearly from 0.01 to target_margin over max_steps optimizer
        steps (then stays); needs max_steps (conf: ${trainer.max_steps}) and the runner calling
        `set_step(step)` before each optimizer step's micro-batches. False: m = target_margin.
      eos_invert_rejected, lower_clip_percentile (in (0, 0.5]), upper_clip_percentile (in [0.5, 1)),
        min_log_prob (< 0), min_clip_tokens=50: the 2025 flags with their *intended* semantics
        (`adjust_token_logps`); eos_invert_rejected needs eos_id. All off by default: the
        reference code's versions assign into a boolean-mask copy and are no-ops, so published
        SMPO checkpoints correspond to the plain formula (the reference's own defaults 0.02 /
        -2.3 never took effect).
      pad_id=0: the id padding positions of the joined sequences get (never a target).
    """

    batch_kind = "preference"

    def __init__(self, beta: float = 1.2, target_margin: float = 0.35, chosen_sft_ratio: float = 0.8,
                 loss_type: Literal["smooth_lower_bound", "sigmoid", "hinge", "ipo"] = "smooth_lower_bound",
                 margin_schedule: bool = True, max_steps: Optional[int] = None, eos_invert_rejected: bool = False,
                 lower_clip_percentile: Optional[float] = None, upper_clip_percentile: Optional[float] = None,
                 min_log_prob: Optional[float] = None, min_clip_tokens: int = 50, eos_id: Optional[int] = None,
                 pad_id: int = 0):
        self.beta = _real("beta", beta, low=0, low_open=True)
        self.target_margin = _real("target_margin", target_margin, low=0)
        self.chosen_sft_ratio = _real("chosen_sft_ratio", chosen_sft_ratio, low=0, high=1)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={loss_type!r} is not allowed: allowed are " + ", ".join(map(repr, LOSS_TYPES)))
        self.loss_type = loss_type
        if not isinstance(margin_schedule, bool):
            raise ValueError(f"margin_schedule={margin_schedule!r} is not allowed: it must be true or false")
        self.margin_schedule = margin_schedule
        self.max_steps = _int("max_steps", max_steps, 1, allow_none=True)
        if margin_schedule and self.max_steps is None:
            raise ValueError("max_steps=None is not allowed with margin_schedule=true: the schedule needs the run's "
                             "optimizer steps (conf/objective/smpo.yaml: ${trainer.max_steps}); or set "
                             "margin_schedule=false")
        if not isinstance(eos_invert_rejected, bool):
            raise ValueError(f"eos_invert_rejected={eos_invert_rejected!r} is not allowed: it must be true or false")
        self.eos_id = _int("eos_id", eos_id, 0, allow_none=True)
        if eos_invert_rejected and self.eos_id is None:
            raise ValueError("eos_id=None is not allowed with eos_invert_rejected=true: give the tokenizer's EOS id")
        self.eos_invert_rejected = eos_invert_rejected
        self.lower_clip_percentile = _real("lower_clip_percentile", lower_clip_percentile, low=0, high=0.5,
                                           low_open=True, allow_none=True)
        self.upper_clip_percentile = _real("upper_clip_percentile", upper_clip_percentile, low=0.5, high=1,
                                           high_open=True, allow_none=True)
        self.min_log_prob = _real("min_log_prob", min_log_prob, high=0, high_open=True, allow_none=True)
        self.min_clip_tokens = _int("min_clip_tokens", min_clip_tokens, 1)
        self.pad_id = _int("pad_id", pad_id, 0)
        self.step = 0
        self._step_set = False
        self._warned_no_step = False

    # --- the margin schedule's state ----------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The runner's hook: `step` optimizer steps are done (Lightning's global_step), called
        before the micro-batches of the next one."""
        self.step = _int("step", step, 0)
        self._step_set = True

    @property
    def margin(self) -> float:
        """The target margin m in use now."""
        if not self.margin_schedule:
            return self.target_margin
        return margin_at(self.step, self.target_margin, self.max_steps)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if "step" in state:
            self.set_step(int(state["step"]))

    # --- the loss -----------------------------------------------------------------------------
    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.margin_schedule and not self._step_set and not self._warned_no_step:
            self._warned_no_step = True
            log.warning("smpo: margin_schedule is on but set_step() was never called; the margin stays at "
                        "step %d (m=%.4f)", self.step, self.margin)
        input_ids, labels = pair_sequences(batch, self.pad_id)
        B = batch["row"].shape[0]
        logits = model(input_ids)
        raw = token_logps(logits, labels)  # (2B, T) float32, 0 off the completions
        completion = labels != IGNORE
        lengths = completion.sum(-1)
        rejected = torch.arange(2 * B, device=labels.device) >= B
        flags_on = self.lower_clip_percentile is not None or self.min_log_prob is not None
        lp, extra = adjust_token_logps(
            raw, labels, rejected, eos_id=self.eos_id if self.eos_invert_rejected else None,
            lower_clip_percentile=self.lower_clip_percentile, upper_clip_percentile=self.upper_clip_percentile,
            min_log_prob=self.min_log_prob, min_clip_tokens=self.min_clip_tokens)
        mean_lp = (lp * completion).sum(-1) / lengths.clamp_min(1)
        l_w, l_l = mean_lp[:B], mean_lp[B:]
        margin = self.margin
        po = smpo_pair_loss(l_w - l_l, margin, self.beta, self.loss_type)
        summed = raw.sum(-1)
        n_w, n_l = lengths[:B].sum(), lengths[B:].sum()
        ce_w = -summed[:B].sum() / n_w.clamp_min(1)
        ce_l = -summed[B:].sum() / n_l.clamp_min(1)
        r = self.chosen_sft_ratio
        loss = po.mean() + r * ce_w + (1.0 - r) * ce_l
        with torch.no_grad():
            reward_w, reward_l = self.beta * l_w.detach(), self.beta * l_l.detach()
            metrics = {
                "loss": loss.detach(),
                "rewards/chosen": reward_w.mean(),
                "rewards/rejected": reward_l.mean(),
                "rewards/accuracies": (reward_w > reward_l).float().mean(),
                "rewards/margins": (reward_w - reward_l).mean(),
                "logps/chosen": summed[:B].detach().mean(),
                "logps/rejected": summed[B:].detach().mean(),
                "chosen_sft_loss": ce_w.detach(),
                "rejected_sft_loss": ce_l.detach(),
                "rewards/target_margin": torch.tensor(margin, device=loss.device),
                "pairs": torch.tensor(B, device=loss.device),
                "tokens": (n_w + n_l).detach(),
            }
            if flags_on:
                metrics["rejected_clipped_fraction"] = extra["clipped_fraction"]
        return loss, metrics

    def evaluate(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Validation: the training loss at the current margin (SMPO has no separate eval form)."""
        return self(model, batch)

    def __repr__(self) -> str:
        return (f"SMPO(beta={self.beta}, target_margin={self.target_margin}, chosen_sft_ratio={self.chosen_sft_ratio}, "
                f"loss_type={self.loss_type!r}, margin_schedule={self.margin_schedule}, max_steps={self.max_steps}, "
                f"eos_invert_rejected={self.eos_invert_rejected}, lower_clip_percentile={self.lower_clip_percentile}, "
                f"upper_clip_percentile={self.upper_clip_percentile}, min_log_prob={self.min_log_prob}, "
                f"min_clip_tokens={self.min_clip_tokens}, eos_id={self.eos_id}, pad_id={self.pad_id})")
