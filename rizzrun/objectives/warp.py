"""WARP stage 1: REINFORCE on a KL-regularised sequence reward whose anchor is an EMA of the policy.

Ramé et al., "WARP: On the Benefits of Weight Averaged Rewarded Policies", arXiv:2406.16768,
Section 3 (stage 1, "Exponential Moving Average"). Spec: shared/methods/objectives/warp.md. No
public reference implementation; stages 2-3 (SLERP of task vectors, LITI) are `rizzrun merge`.

For N = B*G rollout rows (row b*G + g is prompt b's g-th completion), completion mask M (N, C),
token log-probs lp = log pi_theta (N, C) (with grad), le = log pi_ema (N, C) (no grad, at prepare):

    S_i  = sum_t M lp                          sequence log-prob log pi_theta(y_i | x_i)
    R_i  = r_i - beta * (S_i - sum_t M le)     the KL-shaped sequence reward (no grad: a reward)
    A_i  = R_i - baseline_i                    group: mean of R over the prompt's G rows (itself
                                               included); loo: mean of the other G - 1 (RLOO,
                                               unbiased); none: 0. NaN rewards: A = 0, left out.
    loss = -mean_i(A_i * S_i)                  REINFORCE (score function of the whole sequence)

after every optimizer step (`after_step`):  theta_ema <- (1 - mu) theta_ema + mu theta.

The paper says REINFORCE with the KL-regularised reward; its baseline is not stated (we use the
group mean by default: unconfirmed). The expected gradient of -beta log(pi/pi_ema) through its
own pi is zero (E[grad log pi] = 0), so treating R as a reward is the exact policy gradient of
E[r] - beta KL(pi || pi_ema).
"""

from __future__ import annotations

import copy

import torch

from rizzrun.objectives.arguments import choice as _choice, integer as _integer, real as _real
from rizzrun.rollouts.logps import completion_logps

__all__ = ["WARP", "ema_update", "shaped_rewards", "baseline_advantages", "BASELINES"]

BASELINES = ("group", "loo", "none")
ROLLOUT_KEYS = ("input_ids", "attention_mask", "completion_mask", "rewards")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, mu: float) -> None:
    """theta_ema <- (1 - mu) theta_ema + mu theta, parameter by parameter (same names, in place;
    computed as ema + mu (theta - ema) in the EMA's dtype). mu = 0: unchanged; mu = 1: a copy."""
    params = dict(model.named_parameters())
    for name, e in ema.named_parameters():
        p = params[name].detach().to(e)
        if mu == 1.0:
            e.copy_(p)
        elif mu != 0.0:
            e.lerp_(p, mu)


def shaped_rewards(rewards: torch.Tensor, seq_logps: torch.Tensor, seq_ema_logps: torch.Tensor,
                   beta: float) -> torch.Tensor:
    """(N,) r - beta * (log pi(y|x) - log pi_ema(y|x)), all (N,) float32, detached inputs."""
    return rewards.float() - beta * (seq_logps.float() - seq_ema_logps.float())


