"""Bradley–Terry reward model with optional RRM augmentation (cross-prompt response swaps).

Reward model: a scalar head on the final-norm hidden state of the last real token of
prompt + completion, r(x, y) = head(h_last). Pointwise Bradley–Terry loss on a pair (a, b):

    delta = r(x, y_a) - r(x, y_b)
    L     = -[ q log sigmoid(delta) + (1 - q) log sigmoid(-delta) ]     q = 1 (a preferred), 0.5 (tie)

RRM: Liu et al., "RRM: Robust Reward Model Training Mitigates Reward Hacking", arXiv:2409.13156.
For each data triplet (x_i, y_i^w, y_i^l) and a partner j = sigma(i) with another prompt, five
pairs under x_i: y_i^w > y_j^w, y_i^w > y_j^l, y_i^l > y_j^w, y_i^l > y_j^l (on-topic beats
off-topic) and the tie y_j^w ~ y_j^l (both off-topic). Spec: ../shared/methods/objectives/rrm.md.

A pointwise model scores each (prompt, response) alone, so the order of a pair only flips the
sign of delta and the label (L(delta, q) = L(-delta, 1 - q)): the paper's "both orderings"
position-bias control matters for pairwise models only, and is not needed here.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.objectives.extra import Precomputed
from rizzrun.objectives.preference import IGNORE, check_preference_batch, join

__all__ = ["BradleyTerry", "ScalarRewardModel", "reward_model_from_state", "bt_loss", "last_token_rewards", "response_nll",
           "rrm_partners", "rrm_pairs", "AUGMENTS"]

AUGMENTS = ("none", "rrm")
_SHUFFLE_TRIES = 64


# --- rewards ----------------------------------------------------------------------------------

def last_token_rewards(lm, head: nn.Linear, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) float32 rewards head(h[i, lengths[i] - 1]) of right-padded input_ids (N, T), with
    h = lm.hidden_states(input_ids) (N, T, d_model); lengths (N,) = real tokens per row (>= 1).
    The head runs in float32 with autocast off, whatever dtype its weights are kept in (a
    bf16-true run keeps them in bf16)."""
    if lengths.ndim != 1 or lengths.shape[0] != input_ids.shape[0]:
        raise ValueError(f"lengths {tuple(lengths.shape)} must be (N,) for input_ids {tuple(input_ids.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > input_ids.shape[1]):
        raise ValueError(f"lengths must be in [1, T={input_ids.shape[1]}], got {lengths.tolist()}")
    return _head_at_last(lm.hidden_states(input_ids), head, lengths)


def _head_at_last(hidden: torch.Tensor, head: nn.Linear, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) float32 head(hidden[i, lengths[i] - 1]) of hidden states (N, T, d), autocast off."""
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths.to(hidden.device) - 1]
    with torch.autocast(device_type=last.device.type, enabled=False):
        bias = None if head.bias is None else head.bias.float()
        return F.linear(last.float(), head.weight.float(), bias).squeeze(-1)


def response_nll(lm, hidden: torch.Tensor, input_ids: torch.Tensor, starts: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (float32 scalar) of the response tokens input_ids[i, starts[i]:lengths[i]]
    (right-padded rows (N, T), starts = real prompt tokens) under lm.lm_head(hidden) (N, T, d): the
    ScoreLM's language-model loss (BSPO, arXiv:2503.18130). 0 when no row has a response token."""
    if not hasattr(lm, "lm_head"):
        raise ValueError(f"lm_coef > 0 trains the model's LM head: {type(lm).__name__} has no lm_head")
    T = input_ids.shape[1]
    pos = torch.arange(1, T, device=input_ids.device)
    keep = (pos >= starts.to(pos.device)[:, None]) & (pos < lengths.to(pos.device)[:, None])
    if not bool(keep.any()):
        return hidden.new_zeros((), dtype=torch.float32)
    logits = lm.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, input_ids[:, 1:][keep])


