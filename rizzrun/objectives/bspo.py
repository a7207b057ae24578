"""BSPO: Behavior-Supported Policy Optimization, token-level PPO whose critic gives every action
outside the reward model's data support the minimum value.

Dai et al., "Mitigating Reward Over-Optimization in RLHF via Behavior-Supported Regularization",
arXiv:2503.18130 (ICLR 2025). Spec: shared/methods/objectives/bspo.md. PPO: Schulman et al.,
arXiv:1707.06347; GAE: arXiv:1506.02438; the loss, value clipping, whitening and metric names
follow TRL 1.16's PPOTrainer (value head on the policy's own hidden states here, not a second model).

A rollout of N completions, C completion positions, mask M (N, C); s_t = prompt ++ completion<t,
a_t = completion token t. Per token:

    r_t   = -kl_coef (log pi_old(a_t|s_t) - log pi_ref(a_t|s_t))      (TRL's k1 KL reward; 0 when kl_coef=0)
            + score     at the last completion token (the rollout's reward)
    beta_t = beta(a_t|s_t)  the behaviour model's next-token probability (the ScoreLM's LM head, T = 1)
    U_t   = beta_t <= epsilon   (or, with top_p: a_t outside beta's smallest set of mass >= top_p)
    V_t   = value head(h_t)  (rollout time: "old" values; V = 0 past the last token)

    value_target (the behaviour-supported Bellman operator T_beta):
      delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1}     where not U_t
      A_t = V_min - V_t                                                           where U_t
      (T_beta Q)(s, a) = Q_min does not look past an unsupported action: the recursion is cut there.
    reward_penalty: a response with any unsupported token gets score = V_min; GAE unchanged.
    monitor: U is measured and logged, nothing else changes (plain PPO).
    returns R_t = A_t + V_t; A is whitened over the batch's tokens (whiten_advantages).

    loss = mean_M max(-A rho, -A clip(rho, 1 - clip, 1 + clip))                   rho = pi / pi_old
         + vf_coef * 0.5 mean_M max((V - R)^2, (V_old + clip(V - V_old, +-cliprange_value) - R)^2)

V_min: `v_min`, or (null) the lowest reward this objective has seen in its rollouts so far (a
buffer, so it survives a resume). With no behaviour model, epsilon = 0 and no top_p, or
mode = monitor, BSPO is plain PPO.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.errors import InputError
from rizzrun.objectives.arguments import choice as _choice, flag as _flag, integer as _integer, real as _real
from rizzrun.rollouts.logps import token_entropy, token_logps

__all__ = ["BSPO", "gae", "masked_whiten", "support_mask", "ppo_losses", "MODES"]

MODES = ("value_target", "reward_penalty", "monitor")
ROLLOUT_KEYS = ("input_ids", "attention_mask", "completion_mask", "truncated", "rewards")


# --- plain functions (the math of the module docstring) -------------------------------------------

def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        unsupported: Optional[torch.Tensor] = None, v_min: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each (N, C) float32 and 0 outside `mask`, of per-token rewards (N, C),
    rollout-time values (N, C) and the completion mask (N, C) (real tokens first): TRL's GAE loop with
    V = 0 after the last token. `unsupported` (N, C) bool: those tokens' target is `v_min` (A = v_min - V,
    the recursion cut there; the T_beta operator of arXiv:2503.18130)."""
    m = mask.float()
    r, v = rewards.float() * m, values.float() * m
    N, C = r.shape
    out = torch.zeros_like(r)
    last = torch.zeros(N, dtype=r.dtype, device=r.device)
    for t in reversed(range(C)):
        nxt = v[:, t + 1] if t < C - 1 else torch.zeros_like(last)
        last = r[:, t] + gamma * nxt - v[:, t] + gamma * lam * last
        if unsupported is not None:
            last = torch.where(unsupported[:, t], v_min - v[:, t], last)
        last = last * m[:, t]
        out[:, t] = last
    return out, (out + v) * m


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries, var unbiased (TRL's masked_whiten); 0 outside."""
    m = mask.float()
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    var = ((x - mean).square() * m).sum() / n.clamp(min=1)
    if n > 1:
        var = var * n / (n - 1)
    return (x - mean) * torch.rsqrt(var + eps) * m


def support_mask(behavior_logps: torch.Tensor, epsilon: float = 1e-4, top_p: Optional[float] = None,
                 behavior_logits: Optional[torch.Tensor] = None, actions: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
    """(N, C) bool: True where a_t is *unsupported*. Threshold: beta(a_t|s_t) <= epsilon (log-space;
    epsilon = 0 never). top_p (needs behavior_logits (N, C, V) and actions (N, C)): a_t is outside the
    smallest set of the most probable tokens whose mass reaches top_p, i.e. the mass of the tokens
    strictly more probable than a_t is already >= top_p."""
    if top_p is not None:
        if behavior_logits is None or actions is None:
            raise ValueError("top_p support needs the behaviour model's logits and the actions")
        probs = torch.softmax(behavior_logits.float(), dim=-1)
        p_a = probs.gather(-1, actions.unsqueeze(-1))
        above = (probs * (probs > p_a)).sum(-1)
        return above >= top_p
    if epsilon <= 0:
        return torch.zeros_like(behavior_logps, dtype=torch.bool)
    return behavior_logps <= math.log(epsilon)


def ppo_losses(logps, old_logps, advantages, values, old_values, returns, mask, clip: float = 0.2,
               cliprange_value: float = 0.2) -> dict[str, torch.Tensor]:
    """TRL PPOTrainer's losses, all (N, C) inputs: {"policy": mean_M max(-A rho, -A clip(rho)),
    "value": 0.5 mean_M max((V - R)^2, (V_clipped - R)^2), "clipfrac", "vf_clipfrac", "approxkl"
    (0.5 mean (log rho)^2), "ratio" (mean rho)}; token means over the mask M."""
    m = mask.float()
    n = m.sum().clamp(min=1)

    def mean(x):
        return (x * m).sum() / n

    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    vclipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf1, vf2 = (values - returns).square(), (vclipped - returns).square()
    return {"policy": mean(torch.max(pg1, pg2)), "value": 0.5 * mean(torch.max(vf1, vf2)),
            "clipfrac": mean((pg2 > pg1).float()).detach(), "vf_clipfrac": mean((vf2 > vf1).float()).detach(),
            "approxkl": 0.5 * mean(log_ratio.square()).detach(), "ratio": mean(ratio).detach()}


def _positions(rollout: dict):
    """(inputs (N, T-1), key padding mask or None, P): the one forward that scores completion tokens
    (as rizzrun.rollouts.logps.completion_logps builds it)."""
    ids, mask, completion_mask = rollout["input_ids"], rollout["attention_mask"], rollout["completion_mask"]
    C = completion_mask.shape[1]
    P = ids.shape[1] - C
    if P < 1:
        raise ValueError(f"rollout input_ids has {ids.shape[1]} positions for {C} completion tokens: no prompt")
    padding = torch.cat([mask[:, :P].bool(), torch.ones_like(completion_mask, dtype=torch.bool)], dim=1)
    return ids[:, :-1], (None if bool(padding.all()) else padding[:, :-1]), P


def completion_hidden(model, rollout: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C, V), hidden (N, C, d)) at the positions predicting completion tokens 0..C-1, from one
    forward (model.hidden_states, then model.lm_head)."""
    if not (hasattr(model, "hidden_states") and hasattr(model, "lm_head")):
        raise ValueError(f"BSPO's value head reads the policy's hidden states: {type(model).__name__} has no "
                         "hidden_states(input_ids, key_padding_mask) and lm_head")
    inputs, padding, P = _positions(rollout)
    hidden = model.hidden_states(inputs, padding)[:, P - 1:]
    return model.lm_head(hidden), hidden


def completion_logits(model, rollout: dict) -> torch.Tensor:
    """(N, C, V) logits of `model` at the positions predicting completion tokens 0..C-1."""
    inputs, padding, P = _positions(rollout)
    return model(inputs, key_padding_mask=padding)[:, P - 1:]


# --- the objective --------------------------------------------------------------------------------

class BSPO(nn.Module):
    """BSPO (arXiv:2503.18130): token-level PPO with a value head and the behaviour-supported value
    target; a `prompts` objective (docs/contracts.md "Rollouts"). An nn.Module: the runner trains its
    value head with the policy (rizzrun.runner.task.LanguageModelTask.trainable).

    batch = BSPO(d_model)(...).prepare(model, rollout, behavior=scorelm, reference=None)   # no_grad
    loss, metrics = BSPO(d_model)(model, batch)

    Arguments:
      d_model                the policy's hidden size (the runner gives it): value head nn.Linear(d_model, 1),
                             zero-initialised (V = 0 at the start).
      num_generations=1      completions per prompt (PPO needs no groups).
      num_iterations=1       PPO epochs: optimizer steps on each rollout batch.
      gamma=1.0, lam=0.95    GAE's discount and lambda.
      clip=0.2               the policy ratio's clip range (TRL cliprange).
      cliprange_value=0.2    the value clip range around the rollout's values.
      vf_coef=0.1            the value loss's weight (TRL's).
      kl_coef=0.0            the per-token k1 KL penalty against `reference` in the reward (needs one when > 0).
      whiten_advantages=True TRL's whitening of the advantages over the batch's tokens.
      value_trains_policy=False  false: the value head reads detached hidden states (a probe of the
                             policy's features); true: the value loss also trains the shared trunk.
      mode="value_target"    value_target | reward_penalty | monitor (module docstring).
      epsilon=1e-4           support threshold on beta(a|s) (unconfirmed in the paper); 0: off.
      top_p=None             support = beta's nucleus of this mass instead of the threshold (e.g. 0.99).
      v_min=None             the minimum value; null: the lowest reward seen so far.

    Extra models: behavior (the ScoreLM run folder: a reward model that kept its LM head, or any LM with
    the policy's tokenizer; null: no support, plain PPO), reference (kl_coef > 0).

    metrics (TRL PPOTrainer's names where it has them): loss, loss/policy_avg, loss/value_avg,
      policy/approxkl_avg, policy/clipfrac_avg, val/clipfrac_avg, val/ratio, policy/entropy_avg,
      objective/scores (mean reward), objective/kl (mean per-sequence KL sum, with a reference),
      bspo/frac_unsupported_tokens, bspo/frac_unsupported_responses (with a behaviour model), bspo/v_min,
      completions, tokens.
    """

    batch_kind = "prompts"
    extra_models = ("behavior", "reference")
    # trainer.strategy=fsdp is refused before training (rizzrun.config.validate) with this reason.
    unshardable = ("its value head is a plain (unsharded) parameter beside the sharded policy, which gradient "
                   "clipping over both cannot mix")

    def __init__(self, d_model: Optional[int] = None, num_generations: int = 1, num_iterations: int = 1,
                 gamma: float = 1.0, lam: float = 0.95, clip: float = 0.2, cliprange_value: float = 0.2,
                 vf_coef: float = 0.1, kl_coef: float = 0.0, whiten_advantages: bool = True,
                 value_trains_policy: bool = False,
                 mode: Literal["value_target", "reward_penalty", "monitor"] = "value_target",
                 epsilon: float = 1e-4, top_p: Optional[float] = None, v_min: Optional[float] = None):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, numbers.Integral) or d_model < 1:
            raise InputError(f"objective.d_model={d_model!r}: must be the model's hidden size, an integer >= 1 "
                             "(the runner sets it from the model)")
        self.d_model = int(d_model)
        self.num_generations = _integer("num_generations", num_generations, 1)
        self.num_iterations = _integer("num_iterations", num_iterations, 1)
        self.gamma = _real("gamma", gamma, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.lam = _real("lam", lam, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.clip = _real("clip", clip, "a number in (0, 1)", lambda v: 0 < v < 1)
        self.cliprange_value = _real("cliprange_value", cliprange_value, "a number > 0", lambda v: v > 0)
        self.vf_coef = _real("vf_coef", vf_coef, "a number >= 0", lambda v: v >= 0)
        self.kl_coef = _real("kl_coef", kl_coef, "a number >= 0", lambda v: v >= 0)
        self.whiten_advantages = _flag("whiten_advantages", whiten_advantages)
        self.value_trains_policy = _flag("value_trains_policy", value_trains_policy)
        self.mode = _choice("mode", mode, MODES)
        self.epsilon = _real("epsilon", epsilon, "a number in [0, 1)", lambda v: 0 <= v < 1)
        self.top_p = _real("top_p", top_p, "a number in (0, 1]", lambda v: 0 < v <= 1, nullable=True)
        self.v_min = _real("v_min", v_min, "a finite number", lambda v: True, nullable=True)
        self.value_head = nn.Linear(self.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        # The lowest reward seen so far (V_min when v_min is null); NaN until the first rollout.
        self.register_buffer("seen_min", torch.tensor(float("nan")))

    # --- pieces -------------------------------------------------------------------------------
    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 V(s_t) from hidden states (N, C, d), the head in float32 (autocast off)."""
        h = hidden if self.value_trains_policy else hidden.detach()
        with torch.autocast(device_type=h.device.type, enabled=False):
            return F.linear(h.float(), self.value_head.weight.float(), self.value_head.bias.float()).squeeze(-1)

    def _policy(self, model, batch: dict, temperature) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi (N, C), V (N, C), logits (N, C, V)) from one policy forward (logits / the rollout's T)."""
        logits, hidden = completion_hidden(model, batch)
        if temperature is not None and float(temperature) != 1.0:
            logits = logits / float(temperature)
        actions = batch["input_ids"][:, -batch["completion_mask"].shape[1]:]
        mask = batch["completion_mask"]
        return token_logps(logits, actions) * mask, self.values(hidden) * mask, logits

    def _support(self, behavior, batch: dict) -> Optional[torch.Tensor]:
        """(N, C) bool unsupported tokens, or None when support is off."""
        if behavior is None or (self.epsilon == 0 and self.top_p is None):
            return None
        if not callable(behavior):
            raise ValueError("objective.models.behavior: BSPO needs the behaviour model itself (precompute=[])")
        lm = getattr(behavior, "lm", behavior)  # a ScoreLM (ScalarRewardModel): its LM, with its LM head
        logits = completion_logits(lm, batch).float()  # beta at T = 1, whatever the rollout's temperature
        mask = batch["completion_mask"].bool()
        actions = batch["input_ids"][:, -mask.shape[1]:]
        unsupported = support_mask(token_logps(logits, actions), self.epsilon, self.top_p, logits, actions)
        return unsupported & mask

    def current_v_min(self) -> float:
        if self.v_min is not None:
            return self.v_min
        return 0.0 if torch.isnan(self.seen_min) else float(self.seen_min)

    # --- the contract -------------------------------------------------------------------------
    def prepare(self, model, rollout: dict, behavior=None, reference=None) -> dict:
        """Rollout-time log-probs and values, the support, token rewards, advantages and returns
        (class docstring). Runs under no_grad."""
        missing = [k for k in ROLLOUT_KEYS if k not in rollout]
        if missing:
            raise ValueError(f"rollout lacks {', '.join(missing)}: score it first (rizzrun.rollouts.score_rollout)")
        if self.kl_coef > 0 and reference is None:
            raise ValueError(f"BSPO with kl_coef={self.kl_coef:g} needs a reference model: set "
                             "objective.models.reference=init, or objective.kl_coef=0")
        batch = dict(rollout)
        scores = rollout["rewards"].float()
        scored = ~torch.isnan(scores)
        mask = rollout["completion_mask"].bool() & scored.unsqueeze(1)
        batch["completion_mask"] = mask
        if bool(scored.any()):
            low = scores[scored].min().to(self.seen_min)
            self.seen_min.copy_(low if torch.isnan(self.seen_min) else torch.minimum(self.seen_min, low))
        v_min = self.current_v_min()
        with torch.no_grad():
            old_logps, old_values, _ = self._policy(model, batch, rollout.get("temperature"))
            unsupported = self._support(behavior, batch)
            N, C = mask.shape
            rewards = torch.zeros(N, C, dtype=torch.float32, device=mask.device)
            if self.kl_coef > 0:
                ref_logps = token_logps(completion_logits(reference, batch).float() / float(
                    rollout.get("temperature", 1.0)), batch["input_ids"][:, -C:]) * mask
                kl = (old_logps - ref_logps) * mask
                rewards = rewards - self.kl_coef * kl
                batch["kl"] = kl.sum(1)
            score = torch.nan_to_num(scores, nan=0.0).to(rewards)
            response_unsupported = None if unsupported is None else unsupported.any(1)
            if self.mode == "reward_penalty" and response_unsupported is not None:
                score = torch.where(response_unsupported, torch.full_like(score, v_min), score)
            lengths = mask.sum(1)
            rows = torch.nonzero(lengths > 0).squeeze(1)
            rewards[rows, lengths[rows] - 1] += score[rows]
            cut = unsupported if self.mode == "value_target" else None
            advantages, returns = gae(rewards, old_values, mask, self.gamma, self.lam, cut, v_min)
            if self.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
        batch.update(old_logps=old_logps, old_values=old_values, advantages=advantages, returns=returns,
                     scores=score, v_min=torch.tensor(v_min))
        if unsupported is not None:
            batch["unsupported"] = unsupported
        return batch

    def forward(self, model, batch: dict, behavior=None, reference=None) -> tuple[torch.Tensor, dict]:
        if "advantages" not in batch:
            raise ValueError("BSPO got a rollout that was not prepared: call objective.prepare(model, rollout, ...) "
                             "once per rollout batch first")
        mask = batch["completion_mask"].bool()
        logps, values, logits = self._policy(model, batch, batch.get("temperature"))
        terms = ppo_losses(logps, batch["old_logps"].to(logps), batch["advantages"].to(logps), values,
                           batch["old_values"].to(values), batch["returns"].to(values), mask, self.clip,
                           self.cliprange_value)
        loss = terms["policy"] + self.vf_coef * terms["value"]
        with torch.no_grad():
            m = mask.float()
            tokens = m.sum()
            entropy = (token_entropy(logits) * m).sum() / tokens.clamp(min=1)
            metrics = {"loss": loss.detach(), "loss/policy_avg": terms["policy"].detach(),
                       "loss/value_avg": terms["value"].detach(), "policy/approxkl_avg": terms["approxkl"],
                       "policy/clipfrac_avg": terms["clipfrac"], "val/clipfrac_avg": terms["vf_clipfrac"],
                       "val/ratio": terms["ratio"], "policy/entropy_avg": entropy,
                       "objective/scores": batch["scores"].float().mean(), "bspo/v_min": batch["v_min"].float()}
            if "kl" in batch:
                metrics["objective/kl"] = batch["kl"].float().mean()
            if "unsupported" in batch:
                u = batch["unsupported"].bool() & mask
                metrics["bspo/frac_unsupported_tokens"] = u.float().sum() / tokens.clamp(min=1)
                metrics["bspo/frac_unsupported_responses"] = u.any(1).float().mean()
            metrics["completions"] = torch.tensor(mask.shape[0], device=mask.device)
            metrics["tokens"] = mask.sum()
        return loss, {k: v.to(loss.device) for k, v in metrics.items()}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_generations={self.num_generations}, num_iterations="
                f"{self.num_iterations}, gamma={self.gamma}, lam={self.lam}, clip={self.clip}, cliprange_value="
                f"{self.cliprange_value}, vf_coef={self.vf_coef}, kl_coef={self.kl_coef}, whiten_advantages="
                f"{self.whiten_advantages}, value_trains_policy={self.value_trains_policy}, mode={self.mode!r}, "
                f"epsilon={self.epsilon}, top_p={self.top_p}, v_min={self.v_min}")