def baseline_advantages(values: torch.Tensor, num_generations: int, baseline: str = "group") -> torch.Tensor:
    """(N,) values minus their baseline in groups of `num_generations` adjacent rows: `group` the
    group's mean (NaN left out), `loo` the mean of the group's other rows, `none` nothing. NaN
    values get 0; so does a row whose `loo` group has no other scored row."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r}: allowed are {', '.join(map(repr, BASELINES))}")
    v = values.float().reshape(-1)
    N, G = v.shape[0], int(num_generations)
    if G < 1 or N % G:
        raise ValueError(f"{N} rewards are not whole groups of num_generations={G}")
    if baseline == "none":
        return torch.nan_to_num(v, nan=0.0)
    grouped = v.view(-1, G)
    if baseline == "group":
        out = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    else:
        scored = ~torch.isnan(grouped)
        total = torch.nan_to_num(grouped, nan=0.0).sum(1, keepdim=True)
        others = scored.sum(1, keepdim=True) - scored.long()
        out = grouped - (total - torch.nan_to_num(grouped, nan=0.0)) / others.clamp(min=1)
        out = torch.where(others > 0, out, torch.full_like(out, float("nan")))
    return torch.nan_to_num(out.reshape(-1), nan=0.0)




class WARP:
    """WARP's RL stage (arXiv:2406.16768): REINFORCE on r - beta log(pi/pi_ema) with an EMA anchor;
    a `prompts` objective (docs/contracts.md "Rollouts") with an `after_step` hook.

    batch = WARP().prepare(model, rollout, reference=sft)   # under no_grad, once per rollout
    loss, metrics = WARP()(model, batch)
    WARP().after_step(model)                                # the runner: after every optimizer step

    Arguments:
      num_generations=8   G completions per prompt (>= 2 for the group baseline; 1 with baseline none).
      num_iterations=1    optimizer steps per rollout batch. REINFORCE is on-policy: the paper's
                          is 1; > 1 reuses the rollout without an importance ratio (biased).
      beta=0.1            KL coefficient against the EMA anchor (unconfirmed paper value).
      mu=0.01             EMA rate (unconfirmed paper value), in [0, 1]: 0 keeps the start (a
                          fixed anchor: plain KL-regularised REINFORCE), 1 follows the policy.
      baseline="group"    group | loo | none (module docstring; the paper's is unconfirmed).

    The anchor: a frozen copy of the policy (requires_grad False, eval mode, the policy's device
    and dtype), made from the policy handed to the first `prepare` (a run's first rollout, before
    any optimizer step: the starting weights, whatever `model.from_pretrained` gave), so it needs no
    extra model. It is no submodule of anything and this class is no nn.Module: its weights are
    saved by `state_dict()` into the checkpoint's "objective" entry (not as `objective.*` weights,
    which `rizzrun merge` would refuse as a trained head) and restored by `load_state_dict` (the
    copy is rebuilt from the policy's structure at the next prepare/after_step).

    reference (optional extra model, `models: {reference: init}`): the frozen SFT start; only read
    for the kl_init metric (WARP's plots measure KL to the SFT model), never in the loss.

    metrics (detached; KLs are sampled (k1) estimates, per completion token over the batch):
      loss, shaped_reward (mean R), kl_ema (sum M (lp - le) / sum M), kl_init (same against the
      reference, when given), entropy, ema_updates (after_step calls so far), completions, tokens.
      The raw reward is the rollout's `reward` metric (train/reward).
    """

    batch_kind = "prompts"
    extra_models = ("reference",)
    # trainer.strategy=fsdp is refused before training (rizzrun.config.validate) with this reason.
    unshardable = "its EMA anchor is a deep copy of the policy, which an FSDP-sharded model cannot be copied into"

    def __init__(self, num_generations: int = 8, num_iterations: int = 1, beta: float = 0.1, mu: float = 0.01,
                 baseline: str = "group"):
        self.baseline = _choice("baseline", baseline, BASELINES)
        self.num_generations = _integer("num_generations", num_generations, 1 if baseline == "none" else 2)
        self.num_iterations = _integer("num_iterations", num_iterations, 1)
        self.beta = _real("beta", beta, "a number >= 0", lambda v: v >= 0)
        self.mu = _real("mu", mu, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.ema: torch.nn.Module | None = None
        self.updates = 0
        self._pending: dict | None = None  # a restored state, applied when the policy is next seen

    # --- the anchor -------------------------------------------------------------------------------
    def _anchor(self, model) -> torch.nn.Module:
        """The EMA model; made from `model` (a copy) the first time, with a restored state loaded."""
        if self.ema is None:
            if self._pending is None and self.updates:
                raise RuntimeError("WARP lost its EMA anchor")
            ema = copy.deepcopy(model)
            ema.requires_grad_(False)
            ema.eval()
            if self._pending is not None:
                params = dict(ema.named_parameters())
                saved = self._pending["ema"]
                if set(saved) != set(params):
                    raise ValueError(f"WARP state: the EMA holds {sorted(set(saved) ^ set(params))[:3]} that the "
                                     "policy does not (or misses them): a checkpoint of another model")
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(saved[name].to(p))
                self._pending = None
            self.ema = ema
        return self.ema

    def after_step(self, model) -> None:
        """theta_ema <- (1 - mu) theta_ema + mu theta (once per optimizer step)."""
        if self.ema is None and self._pending is None:
            raise RuntimeError("WARP.after_step before any prepare: the EMA anchor starts at the policy's starting "
                               "weights, which prepare (the first rollout) records")
        ema_update(self._anchor(model), model, self.mu)
        self.updates += 1

    def state_dict(self) -> dict:
        if self.ema is None:
            return dict(self._pending) if self._pending is not None else {"updates": self.updates}
        return {"updates": self.updates,
                "ema": {k: v.detach().cpu().clone() for k, v in self.ema.named_parameters()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))
        self.ema = None
        self._pending = {"updates": self.updates, "ema": dict(state["ema"])} if "ema" in state else None

    # --- the loss ---------------------------------------------------------------------------------
    def prepare(self, model, rollout: dict, reference=None) -> dict:
        """The rollout plus ema_logps (N, C) and, with a reference, ref_logps (N, C). Under no_grad."""
        missing = [k for k in ROLLOUT_KEYS if k not in rollout]
        if missing:
            raise ValueError(f"rollout lacks {', '.join(missing)}: score it first (rizzrun.rollouts.score_rollout)")
        N, G = rollout["rewards"].shape[0], self.num_generations
        if N % G:
            raise ValueError(f"rollout of {N} rows is not whole groups of objective.num_generations={G}: "
                             "sample it with the same num_generations")
        if reference is not None and not callable(reference):
            raise ValueError(f"objective.models.reference: WARP needs the model itself, got {type(reference).__name__}")
        batch = dict(rollout)
        batch["completion_mask"] = rollout["completion_mask"].bool()
        with torch.no_grad():
            batch["ema_logps"] = completion_logps(self._anchor(model), batch)
            if reference is not None:
                batch["ref_logps"] = completion_logps(reference, batch)
        return batch

    def __call__(self, model, batch: dict, reference=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "ema_logps" not in batch:
            raise ValueError("WARP got a rollout that was not prepared: call objective.prepare(model, rollout, ...) "
                             "once per rollout batch first")
        mask = batch["completion_mask"].bool()
        m = mask.float()
        logps, entropy = completion_logps(model, batch, with_entropy=True)  # (N, C) float32, with grad
        seq = (logps * m).sum(-1)
        seq_ema = (batch["ema_logps"].to(logps) * m).sum(-1)
        shaped = shaped_rewards(batch["rewards"].to(logps), seq.detach(), seq_ema, self.beta)
        advantages = baseline_advantages(shaped, self.num_generations, self.baseline)
        loss = -(advantages * seq).mean()
        with torch.no_grad():
            tokens = m.sum()
            per_token = tokens.clamp(min=1.0)
            metrics = {"loss": loss.detach(),
                       "shaped_reward": torch.nanmean(shaped),
                       "kl_ema": (seq.detach() - seq_ema).sum() / per_token,
                       "entropy": (entropy * m).sum() / per_token,
                       "ema_updates": torch.tensor(float(self.updates)),
                       "completions": torch.tensor(mask.shape[0], device=mask.device),
                       "tokens": mask.sum()}
            if "ref_logps" in batch:
                metrics["kl_init"] = (seq.detach() - (batch["ref_logps"].to(logps) * m).sum(-1)).sum() / per_token
        return loss, metrics

    def __repr__(self) -> str:
        return (f"WARP(num_generations={self.num_generations}, num_iterations={self.num_iterations}, "
                f"beta={self.beta}, mu={self.mu}, baseline={self.baseline!r})")
