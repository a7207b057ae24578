"""GRPO: Group Relative Policy Optimization on rollouts of a `prompts` batch, as TRL 1.16's
GRPOTrainer computes it.

Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
arXiv:2402.03300, Section 4. Spec: shared/methods/objectives/grpo.md. Advantages follow TRL's
`GRPOTrainer._generate_and_score_completions` (sum_then_normalize), the loss its `_compute_loss`
(loss types grpo, bnpo, dr_grpo (Dr. GRPO, arXiv:2503.20783), dapo (DAPO, arXiv:2503.14476)).

For N = B*G rollout rows (row b*G + g is prompt b's g-th completion), rewards r (N,):

    A_i = (r_i - mean_group(r)) / (std(r) + 1e-4)        std: unbiased, of the group ("group"),
                                                         of the whole batch ("batch"); "none": no
                                                         division (Dr. GRPO); NaN rewards left out
                                                         of mean and std and given A = 0
    rho_t = exp(log pi(o_t) - log pi_old(o_t))           pi_old = pi.detach() when mu = 1
    l_t = -min(min(rho_t, delta) A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) + beta k3_t [* rho_t]
    k3_t = exp(lref_t - lp_t) - (lref_t - lp_t) - 1      (lp = log pi, lref = log pi_ref; >= 0; eq. 4;
                                                         * rho_t with use_bias_correction_kl, TRL 1.16's
                                                         default, DeepSeek-V3.2 arXiv:2512.02556)

aggregated over the completion tokens (mask M (N, C)) by loss_type:
    grpo     mean_i( sum_t M l / max(sum_t M, 1) )       per-sequence mean, then mean of sequences
    bnpo     sum M l / max(sum M, 1)                     token mean over the batch
    dr_grpo  sum M l / (N * max_completion_length)       (null: C, the batch's completion width)
    dapo     sum M l / max(T / W, 1)                     T: the active tokens of the rollout batch of
                                                         every process (gathered in prepare), W the
                                                         processes: DDP's gradient average makes it
                                                         the token mean over all processes (TRL's
                                                         num_items_in_batch). One process: = bnpo.
                                                         TRL's T also spans the accumulation steps
                                                         of a generation batch; the runner makes
                                                         each micro-batch's rollout when it comes,
                                                         so here T is one micro-batch's (a
                                                         difference only with accumulate > 1).
"""

from __future__ import annotations

from typing import Literal

import torch

from rizzrun.objectives.arguments import choice as _choice, flag as _flag, integer as _integer, real as _real
from rizzrun.rewards.combine import nanstd
from rizzrun.rollouts.logps import completion_logps

__all__ = ["GRPO", "group_advantages", "grpo_token_losses", "aggregate", "LOSS_TYPES", "SCALE_REWARDS"]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4  # TRL: advantages / (std + 1e-4)
ROLLOUT_KEYS = ("input_ids", "attention_mask", "completion_mask", "truncated", "rewards")


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """(N,) float32 advantages of rewards (N,) in groups of `num_generations` adjacent rows (TRL's
    sum_then_normalize): r - nanmean(group), divided by (unbiased nanstd + 1e-4) of the group
    ("group") or of the whole batch ("batch"; the mean stays per group), not divided ("none").
    NaN rewards (unscorable) are left out of mean and std and get 0; so does every row of a group
    whose std is undefined (one scorable row) when dividing, and a group of one row (G = 1).
    In a run of several processes each holds whole groups (prompts are shared out, each generates all
    G completions of its own), so group statistics are local; the batch std gathers every process's
    rewards first, as TRL does."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}: allowed are {', '.join(map(repr, SCALE_REWARDS))}")
    r = rewards.float().reshape(-1)
    N, G = r.shape[0], int(num_generations)
    if G < 1 or N % G:
        raise ValueError(f"{N} rewards are not whole groups of num_generations={G}")
    grouped = r.view(-1, G)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    advantages = (grouped - mean).reshape(-1)
    if scale_rewards == "group":
        std = nanstd(grouped, dim=1).repeat_interleave(G) if G > 1 else torch.zeros_like(r)
    elif scale_rewards == "batch":  # over the whole batch: every process's rewards (TRL gathers them)
        everything = _all_ranks(r)
        std = nanstd(everything).expand_as(r) if everything.numel() > 1 else torch.zeros_like(r)
    if scale_rewards != "none":
        advantages = advantages / (std + STD_EPS)
    return torch.nan_to_num(advantages, nan=0.0)


def _all_ranks(values: torch.Tensor) -> torch.Tensor:
    """`values` of every process of a distributed run, concatenated in rank order (as given in one)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    found: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(found, values.detach().cpu())
    return torch.cat(found).to(values.device)