def _joined(prompt_ids, prompt_mask, completion_ids, completion_mask, pad_id: int):
    """(input_ids (N, T), lengths (N,)): prompt ++ completion of every row, right-padded, the last
    real token included (join's next-token inputs drop the last position, so ask one longer)."""
    n = prompt_mask.sum(1) + completion_mask.sum(1)
    longest = int(n.max()) if n.numel() else 1
    input_ids, _ = join(prompt_ids, prompt_mask, completion_ids, completion_mask, pad_id, length=longest + 1)
    return input_ids, n


def _lengths_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Real tokens per row of `join` labels (labels[t] = token t + 1 on completion tokens): the
    last completion label's position + 2."""
    real = labels != IGNORE
    if not bool(real.any(-1).all()):
        raise ValueError("a row of labels has no completion token, so its last token is unknown: pass lengths (N,)")
    pos = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return torch.where(real, pos, torch.full_like(pos, -1)).max(-1).values + 2


class ScalarRewardModel(nn.Module):
    """A trained reward model: `lm` (anything with hidden_states(input_ids) -> (N, T, d_model))
    plus its scalar `head` (nn.Linear(d_model, 1)).

    forward(input_ids (N, T), labels_or_lengths) -> (N,) float32 rewards, read at each row's
      last real token: lengths (N,) real tokens per right-padded row, or `join` labels (N, T)
      (`join(..., length=L + 1)` so that the last token is inside input_ids).
    score(prompt_ids, prompt_mask, completion_ids, completion_mask) -> (B,) rewards of B
      (prompt, completion) pairs in the `preference` batch layout.
    """

    def __init__(self, lm: nn.Module, head: nn.Module, pad_id: int = 0):
        super().__init__()
        self.lm = lm
        self.head = head
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor, labels_or_lengths: torch.Tensor) -> torch.Tensor:
        if labels_or_lengths.ndim == 1:
            lengths = labels_or_lengths
        else:
            lengths = _lengths_from_labels(labels_or_lengths)
            if lengths.numel() and int(lengths.max()) > input_ids.shape[1]:
                raise ValueError("a row's last label is at the last position of input_ids, so its last token is "
                                 "not in input_ids: build them with join(..., length=L + 1) or pass lengths (N,)")
        return last_token_rewards(self.lm, self.head, input_ids, lengths)

    def score(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        return self(*_joined(prompt_ids, prompt_mask, completion_ids, completion_mask, self.pad_id))


def reward_model_from_state(lm: nn.Module, state: dict, pad_id: int = 0) -> ScalarRewardModel:
    """ScalarRewardModel(lm, head) with the head from a state dict holding `head.weight` (1, d) and
    `head.bias` (1,): BradleyTerry.state_dict(), a checkpoint's `objective` entry, or the runner's
    full state dict (keys `objective.head.*`)."""
    for prefix in ("", "objective."):
        if f"{prefix}head.weight" in state:
            weight, bias = state[f"{prefix}head.weight"], state.get(f"{prefix}head.bias")
            break
    else:
        raise ValueError(f"no reward head in the state: expected 'head.weight' or 'objective.head.weight', "
                         f"got keys {sorted(state)[:8]}")
    if weight.ndim != 2 or weight.shape[0] != 1:
        raise ValueError(f"head.weight {tuple(weight.shape)} is not a scalar head: expected (1, d_model)")
    head = nn.Linear(weight.shape[1], 1, bias=bias is not None)
    head.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
    head.to(next(lm.parameters()).device)
    return ScalarRewardModel(lm, head, pad_id)


# --- the loss ---------------------------------------------------------------------------------

def bt_loss(delta: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(N,) -[q log sigmoid(delta) + (1 - q) log sigmoid(-delta)] (q = 1: a preferred, 0.5: tie)."""
    return -(q * F.logsigmoid(delta) + (1.0 - q) * F.logsigmoid(-delta))


# --- RRM augmentation -------------------------------------------------------------------------

def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row's real tokens as a tuple (the comparison key of prompts and responses)."""
    ids, mask = ids.tolist(), mask.tolist()
    return [tuple(t for t, m in zip(r, k) if m) for r, k in zip(ids, mask)]


def _batch_generator(seed: int, rows: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded from (seed, the batch's row ids): the same batch is always augmented
    the same way, on any device and after any resume, with no state to checkpoint."""
    digest = hashlib.blake2b(f"{seed}:{rows.tolist()}".encode(), digest_size=8).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def rrm_partners(prompts: list[tuple], generator: torch.Generator) -> list[Optional[int]]:
    """sigma: for each row i, a row j with prompts[j] != prompts[i], or None when every row has
    row i's prompt. When the largest group of equal prompts is at most half the batch, sigma is
    a permutation (each row's responses serve as off-topic exactly once): the first of up to 64
    uniform shuffles that qualifies, else the shift construction (rows sorted by prompt group in
    random order, each mapped `largest group` places on, cyclically). Otherwise each row draws
    its partner uniformly among the rows with another prompt."""
    B = len(prompts)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    largest = max((len(g) for g in groups.values()), default=0)
    if len(groups) < 2:
        return [None] * B
    if 2 * largest <= B:
        for _ in range(_SHUFFLE_TRIES):
            perm = torch.randperm(B, generator=generator).tolist()
            if all(prompts[perm[i]] != prompts[i] for i in range(B)):
                return perm
        keys = list(groups)
        order = torch.randperm(len(keys), generator=generator).tolist()
        flat = [i for k in order for i in groups[keys[k]]]
        sigma = [0] * B
        for pos, i in enumerate(flat):
            sigma[i] = flat[(pos + largest) % B]
        return sigma
    sigma = []
    for i in range(B):
        others = [j for j in range(B) if prompts[j] != prompts[i]]
        sigma.append(others[int(torch.randint(len(others), (1,), generator=generator))])
    return sigma


def rrm_pairs(sigma: list[Optional[int]], chosen: list[tuple], rejected: list[tuple]):
    """The augmented pairs of RRM as (i, a, b, q): under prompt x_i, response a vs response b, label
    q (1: a preferred, 0.5: tie). A response is (source row, "w" | "l"). Per row i with j = sigma(i):
    (i,w)>(j,w), (i,w)>(j,l), (i,l)>(j,w), (i,l)>(j,l), (j,w)~(j,l). A pair whose two responses
    are token-identical is dropped (a tie of identical responses, and a preference between equal
    texts, teach nothing: delta is exactly 0)."""
    text = {"w": chosen, "l": rejected}
    out = []
    for i, j in enumerate(sigma):
        if j is None:
            continue
        for a, b, q in (((i, "w"), (j, "w"), 1.0), ((i, "w"), (j, "l"), 1.0), ((i, "l"), (j, "w"), 1.0),
                        ((i, "l"), (j, "l"), 1.0), ((j, "w"), (j, "l"), 0.5)):
            if text[a[1]][a[0]] != text[b[1]][b[0]]:
                out.append((i, a, b, q))
    return out


def _pad_to(ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int):
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=False)


# --- the objective ----------------------------------------------------------------------------

class BradleyTerry(nn.Module):
    """Pointwise Bradley–Terry reward-model loss, optionally with RRM augmentation (arXiv:2409.13156).
    batch_kind "preference". An nn.Module: it owns the trainable scalar head.

    loss, metrics = BradleyTerry(d_model, ...)(model, batch, baseline=None)
      model: the language model being trained into a reward model (hidden_states(input_ids) ->
        (N, T, d_model)); its LM head is not used. r(x, y) = self.head(hidden state of the last
        real token of x ++ y) in float32.
      loss = mean over the batch's B data pairs (q = 1) and its kept augmented pairs of
        bt_loss(delta, q) + center_rewards_coefficient * (r_a + r_b)^2 (TRL's centring term):
        every pair counts once, as in the paper's mixed data set (original ∪ augmented).
      metrics (detached): loss; on the B data pairs: rewards/chosen, rewards/rejected (mean r),
        rewards/accuracies (strict r_w > r_l), rewards/margins (mean r_w - r_l); with augment=rrm:
        rrm/tie_abs_margin (mean |delta| over tie pairs, 0 when none), rrm/augmented_rows (augmented
        pairs in the loss per data pair, <= 5), rrm/kept_fraction (kept by the filter / candidates;
        1 without a filter); pairs (B); tokens (completion tokens of the data pairs).
    evaluate(model, batch): the same loss and metrics on the data pairs only (no augmentation).

    Arguments:
      d_model: the model's hidden size (the runner gives it); the head is nn.Linear(d_model, 1)
        (PyTorch's default init).
      augment: "none" | "rrm".
      center_rewards_coefficient=0.0: >= 0 (TRL RewardConfig's; off by default).
      filter_below=None: rrm only; keep an augmented pair only when the `baseline` reward model
        gives its label probability < filter_below (in (0, 1]; the spec's default 0.8). The label
        probability is exp(-(L - L_min)): sigmoid(delta_baseline) for q = 1 and
        2 sqrt(sigmoid(d) sigmoid(-d)) for a tie (1 at d = 0). Data pairs are always kept.
        baseline: any callable (input_ids (N, T), lengths (N,)) -> (N,) rewards, e.g. a
        ScalarRewardModel; run under no_grad.
      seed=0: sigma is drawn from (seed, the batch's row ids) (`rrm_partners`), so it needs no
        checkpointed state and a resumed run augments exactly as an uninterrupted one.
      pad_id=0: the id of padding positions in the joined sequences.
      lm_coef=0.0: >= 0; > 0 makes a ScoreLM (BSPO, arXiv:2503.18130): the model keeps its LM head and
        is trained jointly on next-token prediction of the data pairs' responses (chosen and rejected,
        EOS included; prompts are not predicted): loss += lm_coef * their mean token cross-entropy,
        logged as lm_loss. Its LM head then gives beta(a|s), the behaviour policy of BSPO's support.
    """

    batch_kind = "preference"
    extra_models = ("baseline",)
    # The policy is a trunk for the head, not a generator: evaluation reads rewards, not samples.
    policy_generates = False

    def __init__(self, d_model: Optional[int] = None, augment: Literal["none", "rrm"] = "none",
                 center_rewards_coefficient: float = 0.0, filter_below: Optional[float] = None, seed: int = 0,
                 pad_id: int = 0, lm_coef: float = 0.0):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, numbers.Integral) or d_model < 1:
            raise ValueError(f"d_model={d_model!r} is not allowed: it must be the model's hidden size, an integer "
                             ">= 1 (the runner sets it from the model)")
        if augment not in AUGMENTS:
            raise ValueError(f"augment={augment!r} is not allowed: allowed are " + ", ".join(map(repr, AUGMENTS)))
        c = center_rewards_coefficient
        if not (isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) and c >= 0):
            raise ValueError(f"center_rewards_coefficient={c!r} is not allowed: it must be a number >= 0")
        if not (isinstance(lm_coef, numbers.Real) and not isinstance(lm_coef, bool) and math.isfinite(lm_coef)
                and lm_coef >= 0):
            raise ValueError(f"lm_coef={lm_coef!r} is not allowed: it must be a number >= 0")
        f = filter_below
        if f is not None:
            if not (isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 < f <= 1):
                raise ValueError(f"filter_below={f!r} is not allowed: it must be a number > 0 and <= 1, or null")
            if augment != "rrm":
                raise ValueError(f"filter_below={f!r} is not allowed with augment={augment!r}: it filters RRM's "
                                 "augmented pairs; set augment=rrm or filter_below=null")
        for name, value in (("seed", seed), ("pad_id", pad_id)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= 0")
        self.d_model = int(d_model)
        self.augment = augment
        self.center_rewards_coefficient = float(c)
        self.filter_below = None if f is None else float(f)
        self.seed = int(seed)
        self.pad_id = int(pad_id)
        self.lm_coef = float(lm_coef)
        self.head = nn.Linear(self.d_model, 1)

    def reward_model(self, model: nn.Module) -> ScalarRewardModel:
        """`model` with this objective's head, as a ScalarRewardModel."""
        return ScalarRewardModel(model, self.head, self.pad_id)

    def as_model(self, model: nn.Module) -> ScalarRewardModel:
        """What a later run loads from a run folder this objective trained (an objective's
        `models.NAME=RUN_DIR`, rizzrun.runner.generate.load_run_model): the reward model."""
        return self.reward_model(model)

    def _loss(self, r_a, r_b, q):
        per_pair = bt_loss(r_a - r_b, q)
        if self.center_rewards_coefficient:
            per_pair = per_pair + self.center_rewards_coefficient * (r_a + r_b).square()
        return per_pair.mean()

    def _scores(self, model, input_ids, lengths, starts):
        """(rewards (N,), the responses' LM loss or None): one forward; the LM loss (rows whose
        starts < lengths) only when lm_coef > 0."""
        if not self.lm_coef:
            return last_token_rewards(model, self.head, input_ids, lengths), None
        hidden = model.hidden_states(input_ids)
        return _head_at_last(hidden, self.head, lengths), response_nll(model, hidden, input_ids, starts, lengths)

    def _data_metrics(self, r_w, r_l, loss, batch) -> dict[str, torch.Tensor]:
        r_w, r_l = r_w.detach(), r_l.detach()
        tokens = batch["chosen_mask"].sum() + batch["rejected_mask"].sum()
        return {"loss": loss.detach(), "rewards/chosen": r_w.mean(), "rewards/rejected": r_l.mean(),
                "rewards/accuracies": (r_w > r_l).float().mean(), "rewards/margins": (r_w - r_l).mean(),
                "pairs": torch.tensor(r_w.shape[0], device=r_w.device), "tokens": tokens.detach()}

    def forward(self, model, batch, baseline: Optional[Callable] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.augment == "none":
            return self.evaluate(model, batch)
        check_preference_batch(batch)
        B = batch["row"].shape[0]
        p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]
        width = max(batch["chosen_ids"].shape[1], batch["rejected_ids"].shape[1])
        w_ids, w_mask = _pad_to(batch["chosen_ids"], batch["chosen_mask"], width, self.pad_id)
        l_ids, l_mask = _pad_to(batch["rejected_ids"], batch["rejected_mask"], width, self.pad_id)
        chosen, rejected = _rows(w_ids, w_mask), _rows(l_ids, l_mask)
        sigma = rrm_partners(_rows(p_ids, p_mask), _batch_generator(self.seed, batch["row"]))
        pairs = rrm_pairs(sigma, chosen, rejected)

        # Sequences to score: (x_i, y_i^w), (x_i, y_i^l) for every i, then (x_i, y_j^w), (x_i, y_j^l)
        # for every row i with a partner j; a pair indexes into these rewards.
        partnered = [i for i, j in enumerate(sigma) if j is not None]
        index = {}
        for i in range(B):
            index[(i, (i, "w"))], index[(i, (i, "l"))] = i, B + i
        for k, i in enumerate(partnered):
            j = sigma[i]
            index[(i, (j, "w"))], index[(i, (j, "l"))] = 2 * B + 2 * k, 2 * B + 2 * k + 1
        device = p_ids.device
        src = torch.tensor([j for i in partnered for j in (sigma[i], sigma[i])], dtype=torch.long, device=device)
        is_w = torch.tensor([True, False] * len(partnered), dtype=torch.bool, device=device)
        dst = torch.tensor([i for i in partnered for _ in (0, 1)], dtype=torch.long, device=device)
        comp_ids = torch.cat([w_ids, l_ids, torch.where(is_w[:, None], w_ids[src], l_ids[src])])
        comp_mask = torch.cat([w_mask, l_mask, torch.where(is_w[:, None], w_mask[src], l_mask[src])])
        prompt_rows = torch.cat([torch.arange(B, device=device), torch.arange(B, device=device), dst])
        input_ids, lengths = _joined(p_ids[prompt_rows], p_mask[prompt_rows], comp_ids, comp_mask, self.pad_id)
        starts = p_mask[prompt_rows].sum(1)
        starts[2 * B:] = lengths[2 * B:]  # the LM loss reads the data pairs' own responses only
        rewards, nll = self._scores(model, input_ids, lengths, starts)

        a = torch.tensor([index[(i, x)] for i, x, _, _ in pairs], dtype=torch.long, device=device)
        b = torch.tensor([index[(i, y)] for i, _, y, _ in pairs], dtype=torch.long, device=device)
        q = torch.tensor([p[3] for p in pairs], dtype=rewards.dtype, device=device)
        candidates = len(pairs)
        if self.filter_below is not None and candidates:
            if baseline is None or isinstance(baseline, Precomputed):
                raise ValueError("filter_below needs the baseline reward model as a live model (baseline=<model>): "
                                 "RRM pairs are drawn per batch, so precomputed outputs cannot cover them")
            with torch.no_grad():
                base = baseline(input_ids, lengths).float()
                d = base[a] - base[b]
                best = bt_loss(torch.zeros_like(d), q) * (q == 0.5)  # L_min: ln 2 for ties, 0 otherwise
                prob = torch.exp(-(bt_loss(d, q) - best))
                keep = prob < self.filter_below
            a, b, q = a[keep], b[keep], q[keep]
        kept = a.shape[0]
        r_w, r_l = rewards[:B], rewards[B:2 * B]
        all_a = torch.cat([torch.arange(B, device=device), a])
        all_b = torch.cat([torch.arange(B, 2 * B, device=device), b])
        all_q = torch.cat([torch.ones(B, dtype=rewards.dtype, device=device), q])
        loss = self._loss(rewards[all_a], rewards[all_b], all_q)
        if nll is not None:
            loss = loss + self.lm_coef * nll
        metrics = self._data_metrics(r_w, r_l, loss, batch)
        if nll is not None:
            metrics["lm_loss"] = nll.detach()
        with torch.no_grad():
            tie = q == 0.5
            delta = (rewards[a] - rewards[b]).detach()
            metrics["rrm/tie_abs_margin"] = torch.where(tie, delta.abs(), 0.0).sum() / tie.sum().clamp_min(1)
            metrics["rrm/augmented_rows"] = torch.tensor(kept / max(B, 1), device=device)
            metrics["rrm/kept_fraction"] = torch.tensor(kept / candidates if candidates else 1.0, device=device)
        return loss, metrics

    def evaluate(self, model, batch, baseline=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Plain Bradley–Terry on the batch's data pairs (no augmentation): the validation loss and
        reward accuracy."""
        check_preference_batch(batch)
        B = batch["row"].shape[0]
        width = max(batch["chosen_ids"].shape[1], batch["rejected_ids"].shape[1])
        w_ids, w_mask = _pad_to(batch["chosen_ids"], batch["chosen_mask"], width, self.pad_id)
        l_ids, l_mask = _pad_to(batch["rejected_ids"], batch["rejected_mask"], width, self.pad_id)
        p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]
        input_ids, lengths = _joined(torch.cat([p_ids, p_ids]), torch.cat([p_mask, p_mask]),
                                     torch.cat([w_ids, l_ids]), torch.cat([w_mask, l_mask]), self.pad_id)
        rewards, nll = self._scores(model, input_ids, lengths, torch.cat([p_mask, p_mask]).sum(1))
        r_w, r_l = rewards[:B], rewards[B:]
        loss = self._loss(r_w, r_l, torch.ones_like(r_w))
        if nll is None:
            return loss, self._data_metrics(r_w, r_l, loss, batch)
        loss = loss + self.lm_coef * nll
        return loss, {**self._data_metrics(r_w, r_l, loss, batch), "lm_loss": nll.detach()}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, augment={self.augment!r}, center_rewards_coefficient="
                f"{self.center_rewards_coefficient}, filter_below={self.filter_below}, seed={self.seed}, "
                f"pad_id={self.pad_id}, lm_coef={self.lm_coef}")
