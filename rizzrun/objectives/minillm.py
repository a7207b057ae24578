"""MiniLLM: knowledge distillation by the reverse KL KL(q_theta || p) on student rollouts.

Gu, Dong, Wei, Huang, "MiniLLM: Knowledge Distillation of Large Language Models", arXiv:2306.08543
(ICLR 2024). Spec: shared/methods/objectives/minillm.md. The loss follows the official code
(microsoft/LMOps, minillm/minillm/{sampler,losses,reward,utils}.py); where the paper and the code
differ the code is the default and the paper's form an option (noted per argument).

Student q (the policy, with grad), teacher p (frozen, `objective.models.teacher`). Rollouts are
sampled from the teacher-mixed p~ = alpha p + (1 - alpha) q per token (`rollout` hook). For
completion tokens y_t (mask M (N, C)), with q_old the student at sampling time:

    r_t   = (log p(y_t) - log q_old(y_t)) / reward_scaling, clipped to +-cliprange_reward   (0 off M)
    A_t   = sum_{t' >= t} gamma^{t'-t} r_t' / n_t          n_t = valid tokens from t on (code)
            sum_{t' >  t} gamma^{t'-t-1} r_t' / n_t        n_t = valid tokens after t, A = 0 at the
                                                           last (include_current=false: the paper's
                                                           R^Norm_{t+1}, the current token is left to
                                                           the single-step term)
            then whitened: (A - mean) / sqrt(var + 1e-8) over the whole (N, C) tensor (padding
            included: the code's quirk) or over M only (whiten_masked); detached
    w_t   = q_old(y_t) / p~(y_t)                           (1 when alpha = 0), detached
    rho_t = exp(log q(y_t) - log q_old(y_t)) * w_t
    L_pg  = sum_M max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) / |M|
    KL_t  = sum_v q(v|ctx_t) (log q(v|ctx_t) - log p(v|ctx_t))      exact over the vocabulary
    L_single = sum_M KL_t / |M|                            (gradient through q only)
    loss  = L_pg + L_single                                (variant "minillm", single_step_reg on)

Baselines (spec "Simpler baseline"), on the same rollouts (sampled from p~: alpha = 1 is the
teacher's samples, alpha = 0 the student's):
    token_rkl  loss = L_single                             (MiniLLM without the long-horizon PG)
    token_fkl  loss = sum_M sum_v p (log p - log q) / |M|  (word-level KD, forward KL)

Left out: the LM loss L_PT on pretraining text (the code's (1 - kd_ratio) CE + kd_ratio KD on an
OpenWebText stream). A `prompts` objective receives rollout batches only (docs/contracts.md
"Rollouts"); there is no second data stream in the contract to draw LM batches from.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from rizzrun.decoders.base import Decoder
from rizzrun.decoders.loop import cache_repeats
from rizzrun.objectives.arguments import choice as _choice, flag as _flag, integer as _integer, real as _real
from rizzrun.rollouts.logps import completion_logits, token_entropy
from rizzrun.rollouts.sample import sample_rollout

__all__ = ["MiniLLM", "TeacherMixedSample", "MixedStepper", "mixture_log_probs", "completion_log_softmax",
           "token_rewards", "minillm_advantages", "whiten", "exact_kl", "pg_token_losses", "VARIANTS"]

VARIANTS = ("minillm", "token_rkl", "token_fkl")
WHITEN_EPS = 1e-8  # LMOps minillm/utils.py whiten: (x - mean) * rsqrt(var + 1e-8)
ROLLOUT_KEYS = ("input_ids", "attention_mask", "completion_mask")


# --- the teacher-mixed sampler ------------------------------------------------------------------------

def mixture_log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, V) float32 log p~ = log(alpha softmax(teacher) + (1 - alpha) softmax(student)), in log space
    (logaddexp of the two weighted log-softmaxes). alpha = 0 / 1: the student's / teacher's log-softmax."""
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    if alpha == 0.0:
        return log_q
    if alpha == 1.0:
        return log_p
    return torch.logaddexp(log_p + math.log(alpha), log_q + math.log1p(-alpha))