def dapo_normalizer(completion_mask: torch.Tensor) -> torch.Tensor:
    """dapo's divisor T / W: the active completion tokens of every process's rollout batch (gathered,
    as TRL's num_items_in_batch) over the number of processes W; a 0-d float32 tensor."""
    tokens = completion_mask.sum().reshape(1).float()
    everything = _all_ranks(tokens)
    return everything.sum() / everything.numel()


def grpo_token_losses(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      ref_logps: torch.Tensor | None = None, beta: float = 0.0, epsilon_low: float = 0.2,
                      epsilon_high: float = 0.2, delta: float | None = None,
                      use_bias_correction_kl: bool = False) -> dict[str, torch.Tensor]:
    """TRL's per-token GRPO loss (N, C) from log-probs (N, C) of the policy (with grad), the old policy
    and the reference, and advantages (N,). Returns {"loss": (N, C), "ratio": (N, C) rho after the
    delta cap, "kl": (N, C) the KL term beta multiplies (k3, times rho before the delta cap with
    use_bias_correction_kl) or None, "low_clipped", "high_clipped" (N, C) bool}: clipped = the
    ratio left [1 - eps_low, 1 + eps_high] on the side where clipping stops the gradient (TRL's
    clip_ratio metrics: rho < 1 - eps_low with A < 0, rho > 1 + eps_high with A > 0)."""
    A = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old_logps)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError(f"beta={beta} needs reference log-probabilities")
        x = ref_logps - logps
        kl = torch.exp(x) - x - 1
        if use_bias_correction_kl:  # DeepSeek-V3.2 (arXiv:2512.02556): the unbiased reverse-KL gradient
            kl = kl * ratio
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    if delta is not None:  # two-sided clipping (INTELLECT-2): cap the unclipped ratio too
        ratio = torch.clamp(ratio, max=delta)
    loss = -torch.min(ratio * A, clipped * A)
    if kl is not None:
        loss = loss + beta * kl
    return {"loss": loss, "ratio": ratio, "kl": kl,
            "low_clipped": (ratio < 1 - epsilon_low) & (A < 0), "high_clipped": (ratio > 1 + epsilon_high) & (A > 0)}


