"""SCoRe: two-attempt self-correction trained by multi-turn on-policy RL.

Kumar et al., "Training Language Models to Self-Correct via Reinforcement Learning",
arXiv:2409.12917. Spec: shared/methods/objectives/score.md. No public reference implementation.

Rollout (the objective's `rollout` hook; G = num_generations rows per prompt, N = B*G):
    x_1 = prompt                                  y_1 ~ pi(.|x_1)   (the run's decoder)
    x_2 = x_1 ++ text(y_1) ++ [EOS] ++ enc(instruction) ++ restated   y_2 ~ pi(.|x_2)
text(y_1) is y_1 without its EOS (a truncated y_1 as it is: already cut at the decoder's
max_new_tokens), so every x_2 shows the first attempt terminated by one EOS, as the SFT data
`arithmetic_retry_sft` writes it; restated = x_1 without its leading EOS (restate_prompt=true) or
nothing. Turn 2 draws with the decoder seed + 1 (a seeded decoder restarts from its seed at every
generate call; the same uniforms at both turns would copy y_1 whenever the two distributions agree).
Both attempts are scored with the run's rewards against the prompt's data row (score(rollout));
an attempt without EOS (truncated) gets reward 0.

The returned rollout is turn 1's (input_ids, attention_mask, completion_mask, truncated, group,
row, temperature, rewards = r1_hat (N,), reward_per_function) extended with turn 2's tensors under
`t2_` (t2_input_ids (N, P2 + C2), t2_attention_mask, t2_completion_mask (N, C2), t2_truncated,
t2_rewards = r2_hat (N,), t2_reward_per_function) and `edit_ratio` (N,): Levenshtein distance
between the token ids of text(y_1) and text(y_2) over the longer one's length (0 when both are
empty). So the runner's rollout metrics (reward, completions/*) are turn 1's.

Turn rewards (stage, alpha):
    stage 1 (Stage I):  (0, r2_hat)                 KL: beta_2 on turn 1, beta_1 on turn 2
                                                    (stage1_turn2_kl=false: 0 on turn 2)
    stage 2 (Stage II): (r1_hat, r2_hat + alpha (r2_hat - r1_hat))   KL: beta_1 on both turns
    naive multi-turn RL = stage 2 with alpha = 0 (reward r1_hat + r2_hat, beta_1 only).
Credit (unconfirmed in the paper): "turn" (default) trains each attempt's tokens on its own turn
reward, so the alpha bonus reaches only y_2 and Stage I's turn 1 feels only its KL; "return"
gives y_1 the return r_1 + r_2 (gamma = 1: y_1 is also credited with what y_2 then earns).
Baseline (not given by the paper): per prompt, per turn, the group mean of the G returns
("group_mean"), or the mean of the other G - 1 ("rloo"). A_{n,i} = R_{n,i} - baseline; no std
division (REINFORCE).

Loss, token-level over each turn's generated tokens only (mask M_i: y_i up to its EOS; x_1, y_1
inside x_2, the instruction and the restated prompt are never in it):
    L = sum_i mean_n( sum_t M_i (-A_{n,i} rho_t + beta_i k3_t) / max(sum_t M_i, 1) )
    rho_t = exp(lp_t - stopgrad(lp_t)) (value 1, gradient grad lp_t: REINFORCE); with
            num_iterations > 1, exp(lp_t - lp_old_t) (the rollout policy's log-probs, kept by
            prepare: importance-weighted, unclipped, for the later steps on the same rollout),
    k3_t = exp(lref_t - lp_t) - (lref_t - lp_t) - 1 (lref: the reference = the base model).
y_1 enters turn 2 only as token ids of x_2, so no turn-2 term differentiates through it.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch

from rizzrun.errors import InputError
from rizzrun.objectives.arguments import choice as _choice, flag as _flag, integer as _integer, real as _real
from rizzrun.rollouts.logps import completion_logps
from rizzrun.rollouts.sample import sample_rollout

__all__ = ["SCoRe", "attempt_metrics", "edit_ratio", "second_prompt", "evaluate_attempts", "turn_returns", "two_attempt_rollout",
           "CREDITS", "BASELINES"]

CREDITS = ("turn", "return")
BASELINES = ("group_mean", "rloo")
T2 = "t2_"
TURN_KEYS = ("input_ids", "attention_mask", "completion_mask", "truncated", "rewards", "reward_per_function")


# ---- pure pieces --------------------------------------------------------------------------------

def turn_returns(r1: torch.Tensor, r2: torch.Tensor, stage: int, alpha: float, credit: str = "turn") -> torch.Tensor:
    """(N, 2) returns of turn 1 and turn 2 from the verifier rewards r1, r2 (N,) (module docstring)."""
    r1, r2 = r1.float(), r2.float()
    if stage == 1:
        t1, t2 = torch.zeros_like(r1), r2
    elif stage == 2:
        t1, t2 = r1, r2 + alpha * (r2 - r1)
    else:
        raise ValueError(f"stage={stage!r}: allowed are 1, 2")
    if credit == "return":
        t1 = t1 + t2
    elif credit != "turn":
        raise ValueError(f"credit={credit!r}: allowed are {', '.join(CREDITS)}")
    return torch.stack([t1, t2], dim=1)


def baseline_advantages(returns: torch.Tensor, num_generations: int, baseline: str = "group_mean") -> torch.Tensor:
    """(N, K) advantages of returns (N, K) in groups of G adjacent rows: R - group mean, or R - the mean
    of the group's other G - 1 rows (rloo; = G/(G-1) (R - mean)); G = 1 gives 0."""
    N, K = returns.shape
    G = int(num_generations)
    if G < 1 or N % G:
        raise ValueError(f"{N} rows are not whole groups of num_generations={G}")
    grouped = returns.float().view(-1, G, K)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if baseline == "rloo":
        centred = centred * (G / (G - 1)) if G > 1 else torch.zeros_like(centred)
    elif baseline != "group_mean":
        raise ValueError(f"baseline={baseline!r}: allowed are {', '.join(BASELINES)}")
    return centred.reshape(N, K)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insert, delete, substitute: cost 1) between two sequences (ids, or the
    characters of two strings: SPaR's pairs, rizzrun.selfplay.spar); Wagner-Fischer, O(len(a) len(b))."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_ratio(a: list[int], b: list[int]) -> float:
    """edit_distance(a, b) / max(len(a), len(b)); 0.0 when both are empty."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def attempt_metrics(r1: torch.Tensor, r2: torch.Tensor, edits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The paper's metrics over N rows: an attempt is correct when its reward > 0.5 (0/1 verifiers).
    accuracy@t1, accuracy@t2, delta/t1_t2 = acc@t2 - acc@t1, delta/i_to_c (wrong at t1, correct at
    t2), delta/c_to_i (correct -> wrong), edit_distance_ratio (mean of edit_ratio(y_1, y_2))."""
    c1, c2 = r1.float() > 0.5, r2.float() > 0.5
    acc1, acc2 = c1.float().mean(), c2.float().mean()
    return {"accuracy@t1": acc1, "accuracy@t2": acc2, "delta/t1_t2": acc2 - acc1,
            "delta/i_to_c": (~c1 & c2).float().mean(), "delta/c_to_i": (c1 & ~c2).float().mean(),
            "edit_distance_ratio": edits.float().mean()}


def _answer_ids(ids: torch.Tensor, mask: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Each row's completion ids where mask, without EOS."""
    return [[t for t, k in zip(r, m) if k and t != eos_id] for r, m in zip(ids.tolist(), mask.tolist())]


def second_prompt(x1: list[int], answer: list[int], eos_id: int, instruction_ids: list[int],
                  restate_prompt: bool = True) -> list[int]:
    """x_2 = x_1 ++ text(y_1) ++ [EOS] ++ instruction ++ (x_1 without its leading EOS, when restate_prompt)."""
    restated = (x1[1:] if x1[:1] == [eos_id] else x1) if restate_prompt else []
    return [*x1, *answer, eos_id, *instruction_ids, *restated]


def two_attempt_rollout(model, decoder, prompts: dict, score: Callable[[dict], dict], eos_id: int,
                        num_generations: int, instruction_ids: list[int], restate_prompt: bool = True,
                        pad_id: int = 0) -> dict:
    """The two-attempt rollout of a prompts batch (module docstring): turn 1 = sample_rollout, x_2 built
    per row, turn 2 = sample_rollout of the N x_2 rows (one each), both scored by `score` (which reads
    rollout["row"] and rollout["group"]); truncated attempts get reward 0."""
    r1 = score(sample_rollout(model, decoder, prompts, num_generations, eos_id, pad_id))
    C1 = r1["completion_mask"].shape[1]
    P = r1["input_ids"].shape[1] - C1
    prompt_ids, prompt_mask = r1["input_ids"][:, :P], r1["attention_mask"][:, :P].bool()
    y1 = _answer_ids(r1["input_ids"][:, P:], r1["completion_mask"], eos_id)
    rows = [second_prompt([t for t, k in zip(ids, keep) if k], answer, eos_id, instruction_ids, restate_prompt)
            for ids, keep, answer in zip(prompt_ids.tolist(), prompt_mask.tolist(), y1)]
    width = max(len(r) for r in rows)
    x2 = torch.full((len(rows), width), pad_id, dtype=torch.long, device=prompt_ids.device)
    m2 = torch.zeros((len(rows), width), dtype=torch.bool, device=prompt_ids.device)
    for n, r in enumerate(rows):
        x2[n, width - len(r):] = torch.tensor(r, dtype=torch.long)
        m2[n, width - len(r):] = True
    seed = getattr(decoder, "seed", None)
    if seed is not None:
        decoder.seed = (int(seed) + 1) % 2**63
    try:
        r2 = sample_rollout(model, decoder, {"prompt_ids": x2, "prompt_mask": m2, "row": r1["row"]}, 1, eos_id, pad_id)
    finally:
        if seed is not None:
            decoder.seed = seed
    r2["group"] = r1["group"]
    r2 = score(r2)
    for r in (r1, r2):  # an attempt without EOS earns nothing
        r["rewards"] = torch.where(r["truncated"], torch.zeros_like(r["rewards"]), r["rewards"])
    C2 = r2["completion_mask"].shape[1]
    y2 = _answer_ids(r2["input_ids"][:, -C2:], r2["completion_mask"], eos_id)
    out = dict(r1)
    out.update({T2 + k: r2[k] for k in TURN_KEYS})
    out["edit_ratio"] = torch.tensor([edit_ratio(a, b) for a, b in zip(y1, y2)], dtype=torch.float32,
                                     device=prompt_ids.device)
    return out


def turn_view(batch: dict, turn: int) -> dict:
    """The rollout-shaped dict of one turn (input_ids, attention_mask, completion_mask, temperature)."""
    pre = "" if turn == 1 else T2
    view = {k: batch[pre + k] for k in ("input_ids", "attention_mask", "completion_mask")}
    if "temperature" in batch:
        view["temperature"] = batch["temperature"]
    return view



class SCoRe:
    """SCoRe (arXiv:2409.12917): two attempts per rollout row, REINFORCE with a per-prompt baseline and
    token-level k3 KL to the base model on each turn's own tokens (module docstring); a `prompts`
    objective with a `rollout` hook (docs/contracts.md "Rollouts").

      stage=2               1: Stage I (maximise r2_hat, KL beta_2 on turn 1); 2: Stage II (shaped
                            rewards, KL beta_1 on both turns). Naive multi-turn RL: stage 2, alpha 0.
      alpha=10.0            Stage II bonus alpha (r2_hat - r1_hat) on turn 2 (>= 0; paper: > 1).
      beta_1=0.01           KL coefficient of Stage II (both turns) and of Stage I's turn 2.
      beta_2=0.1            Stage I's KL coefficient on turn 1 (large: pins y_1 to the base model).
      stage1_turn2_kl=True  Stage I keeps beta_1 on turn 2 (the paper is unclear; harmless).
      credit="turn"         turn | return: what y_1's tokens are trained on (module docstring).
      baseline="group_mean" group_mean | rloo: the per-prompt baseline of each turn's return.
      num_generations=8     G attempts-pairs per prompt (>= 2: a baseline from the group).
      instruction=" retry:" the fixed self-correction text after the first attempt (and its EOS); the
                            same at train and eval time, and in data=arithmetic_retry_sft.
      restate_prompt=True   x_2 repeats the problem after the instruction (without its leading EOS).
      num_iterations=1      optimizer steps per rollout (1: on-policy REINFORCE, the paper's; > 1:
                            the ratio to the rollout policy's log-probs, unclipped).

    The instruction is encoded with the run's tokenizer: `use_tokenizer(tokenizer)` (the runner calls it
    when it builds the objective: rizzrun.runner.extra_models.build_objective).

    prepare(model, rollout, reference=None): adds returns and advantages (N, 2), ref_logps / t2_ref_logps
    (N, C) (when a KL coefficient of that turn is > 0; needs the reference model), old_logps /
    t2_old_logps (num_iterations > 1).
    __call__(model, batch, reference=None) -> (loss, metrics): loss, kl/t1, kl/t2 (token means of k3),
    reward_total (mean of the trained returns, turn 1 + turn 2 under "turn" credit), accuracy@t1,
    accuracy@t2, delta/t1_t2, delta/i_to_c, delta/c_to_i, edit_distance_ratio (attempt_metrics),
    completions (N, the runner's weight), tokens (generated tokens of both turns).
    """

    batch_kind = "prompts"
    extra_models = ("reference",)
    def __init__(self, stage: int = 2, alpha: float = 10.0, beta_1: float = 0.01, beta_2: float = 0.1,
                 stage1_turn2_kl: bool = True, credit: Literal["turn", "return"] = "turn",
                 baseline: Literal["group_mean", "rloo"] = "group_mean", num_generations: int = 8,
                 instruction: str = " retry:", restate_prompt: bool = True, num_iterations: int = 1):
        if stage not in (1, 2) or isinstance(stage, bool):
            raise InputError(f"objective.stage={stage!r}: allowed are 1 (Stage I) and 2 (Stage II)")
        self.stage = int(stage)
        self.alpha = _real("alpha", alpha, "a number >= 0", lambda v: v >= 0)
        self.beta_1 = _real("beta_1", beta_1, "a number >= 0", lambda v: v >= 0)
        self.beta_2 = _real("beta_2", beta_2, "a number >= 0", lambda v: v >= 0)
        self.stage1_turn2_kl = _flag("stage1_turn2_kl", stage1_turn2_kl)
        self.restate_prompt = _flag("restate_prompt", restate_prompt)
        self.credit = _choice("credit", credit, CREDITS)
        self.baseline = _choice("baseline", baseline, BASELINES)
        self.num_generations = _integer("num_generations", num_generations, 2)
        self.num_iterations = _integer("num_iterations", num_iterations, 1)
        if not isinstance(instruction, str) or not instruction:
            raise InputError(f"objective.instruction={instruction!r}: must be a non-empty string (e.g. ' retry:')")
        self.instruction = instruction
        self._tokenizer = None

    @property
    def betas(self) -> tuple[float, float]:
        """(KL coefficient of turn 1, of turn 2) in this stage."""
        if self.stage == 1:
            return self.beta_2, (self.beta_1 if self.stage1_turn2_kl else 0.0)
        return self.beta_1, self.beta_1

    def use_tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def instruction_ids(self, score=None) -> list[int]:
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise ValueError("SCoRe needs the run's tokenizer to encode objective.instruction: call "
                             "objective.use_tokenizer(tokenizer) first")
        return list(tokenizer.encode(self.instruction))

    def rollout(self, model, decoder, prompts: dict, score, eos_id: int, **extra) -> dict:
        """The runner's hook: two_attempt_rollout with this objective's G, instruction and template."""
        return two_attempt_rollout(model, decoder, prompts, score, eos_id, self.num_generations,
                                   self.instruction_ids(score), self.restate_prompt)

    def prepare(self, model, rollout: dict, reference=None) -> dict:
        """Advantages (N, 2) and the reference's log-probs of each turn whose KL coefficient is > 0."""
        missing = [k for k in ("rewards", *(T2 + k for k in TURN_KEYS)) if k not in rollout]
        if missing:
            raise ValueError(f"rollout lacks {', '.join(missing)}: SCoRe trains on its own two-attempt rollouts "
                             "(objective.rollout)")
        N = rollout["rewards"].shape[0]
        if N % self.num_generations:
            raise ValueError(f"rollout of {N} rows is not whole groups of objective.num_generations="
                             f"{self.num_generations}")
        batch = dict(rollout)
        returns = turn_returns(rollout["rewards"], rollout[T2 + "rewards"], self.stage, self.alpha, self.credit)
        batch["returns"] = returns
        batch["advantages"] = baseline_advantages(returns, self.num_generations, self.baseline)
        for turn, beta in zip((1, 2), self.betas):
            pre = "" if turn == 1 else T2
            if self.num_iterations > 1:
                with torch.no_grad():
                    batch[pre + "old_logps"] = completion_logps(model, turn_view(batch, turn))
            if beta > 0:
                if reference is None or not callable(reference):
                    raise ValueError(f"SCoRe stage {self.stage} has KL coefficient {beta:g} on turn {turn}: set "
                                     "objective.models.reference (the base model: init, or a run folder)")
                with torch.no_grad():
                    batch[pre + "ref_logps"] = completion_logps(reference, turn_view(batch, turn))
        return batch

    def __call__(self, model, batch: dict, reference=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "advantages" not in batch:
            raise ValueError("SCoRe got a rollout that was not prepared: call objective.prepare(model, rollout, ...)")
        loss = 0.0
        metrics: dict[str, torch.Tensor] = {}
        tokens = 0
        for turn, beta in zip((1, 2), self.betas):
            pre = "" if turn == 1 else T2
            view = turn_view(batch, turn)
            mask = view["completion_mask"].bool()
            m = mask.float()
            lp = completion_logps(model, view)
            A = batch["advantages"][:, turn - 1].to(lp).unsqueeze(1)
            old = batch.get(pre + "old_logps")
            old = lp.detach() if old is None else old.to(lp)
            token_loss = -A * torch.exp(lp - old)
            if beta > 0:
                if pre + "ref_logps" not in batch:
                    raise ValueError(f"SCoRe with KL {beta:g} on turn {turn} got a batch without {pre}ref_logps: "
                                     "prepare it with this objective and a reference")
                x = batch[pre + "ref_logps"].to(lp) - lp
                kl = torch.exp(x) - x - 1
                token_loss = token_loss + beta * kl
                metrics[f"kl/t{turn}"] = ((kl.detach() * m).sum() / m.sum().clamp(min=1.0))
            loss = loss + ((token_loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
            tokens = tokens + mask.sum()
        with torch.no_grad():
            metrics["loss"] = loss.detach()
            metrics["reward_total"] = batch["returns"].float().sum(-1).mean() if self.credit == "turn" else \
                batch["returns"][:, 0].float().mean()
            metrics.update(attempt_metrics(batch["rewards"], batch[T2 + "rewards"], batch["edit_ratio"]))
            metrics["completions"] = torch.tensor(batch["rewards"].shape[0])
            metrics["tokens"] = tokens
        return loss, metrics

    def __repr__(self) -> str:
        return (f"SCoRe(stage={self.stage}, alpha={self.alpha}, beta_1={self.beta_1}, beta_2={self.beta_2}, "
                f"stage1_turn2_kl={self.stage1_turn2_kl}, credit={self.credit!r}, baseline={self.baseline!r}, "
                f"num_generations={self.num_generations}, instruction={self.instruction!r}, "
                f"restate_prompt={self.restate_prompt}, num_iterations={self.num_iterations})")


# ---- evaluation of both attempts ----------------------------------------------------------------

@torch.no_grad()
def evaluate_attempts(model, tokenizer, prompts: list[str], answers: list[int], instruction: str = " retry:",
                      restate_prompt: bool = True, max_new_tokens: int = 6, batch_size: int = 100) -> dict:
    """Greedy two-attempt evaluation on prompts ("a+b=") with their integer answers: attempt_metrics
    (floats) plus n and examples (the first 5: prompt, y_1, y_2 texts)."""
    from rizzrun.data.prompts import left_padded
    from rizzrun.decoders.greedy import Greedy
    from rizzrun.rewards.combine import RewardSet
    from rizzrun.rewards.verifiable import leading_integer_match
    from rizzrun.rollouts.sample import completion_texts, score_rollout

    model.eval()
    decoder = Greedy(max_new_tokens=max_new_tokens)
    rewards = RewardSet({"correct": leading_integer_match})
    ids = list(tokenizer.encode(instruction))
    r1s, r2s, edits, examples = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        chunk_answers = answers[start:start + batch_size]
        batch = left_padded([[tokenizer.eos_id, *tokenizer.encode(p)] for p in chunk])
        batch["row"] = torch.arange(len(chunk))

        def score(rollout: dict) -> dict:
            score_rollout(rollout, tokenizer, rewards, chunk, {"answer": chunk_answers})
            return rollout

        r = two_attempt_rollout(model, decoder, batch, score, tokenizer.eos_id, 1, ids, restate_prompt)
        r1s.append(r["rewards"])
        r2s.append(r[T2 + "rewards"])
        edits.append(r["edit_ratio"])
        if not examples:
            t1 = completion_texts(r, tokenizer)
            t2 = completion_texts({k: r[T2 + k] for k in ("input_ids", "completion_mask")}, tokenizer)
            examples = [{"prompt": p, "y1": a, "y2": b} for p, a, b in zip(chunk[:5], t1, t2)]
    out = {k: float(v) for k, v in attempt_metrics(torch.cat(r1s), torch.cat(r2s), torch.cat(edits)).items()}
    out["n"] = len(prompts)
    out["examples"] = examples
    return out