class MixedStepper:
    """The student's and the teacher's decoding caches side by side behind the loop's stepper
    interface (rizzrun.decoders.loop.ModelStepper), both fed the same tokens, as
    rizzrun.decoders.principle_guided runs two caches. Returns the scores the decoder samples from:

        alpha = 0: the student's raw logits (the teacher is never run: exactly plain sampling)
        otherwise: log p~ (B, V) float32 (mixture_log_probs)

    `history` holds every returned score row (B, V) float32, one per generated position, so that
    p~(y_t) can be read back for the importance weights (`sampled_log_probs`)."""

    def __init__(self, student, teacher, alpha: float, batch_size: int, max_len: int, device=None):
        self.student, self.teacher, self.alpha = student, teacher, alpha
        self.cache_q = student.init_cache(batch_size, max_len=max_len, device=device)
        self.cache_p = None if alpha == 0.0 else teacher.init_cache(batch_size, max_len=max_len, device=device)
        self.history: list[torch.Tensor] = []

    def _scores(self, logits_q: torch.Tensor, logits_p: torch.Tensor | None) -> torch.Tensor:
        if logits_p is None:
            scores = logits_q
        else:
            if logits_p.shape[-1] != logits_q.shape[-1]:
                raise ValueError(f"teacher has {logits_p.shape[-1]} output logits, the student {logits_q.shape[-1]}: "
                                 "MiniLLM needs one vocabulary (the same tokenizer and vocab_size)")
            scores = mixture_log_probs(logits_q, logits_p, self.alpha)
        self.history.append(torch.log_softmax(scores.float(), dim=-1))
        return scores

    def prefill(self, ids: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        kw = {} if padding is None else {"key_padding_mask": padding}
        logits_q = self.student.step(ids, self.cache_q, **kw)[:, -1]
        logits_p = None if self.cache_p is None else self.teacher.step(ids, self.cache_p, **kw)[:, -1]
        return self._scores(logits_q, logits_p)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits_q = self.student.step(tokens, self.cache_q)[:, -1]
        logits_p = None if self.cache_p is None else self.teacher.step(tokens, self.cache_p)[:, -1]
        return self._scores(logits_q, logits_p)

    def can_expand(self) -> bool:
        """Whether `expand` may follow prefill (decode_loop's num_return_sequences): both caches can repeat
        their rows."""
        return cache_repeats(self.cache_q) and (self.cache_p is None or cache_repeats(self.cache_p))

    def expand(self, repeats: int) -> None:
        """After prefill: B * repeats rows, row b * repeats + g a copy of row b, in both caches and in the
        scores kept so far (each prompt prefilled once per group by the student and the teacher)."""
        self.cache_q = self.cache_q.repeat_interleave(repeats)
        if self.cache_p is not None:
            self.cache_p = self.cache_p.repeat_interleave(repeats)
        self.history = [h.repeat_interleave(repeats, dim=0) for h in self.history]

    def sampled_log_probs(self, completion: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 log of the distribution each completion token (N, C) was drawn from;
        positions past the generated ones (padding to C) get 0."""
        N, C = completion.shape
        out = torch.zeros(N, C, dtype=torch.float32, device=completion.device)
        n = min(C, len(self.history))
        if n:
            table = torch.stack(self.history[:n], dim=1)  # (N, n, V)
            out[:, :n] = table.gather(-1, completion[:, :n].clamp(max=table.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        return out


class TeacherMixedSample(Decoder):
    """Ancestral sampling (temperature 1, no truncation) from p~ = alpha p + (1 - alpha) q per token
    (MiniLLM's teacher-mixed sampling, arXiv:2306.08543 Sec. 2.2; LMOps `teacher_mixed_sample`).
    The student is the `model` given to generate; the teacher is fixed here. The last generate
    call's stepper stays in `last_stepper` (its `history` gives p~ of the sampled tokens)."""

    def __init__(self, teacher, alpha: float, max_new_tokens: int = 64, seed: int | None = None):
        super().__init__(max_new_tokens=max_new_tokens, do_sample=True, seed=seed)
        self.teacher, self.alpha = teacher, float(alpha)
        self.last_stepper: MixedStepper | None = None

    def stepper(self, model, batch_size: int, max_len: int, device):
        self.last_stepper = MixedStepper(model, self.teacher, self.alpha, batch_size, max_len, device)
        return self.last_stepper


# --- log-probabilities over the vocabulary ------------------------------------------------------------

def completion_log_softmax(model, rollout: dict) -> torch.Tensor:
    """(N, C, V) float32 log-softmax of the model's logits at the positions that predict the completion
    tokens (`rizzrun.rollouts.logps.completion_logits`: a group's shared prompt run once where the model
    can; temperature 1). Gradients flow when called outside no_grad."""
    return torch.log_softmax(completion_logits(model, rollout).float(), dim=-1)


def exact_kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """(..., V) log-probs -> (...) float32 KL(a || b) = sum_v a (log a - log b), exact over the
    vocabulary; a token with a = 0 adds 0 (also where log b = -inf: the code's inf masking)."""
    a = log_a.exp()
    diff = torch.where(a > 0, log_a - log_b, torch.zeros_like(log_a))
    return (a * diff).sum(-1)


# --- rewards, advantages, the PG term -----------------------------------------------------------------

def token_rewards(teacher_logps: torch.Tensor, student_logps: torch.Tensor, mask: torch.Tensor,
                  reward_scaling: float | None = 0.5, cliprange_reward: float | None = 100.0) -> torch.Tensor:
    """(N, C) r_t = (log p(y_t) - log q(y_t)) / reward_scaling, clipped to +-cliprange_reward, 0 off
    the mask (LMOps sampler.py: t_rewards + ent_rewards; None or 0 turns scaling / clipping off)."""
    r = (teacher_logps.float() - student_logps.float())
    if reward_scaling:
        r = r / reward_scaling
    if cliprange_reward:
        r = r.clamp(-cliprange_reward, cliprange_reward)
    return r * mask.float()


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8), var unbiased (torch.var_mean, as LMOps utils.whiten); over every
    element (mask None: padding included, the code's quirk) or over the mask's elements only (the
    rest stays 0)."""
    if mask is None:
        var, mean = torch.var_mean(x)
        return (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    m = mask.bool()
    vals = x[m]
    if vals.numel() < 2:
        return torch.zeros_like(x)
    var, mean = torch.var_mean(vals)
    return torch.where(m, (x - mean) * torch.rsqrt(var + WHITEN_EPS), torch.zeros_like(x))


def minillm_advantages(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 0.95, include_current: bool = True,
                       length_norm: bool = True, whitening: bool = True, whiten_masked: bool = False) -> torch.Tensor:
    """(N, C) detached advantages from per-token rewards (N, C) (0 off the mask) and the mask (N, C):
    the discounted reverse cumulative sum (from t on, or after t with include_current=false), divided
    by the number of valid tokens it sums over (length_norm; LMOps losses.py `lens`, clamped to >= 1),
    then whitened (module docstring)."""
    r, m = rewards.float(), mask.float()
    N, C = r.shape
    acc = torch.zeros(N, dtype=torch.float32, device=r.device)
    out = torch.zeros_like(r)
    for t in reversed(range(C)):  # acc = sum_{t' >= t} gamma^{t'-t} r_t'
        if include_current:
            acc = r[:, t] + gamma * acc
            out[:, t] = acc
        else:
            out[:, t] = acc
            acc = r[:, t] + gamma * acc
    if length_norm:
        from_t = m.flip(1).cumsum(1).flip(1)  # valid tokens at t' >= t
        lens = from_t if include_current else from_t - m
        out = out / lens.clamp(min=1.0)
    if not include_current:
        out = out * m
    if whitening:
        out = whiten(out, m if whiten_masked else None)
    return out.detach()


def pg_token_losses(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor,
                    cliprange: float = 0.2) -> dict[str, torch.Tensor]:
    """LMOps losses.py `_pg_loss` per token: rho = exp(logq - logq_old) w, loss = max(-A rho,
    -A clip(rho, 1 - cliprange, 1 + cliprange)), all (N, C). Also `ratio` and `clipped` (the clipped
    side is the one taken and it differs: no gradient there)."""
    ratio = torch.exp(logps - old_logps) * weights
    clipped_ratio = ratio.clamp(1 - cliprange, 1 + cliprange)
    a, b = -advantages * ratio, -advantages * clipped_ratio
    return {"loss": torch.max(a, b), "ratio": ratio, "clipped": b > a}


# --- argument checks -----------------------------------------------------------------------------------




class MiniLLM:
    """MiniLLM (arXiv:2306.08543) and its token-level baselines; a `prompts` objective with a frozen
    teacher (`objective.models.teacher`: a run folder or Hugging Face folder with the student's
    tokenizer and vocabulary; docs/contracts.md "Rollouts").

    rollout = MiniLLM().rollout(model, decoder, prompts, score, eos_id, teacher=t)  # no_grad, teacher-mixed
    batch = MiniLLM().prepare(model, rollout, teacher=t)                            # no_grad, once per rollout
    loss, metrics = MiniLLM()(model, batch, teacher=t)                              # each of the mu steps

    Arguments (defaults = the official code's scripts; module docstring for the formulas):
      variant="minillm"     minillm | token_rkl | token_fkl (spec "Simpler baseline").
      num_generations=1     completions per prompt (the code samples each prompt once).
      num_iterations=4      optimizer steps on each rollout batch (the code's ppo_epochs = 4);
                            > 1: the ratio moves from 1 and clipping acts.
      teacher_mix_alpha=0.2 alpha of p~ = alpha p + (1 - alpha) q; 0: plain student sampling with the
                            run's decoder (w = 1); 1: the teacher's samples (for the KD baselines).
      gamma=0.95            discount of the long-term return (the code's --gamma).
      include_current=True  the return sums from t on (the code) or after t (the paper's R_{t+1}).
      length_norm=True      divide the return by the number of tokens it sums over.
      whiten=True, whiten_masked=False  whiten the advantages, over all (N, C) entries (the code) or
                            the valid tokens only.
      cliprange=0.2         PPO ratio clip.
      reward_scaling=0.5    rewards / reward_scaling (null: none); cliprange_reward=100 (null: none).
      single_step_reg=True  add L_single (variant minillm only).
    Sampling needs the decoder's plain settings when alpha > 0 (temperature 1, no top-k/top-p/typical,
    no repetition penalty or min_new_tokens): p~ must be the distribution the tokens came from.

    metrics (detached; token means over the completion tokens): loss, pg_loss, reg_loss (the mean
    exact reverse KL per token, L_single), fkl (mean exact forward KL per token), seq_rkl (sum of the
    per-token reverse KL per completion, mean over completions: a sequence-level KL(q||p) estimate on
    student samples), teacher_logp (mean log p of the sampled tokens), weight (mean w),
    clip_ratio (fraction of tokens clipped), entropy (the student's), completions, tokens.
    """

    batch_kind = "prompts"
    extra_models = ("teacher",)

    def __init__(self, variant: Literal["minillm", "token_rkl", "token_fkl"] = "minillm", num_generations: int = 1,
                 num_iterations: int = 4, teacher_mix_alpha: float = 0.2, gamma: float = 0.95,
                 include_current: bool = True, length_norm: bool = True, whiten: bool = True,
                 whiten_masked: bool = False, cliprange: float = 0.2, reward_scaling: float | None = 0.5,
                 cliprange_reward: float | None = 100.0, single_step_reg: bool = True):
        self.variant = _choice("variant", variant, VARIANTS)
        self.num_generations = _integer("num_generations", num_generations, 1)
        self.num_iterations = _integer("num_iterations", num_iterations, 1)
        self.teacher_mix_alpha = _real("teacher_mix_alpha", teacher_mix_alpha, "a number in [0, 1]",
                                       lambda v: 0 <= v <= 1)
        self.gamma = _real("gamma", gamma, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.include_current = _flag("include_current", include_current)
        self.length_norm = _flag("length_norm", length_norm)
        self.whiten = _flag("whiten", whiten)
        self.whiten_masked = _flag("whiten_masked", whiten_masked)
        self.cliprange = _real("cliprange", cliprange, "a number in [0, 1)", lambda v: 0 <= v < 1)
        self.reward_scaling = _real("reward_scaling", reward_scaling, "a number > 0", lambda v: v > 0, nullable=True)
        self.cliprange_reward = _real("cliprange_reward", cliprange_reward, "a number > 0", lambda v: v > 0,
                                      nullable=True)
        self.single_step_reg = _flag("single_step_reg", single_step_reg)

    # --- the rollout hook ------------------------------------------------------------------------------
    def rollout(self, model, decoder, prompts: dict, score, eos_id: int, teacher=None) -> dict:
        """num_generations completions of each prompt sampled from p~ (alpha = 0: the run's decoder, as
        the default rollout), scored by `score` (the task's rewards: logged only, MiniLLM's reward is
        the teacher's). Adds `sample_logps` (N, C) float32: log p~(y_t), the probability each token
        was drawn with (0 off the completion mask; absent at alpha = 0, where w = 1)."""
        alpha = self.teacher_mix_alpha
        if alpha == 0.0:
            return score(sample_rollout(model, decoder, prompts, self.num_generations, eos_id))
        if teacher is None:
            raise ValueError(f"MiniLLM with teacher_mix_alpha={alpha:g} samples from the teacher: set "
                             "objective.models.teacher (a run folder)")
        plain = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "typical_p": 1.0,
                 "repetition_penalty": 1.0, "min_new_tokens": 0}
        for key, want in plain.items():
            have = getattr(decoder, key, want)
            if have != want:
                raise ValueError(f"decoder.{key}={have!r}: MiniLLM's teacher-mixed sampling (teacher_mix_alpha="
                                 f"{alpha:g}) draws from p~ itself; allowed: decoder.{key}={want!r} (decoder=sample with "
                                 "temperature 1, top_k 0, top_p 1), or objective.teacher_mix_alpha=0")
        mixed = TeacherMixedSample(teacher, alpha, max_new_tokens=decoder.max_new_tokens,
                                   seed=getattr(decoder, "seed", None))
        rollout = sample_rollout(model, mixed, prompts, self.num_generations, eos_id)
        mask = rollout["completion_mask"]
        completion = rollout["input_ids"][:, -mask.shape[1]:]
        rollout["sample_logps"] = mixed.last_stepper.sampled_log_probs(completion) * mask
        return score(rollout)

    # --- prepare ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, model, rollout: dict, teacher=None) -> dict:
        """Under no_grad, once per rollout: the teacher's log-softmax at every completion position
        (N, C, V), old_logps (N, C) (the student now = at sampling time), w (N, C), and for the minillm
        variant rewards r_t and advantages (N, C)."""
        missing = [k for k in ROLLOUT_KEYS if k not in rollout]
        if missing:
            raise ValueError(f"rollout lacks {', '.join(missing)}: make it with rizzrun.rollouts.sample_rollout or "
                             "MiniLLM.rollout")
        if teacher is None:
            raise ValueError("MiniLLM needs a teacher model: set objective.models.teacher (a run folder with the "
                             "student's tokenizer)")
        if not callable(teacher):
            raise ValueError(f"objective.models.teacher: MiniLLM needs the model itself, got {type(teacher).__name__} "
                             "(set objective.precompute=[])")
        t = rollout.get("temperature")
        if t is not None and float(t) != 1.0:
            raise ValueError(f"rollout temperature {float(t):g}: MiniLLM distils the student's own distribution; "
                             "allowed: decoder.temperature=1")
        batch = dict(rollout)
        mask = rollout["completion_mask"].bool()
        batch["completion_mask"] = mask
        log_q = completion_log_softmax(model, batch)
        log_p = completion_log_softmax(teacher, batch)
        if log_p.shape[-1] != log_q.shape[-1]:
            raise ValueError(f"teacher has {log_p.shape[-1]} output logits, the student {log_q.shape[-1]}: MiniLLM "
                             "needs one vocabulary (the same tokenizer and vocab_size)")
        C = mask.shape[1]
        targets = rollout["input_ids"][:, -C:].unsqueeze(-1)
        old = log_q.gather(-1, targets).squeeze(-1) * mask
        teacher_logps = log_p.gather(-1, targets).squeeze(-1) * mask
        batch["teacher_log_softmax"] = log_p
        batch["old_logps"] = old
        batch["teacher_logps"] = teacher_logps
        if self.teacher_mix_alpha == 0.0 or "sample_logps" not in rollout:
            batch["weights"] = torch.ones_like(old)
        else:  # w = q_old / p~, 1 off the mask
            batch["weights"] = torch.where(mask, torch.exp(old - rollout["sample_logps"].to(old)), torch.ones_like(old))
        if self.variant == "minillm":
            r = token_rewards(teacher_logps, old, mask, self.reward_scaling, self.cliprange_reward)
            batch["token_rewards"] = r
            batch["advantages"] = minillm_advantages(r, mask, self.gamma, self.include_current, self.length_norm,
                                                     self.whiten, self.whiten_masked)
        return batch

    # --- the loss --------------------------------------------------------------------------------------
    def __call__(self, model, batch: dict, teacher=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "teacher_log_softmax" not in batch or (self.variant == "minillm" and "advantages" not in batch):
            raise ValueError("MiniLLM got a rollout that was not prepared: call objective.prepare(model, rollout, "
                             "teacher=...) once per rollout batch first")
        mask = batch["completion_mask"].bool()
        m = mask.float()
        tokens = m.sum()
        denom = tokens.clamp(min=1.0)
        log_q = completion_log_softmax(model, batch)  # (N, C, V) with grad
        log_p = batch["teacher_log_softmax"].to(log_q)
        rkl = exact_kl(log_q, log_p)  # (N, C), gradient through q
        reg_loss = (rkl * m).sum() / denom
        C = mask.shape[1]
        logps = log_q.gather(-1, batch["input_ids"][:, -C:].unsqueeze(-1)).squeeze(-1) * m
        clipped = None
        if self.variant == "minillm":
            terms = pg_token_losses(logps, batch["old_logps"].to(logps), batch["advantages"].to(logps),
                                    batch["weights"].to(logps), self.cliprange)
            pg_loss = (terms["loss"] * m).sum() / denom
            clipped = terms["clipped"]
            loss = pg_loss + reg_loss if self.single_step_reg else pg_loss
        elif self.variant == "token_rkl":
            pg_loss, loss = None, reg_loss
        else:
            fkl_t = exact_kl(log_p, log_q)
            pg_loss, loss = None, (fkl_t * m).sum() / denom
        with torch.no_grad():
            def token_mean(x: torch.Tensor) -> torch.Tensor:
                return (x.float() * m).sum() / denom

            metrics = {"loss": loss.detach(), "reg_loss": reg_loss.detach(),
                       "fkl": token_mean(exact_kl(log_p, log_q.detach())),
                       "seq_rkl": (rkl.detach() * m).sum(1).mean() if mask.shape[0] else torch.tensor(0.0),
                       "teacher_logp": token_mean(batch["teacher_logps"]),
                       "weight": token_mean(batch["weights"]),
                       "entropy": token_mean(token_entropy(log_q.detach())),
                       "completions": torch.tensor(mask.shape[0], device=mask.device),
                       "tokens": mask.sum()}
            if pg_loss is not None:
                metrics["pg_loss"] = pg_loss.detach()
                metrics["clip_ratio"] = token_mean(clipped)
        return loss, metrics

    def __repr__(self) -> str:
        keys = ("variant", "num_generations", "num_iterations", "teacher_mix_alpha", "gamma", "include_current",
                "length_norm", "whiten", "whiten_masked", "cliprange", "reward_scaling", "cliprange_reward",
                "single_step_reg")
        return f"MiniLLM({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"