def aggregate(token_losses: torch.Tensor, mask: torch.Tensor, loss_type: str = "grpo",
              max_completion_length: int | None = None, tokens_per_process: torch.Tensor | None = None
              ) -> torch.Tensor:
    """The scalar loss from per-token losses (N, C) and the completion mask (N, C) by `loss_type`
    (module docstring; TRL's `_compute_loss` with one accumulation step). `tokens_per_process`: dapo's
    divisor T / W (`dapo_normalizer`; null: this batch's own active tokens, as in one process)."""
    m = mask.to(token_losses.dtype)
    masked = token_losses * m
    if loss_type == "grpo":
        return (masked.sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dapo" and tokens_per_process is not None:
        return masked.sum() / tokens_per_process.to(masked).clamp(min=1.0)
    if loss_type in ("bnpo", "dapo"):
        return masked.sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = token_losses.shape[1] if max_completion_length is None else max_completion_length
        return masked.sum() / (token_losses.shape[0] * length)
    raise ValueError(f"loss_type={loss_type!r}: allowed are {', '.join(map(repr, LOSS_TYPES))}")




class GRPO:
    """GRPO (arXiv:2402.03300) with TRL 1.16's loss types, advantages and metric names; a `prompts`
    objective (docs/contracts.md "Rollouts").

    batch = GRPO().prepare(model, rollout, reference=frozen_model)   # under no_grad, once per rollout
    loss, metrics = GRPO()(model, batch)                             # each of the mu optimizer steps

    Arguments (TRL's GRPOConfig names; rizzrun defaults = the paper's, TRL's defaults differ):
      num_generations=8     G completions per prompt (>= 2: group statistics; TRL's minimum).
      num_iterations=1      mu: optimizer steps per rollout batch; > 1 keeps the rollout policy's
                            log-probs (old_logps) from prepare, so the ratio moves and clipping acts.
      beta=0.04             KL coefficient (k3 against the reference, in the loss); 0: no reference
                            model is needed (TRL >= 0.19 defaults to 0).
      epsilon=0.2           lower clip: rho >= 1 - epsilon (in [0, 1)).
      epsilon_high=None     upper clip: rho <= 1 + epsilon_high (null: epsilon; DAPO uses 0.28).
      delta=None            two-sided clipping: cap rho at delta also where A < 0 (INTELLECT-2,
                            arXiv:2505.07291; > 1 + epsilon_high).
      loss_type="grpo"      grpo | bnpo | dr_grpo | dapo: the token aggregation (module docstring;
                            TRL >= 0.22 defaults to dapo).
      scale_rewards="group" group | batch | none: the advantage's divisor (module docstring).
      mask_truncated_completions=False  completions without EOS (truncated) get an all-zero
                            completion mask: no loss, no KL, no metric (TRL's, DAPO).
      use_bias_correction_kl=False  multiply k3 by rho (differentiable, before the delta cap): the unbiased
                            reverse-KL gradient of DeepSeek-V3.2 (arXiv:2512.02556); changes the gradient
                            even at mu = 1 (rho = 1 in value). TRL 1.16 defaults to true; the paper's
                            GRPO is false. The logged kl is the corrected term, as TRL logs it.
      max_completion_length=None  dr_grpo's constant denominator per sequence: the generation limit
                            (conf: ${decoder.max_new_tokens}, as TRL's max_completion_length); null:
                            the batch's completion width C (the longest completion, not constant).

    prepare(model, rollout, reference=None) -> the rollout plus advantages (N,) float32, old_logps
      (N, C) (num_iterations > 1), ref_logps (N, C) (beta > 0), dapo_normalizer () (loss_type dapo:
      T / W, gathered over the processes); completion_mask and attention_mask
      with truncated rows zeroed (mask_truncated_completions). reference: a frozen model (run under
      no_grad); needed when beta > 0, ignored (not run) when beta == 0.
    __call__(model, batch, reference=None) -> (loss, metrics); the reference is not used here (its
      log-probs came with the batch), it is accepted because the runner hands it to every call.

    metrics (detached scalars, TRL's names; token means are over the active completion tokens):
      loss                  the loss
      kl                    mean of the KL term (k3, or k3 * rho with use_bias_correction_kl) (beta > 0)
      clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean  fraction of tokens clipped
                            low (rho < 1 - eps_low, A < 0), high (rho > 1 + eps_high, A > 0), either
      entropy               mean entropy of the policy's softmax(logits / temperature), from the
                            same forward as the log-probs
      completions           N, the count the runner weighs these means by
      tokens                active completion tokens (a count)
    Rewards and completion lengths are the rollout's metrics (rizzrun.rollouts.rollout_metrics).
    """

    batch_kind = "prompts"
    extra_models = ("reference",)

    def __init__(self, num_generations: int = 8, num_iterations: int = 1, beta: float = 0.04,
                 epsilon: float = 0.2, epsilon_high: float | None = None, delta: float | None = None,
                 loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo",
                 scale_rewards: Literal["group", "batch", "none"] = "group",
                 mask_truncated_completions: bool = False, max_completion_length: int | None = None,
                 use_bias_correction_kl: bool = False):
        self.num_generations = _integer("num_generations", num_generations, 2)
        self.num_iterations = _integer("num_iterations", num_iterations, 1)
        self.beta = _real("beta", beta, "a number >= 0", lambda v: v >= 0)
        self.epsilon = _real("epsilon", epsilon, "a number in [0, 1)", lambda v: 0 <= v < 1)
        self.epsilon_high = _real("epsilon_high", epsilon_high, "a number >= 0", lambda v: v >= 0, nullable=True)
        self.epsilon_low = self.epsilon
        high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        self.delta = _real("delta", delta, f"a number > 1 + epsilon_high = {1 + high:g}", lambda v: v > 1 + high,
                           nullable=True)
        self.loss_type = _choice("loss_type", loss_type, LOSS_TYPES)
        self.scale_rewards = _choice("scale_rewards", scale_rewards, SCALE_REWARDS)
        self.mask_truncated_completions = _flag("mask_truncated_completions", mask_truncated_completions)
        self.max_completion_length = _integer("max_completion_length", max_completion_length, 1, nullable=True)
        self.use_bias_correction_kl = _flag("use_bias_correction_kl", use_bias_correction_kl)

    @property
    def _epsilon_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    def prepare(self, model, rollout: dict, reference=None) -> dict:
        """What stays fixed over the rollout's mu optimizer steps (class docstring). Runs under no_grad."""
        missing = [k for k in ROLLOUT_KEYS if k not in rollout]
        if missing:
            raise ValueError(f"rollout lacks {', '.join(missing)}: score it first (rizzrun.rollouts.score_rollout)")
        if self.beta > 0 and reference is None:
            raise ValueError(f"GRPO with beta={self.beta:g} needs a reference model: set objective.models.reference "
                             "(init = the policy's starting weights, or a run / Hugging Face folder), or "
                             "objective.beta=0")
        if reference is not None and self.beta > 0 and not callable(reference):
            raise ValueError(f"objective.models.reference: GRPO needs the model itself, got {type(reference).__name__} "
                             "(reference log-probs of rollouts cannot be precomputed: set objective.precompute=[])")
        rewards = rollout["rewards"]
        N = rewards.shape[0]
        G = self.num_generations
        if N % G:
            raise ValueError(f"rollout of {N} rows is not whole groups of objective.num_generations={G}: "
                             "sample it with the same num_generations")
        group = rollout.get("group")
        if group is not None and N and not bool((group.view(-1, G) == group.view(-1, G)[:, :1]).all()):
            raise ValueError(f"rollout groups are not {G} adjacent rows each (rollout['group'] = {group.tolist()})")
        batch = dict(rollout)
        completion_mask = rollout["completion_mask"].bool()
        if self.mask_truncated_completions:
            completion_mask = completion_mask & ~rollout["truncated"].bool().unsqueeze(1)
            C = completion_mask.shape[1]
            attention = rollout["attention_mask"].bool()
            batch["attention_mask"] = torch.cat([attention[:, :attention.shape[1] - C], completion_mask], dim=1)
        batch["completion_mask"] = completion_mask
        batch["advantages"] = group_advantages(rewards, G, self.scale_rewards).to(completion_mask.device)
        if self.loss_type == "dapo":  # every process's tokens (a collective: each rank prepares once per block)
            batch["dapo_normalizer"] = dapo_normalizer(completion_mask).to(completion_mask.device)
        with torch.no_grad():
            if self.num_iterations > 1:
                batch["old_logps"] = completion_logps(model, batch)
            if self.beta > 0:
                batch["ref_logps"] = completion_logps(reference, batch)
        return batch

    def __call__(self, model, batch: dict, reference=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "advantages" not in batch:
            raise ValueError("GRPO got a rollout that was not prepared: call objective.prepare(model, rollout, ...) "
                             "once per rollout batch first")
        if self.beta > 0 and "ref_logps" not in batch:
            raise ValueError(f"GRPO with beta={self.beta:g} got a batch without ref_logps: it was prepared by another "
                             "objective, or without a reference")
        if self.num_iterations > 1 and "old_logps" not in batch:
            raise ValueError(f"GRPO with num_iterations={self.num_iterations} got a batch without old_logps: "
                             "prepare it with this objective")
        mask = batch["completion_mask"].bool()
        logps, entropy = completion_logps(model, batch, with_entropy=True)  # (N, C) float32, logps with grad
        old = batch.get("old_logps")
        old = logps.detach() if old is None else old.to(logps)
        advantages = batch["advantages"].to(logps)
        ref = batch.get("ref_logps")
        terms = grpo_token_losses(logps, old, advantages, None if ref is None else ref.to(logps), self.beta,
                                  self.epsilon_low, self._epsilon_high, self.delta, self.use_bias_correction_kl)
        loss = aggregate(terms["loss"], mask, self.loss_type, self.max_completion_length,
                         batch.get("dapo_normalizer"))
        with torch.no_grad():
            m = mask.float()
            tokens = m.sum()

            def token_mean(x: torch.Tensor) -> torch.Tensor:
                return (x.float() * m).sum() / tokens.clamp(min=1.0)

            metrics = {"loss": loss.detach()}
            if terms["kl"] is not None:
                metrics["kl"] = token_mean(terms["kl"])
            metrics.update({
                "clip_ratio/low_mean": token_mean(terms["low_clipped"]),
                "clip_ratio/high_mean": token_mean(terms["high_clipped"]),
                "clip_ratio/region_mean": token_mean(terms["low_clipped"] | terms["high_clipped"]),
                "entropy": token_mean(entropy),
                "completions": torch.tensor(mask.shape[0], device=mask.device),
                "tokens": mask.sum(),
            })
        return loss, metrics

    def __repr__(self) -> str:
        return (f"GRPO(num_generations={self.num_generations}, num_iterations={self.num_iterations}, beta={self.beta}, "
                f"epsilon={self.epsilon}, epsilon_high={self.epsilon_high}, delta={self.delta}, "
                f"loss_type={self.loss_type!r}, scale_rewards={self.scale_rewards!r}, "
                f"mask_truncated_completions={self.mask_truncated_completions}, "
                f"max_completion_length={self.max_completion_length}, "
                f"use_bias_correction_kl={self.use_bias_correction_kl})")
