"""GRPO (arXiv:2402.03300) against the spec's hand-derived numbers, plain per-row float64 formulas
(each completion scored on its own, no padding, no shared helper), the REINFORCE-with-group-baseline
gradient, and TRL 1.16's own GRPOTrainer (`_generate_and_score_completions` for advantages, old and
reference log-probs; `_compute_loss` for the loss and its logged metrics) on a transformers Llama
with the same weights."""

from __future__ import annotations

import ast
import copy
import inspect
import math
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llama_twins import hf_and_rizzrun_llamas, llama_dims
from rizzrun.config.specs import spec_of
from rizzrun.errors import InputError
from rizzrun.models.hf_llama import from_hf_state_dict, hf_names
from rizzrun.models.llama import Llama
from rizzrun.objectives import grpo as grpo_module
from rizzrun.objectives import grpo_spec
from rizzrun.objectives.grpo import GRPO, aggregate, group_advantages, grpo_token_losses

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
V = 40
EOS = 1


def t(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# --- the spec's numeric examples ------------------------------------------------------------------

def test_spec_advantages_example():
    a = group_advantages(t(1, 0, 0, 1), 4)
    torch.testing.assert_close(a, t(0.8659, -0.8659, -0.8659, 0.8659), atol=5e-5, rtol=0)
    std = statistics.stdev([1, 0, 0, 1])  # unbiased: 0.5774
    assert std == pytest.approx(0.5774, abs=5e-5)
    assert a[0].item() == pytest.approx(0.5 / (std + 1e-4), rel=1e-6)


def test_spec_k3_example():
    # log pi = -1.0, log pi_ref = -1.5: x = -0.5, k3 = e^-0.5 + 0.5 - 1
    out = grpo_token_losses(t(-1.0).view(1, 1), t(-1.0).view(1, 1), t(0.0), ref_logps=t(-1.5).view(1, 1), beta=1.0)
    assert out["kl"].item() == pytest.approx(0.1065, abs=5e-5)
    assert out["kl"].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["kl"].item())  # A = 0: only beta * k3
    out = grpo_token_losses(t(-1.0).view(1, 1), t(-1.0).view(1, 1), t(0.0), ref_logps=t(-1.5).view(1, 1), beta=0.04)
    assert out["loss"].item() == pytest.approx(0.04 * 0.1065, abs=5e-6)


def test_spec_clipping_example():
    # A = +0.87, rho = 1.3, eps = 0.2: min(1.3 * 0.87, 1.2 * 0.87) = 1.044: clipped, no gradient
    logps = torch.tensor([[math.log(1.3)]], requires_grad=True)
    out = grpo_token_losses(logps, torch.zeros(1, 1), t(0.87), epsilon_low=0.2, epsilon_high=0.2)
    assert out["loss"].item() == pytest.approx(-1.044, abs=1e-6)
    assert bool(out["high_clipped"]) and not bool(out["low_clipped"])
    out["loss"].sum().backward()
    assert logps.grad.item() == 0.0
    # inside the region the gradient is A * rho
    logps = torch.tensor([[math.log(1.1)]], requires_grad=True)
    out = grpo_token_losses(logps, torch.zeros(1, 1), t(0.87))
    out["loss"].sum().backward()
    assert logps.grad.item() == pytest.approx(-0.87 * 1.1, rel=1e-6) and not bool(out["high_clipped"])
    # A < 0 clips below: rho = 0.7 < 0.8
    out = grpo_token_losses(torch.tensor([[math.log(0.7)]]), torch.zeros(1, 1), t(-0.5))
    assert out["loss"].item() == pytest.approx(0.5 * 0.8, rel=1e-6) and bool(out["low_clipped"])
    # delta caps the unclipped ratio where A < 0: rho = 3, delta = 2 -> -min(2 * -0.5, 1.2 * -0.5) = 1.0
    out = grpo_token_losses(torch.tensor([[math.log(3.0)]]), torch.zeros(1, 1), t(-0.5), delta=2.0)
    assert out["loss"].item() == pytest.approx(1.0, rel=1e-6)
    out = grpo_token_losses(torch.tensor([[math.log(3.0)]]), torch.zeros(1, 1), t(-0.5))
    assert out["loss"].item() == pytest.approx(1.5, rel=1e-6)


# --- group statistics ---------------------------------------------------------------------------

def by_hand(rewards, G, scale="group"):
    """Advantages from plain Python statistics (NaN rows left out; one scorable row or G = 1: 0)."""
    out = []
    everything = [r for r in rewards if not math.isnan(r)]
    for b in range(0, len(rewards), G):
        group = rewards[b:b + G]
        kept = [r for r in group if not math.isnan(r)]
        for r in group:
            if math.isnan(r) or not kept:
                out.append(0.0)
                continue
            mean = sum(kept) / len(kept)
            if scale == "none":
                out.append(r - mean)
            elif scale == "group":
                out.append(0.0 if len(kept) < 2 else (r - mean) / (statistics.stdev(kept) + 1e-4))
            else:
                out.append(0.0 if len(everything) < 2 else (r - mean) / (statistics.stdev(everything) + 1e-4))
    return out


NAN = float("nan")
GROUPS = [1.0, NAN, 0.0, 1.0,  # a NaN row: left out of mean (2/3) and std (of 1, 0, 1)
          NAN, NAN, 2.0, NAN,  # one scorable row: std undefined -> 0 when dividing
          NAN, NAN, NAN, NAN,  # unscorable group
          0.3, 0.3, 0.3, 0.3,  # zero std
          0.5, -1.0, 2.0, 0.25]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_statistics_with_nan_rewards(scale):
    got = group_advantages(torch.tensor(GROUPS), 4, scale)
    want = by_hand(GROUPS, 4, scale)
    assert not torch.isnan(got).any() and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-6, rtol=1e-5)
    assert got[1] == 0 and got[8:12].eq(0).all()  # unscorable rows
    assert got[12:16].eq(0).all()  # zero std: exactly 0, not 0 / 1e-4 noise


def test_zero_std_group_and_groups_of_one():
    torch.testing.assert_close(group_advantages(t(1, 1, 1, 0, 0, 0), 3), torch.zeros(6))
    torch.testing.assert_close(group_advantages(t(1, 5, -2), 1), torch.zeros(3))  # G = 1: r - mean = 0
    with pytest.raises(ValueError, match="not whole groups"):
        group_advantages(t(1, 2, 3), 2)


def test_batch_scale_keeps_the_group_mean():
    r = t(1, 0, 10, 12)
    got = group_advantages(r, 2, "batch")
    std = statistics.stdev([1, 0, 10, 12])
    torch.testing.assert_close(got, t(0.5, -0.5, -1, 1) / (std + 1e-4))


# --- per-token losses and aggregation against plain loops ---------------------------------------------

def loops_loss(logps, old, ref, adv, mask, loss_type, beta, eps_low, eps_high, delta=None, max_len=None,
               correction=False):
    """The loss in float64 with Python loops over rows and tokens."""
    N, C = len(logps), len(logps[0])
    rows, total, count = [], 0.0, 0
    for i in range(N):
        s, n = 0.0, 0
        for j in range(C):
            if not mask[i][j]:
                continue
            rho = math.exp(logps[i][j] - old[i][j])
            weight = rho if correction else 1.0  # the KL's importance weight: rho before the delta cap
            clipped = min(max(rho, 1 - eps_low), 1 + eps_high)
            if delta is not None:
                rho = min(rho, delta)
            ell = -min(rho * adv[i], clipped * adv[i])
            if beta:
                x = ref[i][j] - logps[i][j]
                ell += beta * (math.exp(x) - x - 1) * weight
            s, n = s + ell, n + 1
        rows.append(s / max(n, 1))
        total, count = total + s, count + n
    if loss_type == "grpo":
        return sum(rows) / N
    if loss_type in ("bnpo", "dapo"):
        return total / max(count, 1)
    return total / (N * (C if max_len is None else max_len))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta, delta, eps_high, max_len, correction", [
    (0.0, None, 0.2, None, False), (0.04, 1.6, 0.28, 9, False), (0.5, 1.6, 0.2, None, True)])
def test_each_loss_type_equals_a_plain_loop(loss_type, beta, delta, eps_high, max_len, correction):
    g = torch.Generator().manual_seed(0)
    N, C = 6, 5
    logps = -torch.rand(N, C, generator=g, dtype=torch.float64) * 3
    old = logps + 0.4 * torch.randn(N, C, generator=g, dtype=torch.float64)  # ratios from ~0.3 to ~3
    ref = logps + 0.3 * torch.randn(N, C, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    lengths = [5, 1, 3, 0, 4, 2]  # ragged, one empty row
    mask = torch.tensor([[j < n for j in range(C)] for n in lengths])
    out = grpo_token_losses(logps, old, adv, ref, beta, 0.2, eps_high, delta, correction)
    got = aggregate(out["loss"], mask, loss_type, max_len).item()
    want = loops_loss(logps.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), loss_type, beta, 0.2,
                      eps_high, delta, max_len, correction)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert bool(out["low_clipped"][mask].any()) and bool(out["high_clipped"][mask].any())  # both sides exercised
    if loss_type == "grpo":  # the loss types really differ on this batch
        others = [aggregate(out["loss"], mask, k, max_len).item() for k in ("bnpo", "dr_grpo")]
        assert all(abs(o - got) > 1e-3 for o in others)


def test_dapo_over_processes_is_the_token_mean_of_all_of_them():
    """TRL's dapo divides each process's token sum by T / W (T: every process's active tokens); DDP
    averages the W gradients, so the result is the token mean over all processes: the plain loop's
    loss of the whole batch, not the mean of the per-process token means (bnpo's)."""
    g = torch.Generator().manual_seed(1)
    N, C = 6, 5
    losses = torch.randn(N, C, generator=g, dtype=torch.float64)
    mask = torch.tensor([[j < n for j in range(C)] for n in [5, 1, 3, 0, 4, 2]])
    halves = [slice(0, 2), slice(2, 6)]  # 6 and 9 active tokens: unequal, so the two means differ
    T = torch.tensor(float(mask.sum()))
    per_process = [aggregate(losses[h], mask[h], "dapo", tokens_per_process=T / 2) for h in halves]
    whole = (losses * mask).sum() / mask.sum()
    assert (sum(per_process) / 2).item() == pytest.approx(whole.item(), rel=1e-12)
    naive = sum(aggregate(losses[h], mask[h], "dapo") for h in halves) / 2
    assert abs(naive.item() - whole.item()) > 1e-3
    # one process: the normalizer prepare stores is this batch's own token count
    assert grpo_module.dapo_normalizer(mask).item() == float(mask.sum())


# --- a tiny Llama and hand-made rollouts -----------------------------------------------------------------

PROMPTS = [[EOS, 5, 9, 2], [EOS, 7], [EOS, 3, 4, 11, 8, 12, 6]]  # B = 3 prompts of different lengths
COMPLETIONS = [  # G = 4 each; EOS-terminated unless truncated (no EOS within C = 5)
    [20, 21, EOS], [30, 31, 32, 33, 34], [22, EOS], [EOS],
    [23, 24, 25, 26, EOS], [35, EOS], [36, 37, 38, 39, 13], [14, 15, EOS],
    [16, EOS], [17, 18, 19, EOS], [27, 28, 29, 10, 2], [3, EOS],
]
REWARDS = [1.0, 0.0, NAN, 1.0, 0.5, 0.2, 0.9, 0.1, 1.0, 1.0, 1.0, 1.0]
G = 4


def make_rollout(prompts=PROMPTS, completions=COMPLETIONS, rewards=REWARDS, temperature=1.0):
    """A scored rollout as rizzrun.rollouts.sample_rollout + score_rollout build it."""
    P = max(len(p) for p in prompts)
    C = max(len(c) for c in completions)
    N = len(completions)
    ids = torch.zeros(N, P + C, dtype=torch.long)
    attention = torch.zeros(N, P + C, dtype=torch.bool)
    for i, c in enumerate(completions):
        p = prompts[i // G]
        ids[i, P - len(p):P] = torch.tensor(p)
        attention[i, P - len(p):P] = True
        ids[i, P:P + len(c)] = torch.tensor(c)
        attention[i, P:P + len(c)] = True
    rewards = torch.tensor(rewards, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": attention[:, P:].clone(),
            "truncated": torch.tensor([EOS not in c for c in completions]),
            "rewards": rewards, "reward_per_function": rewards.unsqueeze(1),
            "group": torch.arange(N) // G, "row": torch.arange(N) // G, "temperature": torch.tensor(temperature)}


def tiny(seed=0):
    torch.manual_seed(seed)
    return Llama(V, **llama_dims(64)).float()


def perturbed(model, seed=1, scale=0.05):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def row_logps(model, i, temperature=1.0, grad=False):
    """Completion i's token log-probs from a forward over its own prompt ++ completion (no padding)."""
    p, c = PROMPTS[i // G], COMPLETIONS[i]
    ids = torch.tensor([p + c])
    with torch.set_grad_enabled(grad):
        lp = torch.log_softmax(model(ids[:, :-1]).double() / temperature, -1)[0]
    return [lp[len(p) - 1 + k, y] for k, y in enumerate(c)]


DDP_RANK = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_grpo import GRPO, G, make_rollout, tiny
rank = int(sys.argv[1])
torch.distributed.init_process_group("gloo", init_method={init!r}, rank=rank, world_size=2)
rows = slice(rank * G, (rank + 1) * G)  # one whole group per process
rollout = {{k: (v[rows] if v.dim() else v) for k, v in make_rollout().items()}}
model = tiny()
objective = GRPO(num_generations=G, beta=0.0, loss_type={loss_type!r})
loss, _ = objective(model, objective.prepare(model, rollout))
loss.backward()
grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
torch.distributed.all_reduce(grads)  # DDP: the mean of the processes' gradients
torch.save(grads / 2, {out!r} + str(rank))
torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo"])
def test_two_processes_match_one_with_both_groups(tmp_path, loss_type):
    """Real processes (gloo): each holds one group (11 and 15 active tokens); the mean of their
    gradients is one process's over both groups for dapo (the token count is gathered in prepare,
    TRL's num_items_in_batch), and is not for bnpo (each process's own token mean)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = DDP_RANK.format(tests=str(Path(__file__).parent), init=f"tcp://127.0.0.1:{port}",
                             loss_type=loss_type, out=str(tmp_path / "grads"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], env=env, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    ddp = torch.load(tmp_path / "grads0")
    assert torch.equal(ddp, torch.load(tmp_path / "grads1"))
    rollout = {k: (v[:2 * G] if v.dim() else v) for k, v in make_rollout().items()}
    model = tiny()
    objective = GRPO(num_generations=G, beta=0.0, loss_type=loss_type)
    loss, _ = objective(model, objective.prepare(model, rollout))
    loss.backward()
    one = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    close = torch.allclose(ddp, one, rtol=1e-5, atol=1e-8)
    assert close == (loss_type == "dapo"), (loss_type, (ddp - one).abs().max().item())


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("mu, beta, temperature", [(1, 0.04, 1.0), (2, 0.0, 0.7), (2, 0.04, 1.0)])
def test_model_loss_equals_a_per_row_float64_loop(loss_type, mu, beta, temperature):
    reference = tiny()
    rollout_policy = perturbed(reference, seed=1)
    policy = perturbed(rollout_policy, seed=2, scale=0.05 if mu > 1 else 0.0)  # moved on by an update
    objective = GRPO(num_generations=G, num_iterations=mu, beta=beta, loss_type=loss_type)
    batch = objective.prepare(rollout_policy, make_rollout(temperature=temperature), reference=reference)
    assert ("old_logps" in batch) == (mu > 1) and ("ref_logps" in batch) == (beta > 0)
    loss, m = objective(policy, batch)
    N, C = len(COMPLETIONS), 5
    lp = [[x.item() for x in row_logps(policy, i, temperature)] for i in range(N)]
    old = [[x.item() for x in row_logps(rollout_policy, i, temperature)] for i in range(N)] if mu > 1 else lp
    ref = [[x.item() for x in row_logps(reference, i, temperature)] for i in range(N)]
    pad = [r + [0.0] * (C - len(r)) for r in lp], [r + [0.0] * (C - len(r)) for r in old], \
        [r + [0.0] * (C - len(r)) for r in ref]
    mask = [[j < len(c) for j in range(C)] for c in COMPLETIONS]
    adv = by_hand(REWARDS, G)
    want = loops_loss(*pad, adv, mask, loss_type, beta, 0.2, 0.2)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    tokens = sum(len(c) for c in COMPLETIONS)
    assert m["tokens"].item() == tokens and m["completions"].item() == N
    if beta:
        kl = sum(math.exp(r - x) - (r - x) - 1 for a, b in zip(lp, ref) for x, r in zip(a, b)) / tokens
        assert m["kl"].item() == pytest.approx(kl, rel=1e-4)
    else:
        assert "kl" not in m
    if mu == 1:
        assert m["clip_ratio/region_mean"].item() == 0


def test_entropy_metric_is_the_token_mean_of_the_policy_entropy():
    policy = tiny()
    objective = GRPO(num_generations=G, beta=0.0)
    batch = objective.prepare(policy, make_rollout(temperature=0.7))
    _, m = objective(policy, batch)
    entropies = []
    for i, c in enumerate(COMPLETIONS):
        p = PROMPTS[i // G]
        with torch.no_grad():
            lp = torch.log_softmax(policy(torch.tensor([p + c])[:, :-1]).double() / 0.7, -1)[0, len(p) - 1:]
        entropies += (-(lp.exp() * lp).sum(-1)).tolist()
    assert m["entropy"].item() == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)


# --- gradients: REINFORCE with a group baseline ------------------------------------------------------

@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_mu1_gradient_is_reinforce_with_group_baseline(loss_type):
    # mu = 1, beta = 0: rho = 1 in value, grad rho = grad log pi, so
    # grad L = -sum_i A_i w_i sum_t grad log pi(o_i,t), w_i = 1/(N |o_i|) (grpo), 1/T (bnpo), 1/(N C) (dr_grpo)
    policy = perturbed(tiny(), seed=3)
    objective = GRPO(num_generations=G, beta=0.0, loss_type=loss_type)
    batch = objective.prepare(policy, make_rollout())
    loss, _ = objective(policy, batch)
    got = torch.autograd.grad(loss, list(policy.parameters()))
    adv = by_hand(REWARDS, G)
    N, C, T = len(COMPLETIONS), 5, sum(len(c) for c in COMPLETIONS)
    surrogate = 0.0
    for i, c in enumerate(COMPLETIONS):
        w = {"grpo": 1 / (N * len(c)), "bnpo": 1 / T, "dr_grpo": 1 / (N * C)}[loss_type]
        surrogate = surrogate - adv[i] * w * sum(row_logps(policy, i, grad=True))
    want = torch.autograd.grad(surrogate, list(policy.parameters()))
    assert sum(w.abs().sum() for w in want) > 1e-3
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_.float(), atol=1e-7, rtol=1e-4)


def test_mu2_ratio_moves_after_an_update_and_clipping_acts():
    torch.manual_seed(0)
    policy = perturbed(tiny(), seed=4)
    objective = GRPO(num_generations=G, num_iterations=2, beta=0.0, loss_type="bnpo")
    batch = objective.prepare(policy, make_rollout())
    first, m1 = objective(policy, batch)
    # the first of the mu steps: pi = pi_old, equal to the mu = 1 loss
    plain, _ = GRPO(num_generations=G, beta=0.0, loss_type="bnpo")(policy, GRPO(num_generations=G, beta=0.0)
                                                                     .prepare(policy, make_rollout()))
    assert first.item() == pytest.approx(plain.item(), abs=1e-7) and m1["clip_ratio/region_mean"].item() == 0
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    first.backward()
    opt.step()
    opt.zero_grad()
    second, m2 = objective(policy, batch)
    with torch.no_grad():
        from rizzrun.rollouts import completion_logps

        ratio = torch.exp(completion_logps(policy, batch) - batch["old_logps"])[batch["completion_mask"]]
    assert (ratio - 1).abs().max() > 0.2  # the policy moved
    assert 0 < m2["clip_ratio/region_mean"].item() < 1
    # the update made the advantage-weighted log-likelihood larger: the surrogate loss fell
    assert second.item() < first.item()
    # clipped tokens give no gradient: the loss' gradient equals that of the unclipped tokens only
    second.backward()
    got = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    logps = completion_logps(policy, batch)
    terms = grpo_token_losses(logps, batch["old_logps"], batch["advantages"])
    keep = batch["completion_mask"] & ~(terms["low_clipped"] | terms["high_clipped"])
    rho = torch.exp(logps - batch["old_logps"])
    unclipped = -(rho * batch["advantages"].unsqueeze(1) * keep).sum() / batch["completion_mask"].sum()
    unclipped.backward()
    for g_, p in zip(got, policy.parameters()):
        torch.testing.assert_close(g_, p.grad, atol=1e-7, rtol=1e-4)


# --- end to end: sample_rollout, score_rollout, prepare, mu updates -----------------------------------

def test_end_to_end_on_arithmetic_prompts():
    """The contract's path with a real decoder and reward: prompts -> G sampled completions -> the
    data's own reward -> prepare -> mu = 2 updates; the tensors line up with the rollout's."""
    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.decoders.sample import Sample
    from rizzrun.rewards.combine import RewardSet
    from rizzrun.rollouts import completion_logps, rollout_metrics, sample_rollout, score_rollout
    from rizzrun.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    data = ArithmeticPrompts(n_train=8, n_val=2, batch_size=2)
    data.setup(tok)
    prompts = next(data.train_batches())
    torch.manual_seed(0)
    policy = Llama(tok.vocab_size, **llama_dims(64)).float()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    decoder = Sample(max_new_tokens=4, temperature=0.9, seed=0)
    rollout = sample_rollout(policy, decoder, prompts, num_generations=G, eos_id=tok.eos_id)
    texts, columns = data.columns(prompts["row"])
    rewards = RewardSet({k: fn for k, (fn, _) in data.default_rewards().items()})
    score_rollout(rollout, tok, rewards, texts, columns)
    rollout["rewards"][1] = 1.0  # one correct answer, so a group has a signal (an untrained model has none)
    objective = GRPO(num_generations=G, num_iterations=2, mask_truncated_completions=False)
    batch = objective.prepare(policy, rollout, reference=reference)
    N, C = rollout["completion_mask"].shape
    assert N == 2 * G and batch["advantages"].shape == (N,) and batch["old_logps"].shape == (N, C)
    assert batch["ref_logps"].shape == (N, C) and float(rollout["temperature"]) == pytest.approx(0.9)
    torch.testing.assert_close(batch["advantages"], group_advantages(rollout["rewards"], G))
    assert batch["advantages"][:G].abs().sum() > 0
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    losses = []
    for _ in range(objective.num_iterations):
        loss, m = objective(policy, batch, reference=reference)
        assert torch.isfinite(loss) and m["completions"].item() == N
        assert m["tokens"].item() == int(rollout["completion_mask"].sum())
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[0] != losses[1]  # the second step sees the ratio of the updated policy
    with torch.no_grad():  # the first step raised the advantage-weighted log-likelihood
        moved = (completion_logps(policy, batch) - batch["old_logps"]).sum(1)
    assert float((moved * batch["advantages"]).sum()) > 0
    assert set(rollout_metrics(rollout, rewards.names, G)) >= {"reward", "frac_reward_zero_std"}


# --- the reference -----------------------------------------------------------------------------------

class Refuses(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the reference must not run when beta = 0")


def test_beta_zero_needs_no_reference():
    policy = tiny()
    objective = GRPO(num_generations=G, beta=0.0)
    batch = objective.prepare(policy, make_rollout())
    assert "ref_logps" not in batch and "old_logps" not in batch
    loss, m = objective(policy, batch)
    assert torch.isfinite(loss) and "kl" not in m
    objective.prepare(policy, make_rollout(), reference=Refuses())  # given, not run
    with pytest.raises(ValueError, match=r"beta=0.04 needs a reference model: set objective\.models\.reference"):
        GRPO(num_generations=G).prepare(policy, make_rollout())
    with pytest.raises(ValueError, match="was not prepared"):
        GRPO(num_generations=G, beta=0.0)(policy, make_rollout())
    with pytest.raises(ValueError, match="without ref_logps"):
        GRPO(num_generations=G)(policy, batch)


def test_at_the_reference_kl_is_zero_and_mask_truncated_drops_rows():
    policy = tiny()
    objective = GRPO(num_generations=G, mask_truncated_completions=True)
    rollout = make_rollout()
    batch = objective.prepare(policy, rollout, reference=copy.deepcopy(policy))
    truncated = rollout["truncated"]
    assert truncated.sum() == 3 and not batch["completion_mask"][truncated].any()
    assert torch.equal(batch["completion_mask"][~truncated], rollout["completion_mask"][~truncated])
    assert torch.equal(rollout["completion_mask"], make_rollout()["completion_mask"])  # the rollout is not changed
    loss, m = objective(policy, batch)
    assert m["kl"].item() == 0 and m["tokens"].item() == sum(len(c) for c in COMPLETIONS if EOS in c)
    # loss_type grpo with rho = 1: -mean_i A_i over rows with tokens (masked rows count 0 in the mean)
    adv = by_hand(REWARDS, G)
    want = -sum(a for a, c in zip(adv, COMPLETIONS) if EOS in c) / len(COMPLETIONS)
    assert loss.item() == pytest.approx(want, abs=1e-6)


# --- TRL 1.16 ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny transformers Llama (and a word-level tokenizer, pad 0, EOS 1) saved as a folder: TRL
    builds the policy and the reference from it (TRL loads its own reference from the policy's path)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("grpo-hf")
    hf, _ = hf_and_rizzrun_llamas(V, 64)
    with torch.no_grad():  # the twins' weights are large (std 0.3); smaller ones keep ratios near 1
        for p in hf.parameters():
            if p.ndim == 2:
                p.mul_(0.5)
    hf.save_pretrained(folder)
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, V)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                         eos_token="<eos>").save_pretrained(folder)
    return folder


def add_noise(model, seed, scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def twin(hf_model) -> Llama:
    return from_hf_state_dict(Llama(V, **llama_dims(64)), {k: v.detach().clone() for k, v in
                                                           hf_model.state_dict().items()})


def trl_trainer(folder, tmp_path, **config):
    """A GRPOTrainer (CPU, fp32, eager attention) on `folder`, one process, one accumulation step
    (`current_gradient_accumulation_steps`, set by the training loop, is set here to 1)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rewards = list(config.pop("rewards"))

    def listed_reward(completions, **kwargs):  # the rollout's rewards, in row order (None = unscorable)
        return [None if math.isnan(r) else r for r in rewards]

    args = GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], disable_dropout=True,
                      model_init_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
                      per_device_train_batch_size=len(COMPLETIONS), num_generations=G, **config)
    data = Dataset.from_dict({"prompt": ["w2 w3"] * len(PROMPTS)})  # needed to start; never generated from
    trainer = GRPOTrainer(model=str(folder), reward_funcs=listed_reward, args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def trl_inputs(trainer):
    """TRL's `_generate_and_score_completions` on the test's completions: its `_generate` returns them
    (prompt ids unpadded per row, completion ids up to the EOS), the reward function the rollout's
    rewards; TRL pads (prompt left, completion right), scores, takes old and reference log-probs."""
    N = len(COMPLETIONS)

    def fixed_generate(prompts):
        assert len(prompts) == N
        return ([list(PROMPTS[i // G]) for i in range(N)], [list(c) for c in COMPLETIONS], None,
                [" ".join(f"w{x}" for x in c) for c in COMPLETIONS], None, {}, None, [])

    trainer._generate = fixed_generate
    return trainer._generate_and_score_completions([{"prompt": "w2 w3"} for _ in range(N)])


def compare_with_trl(folder, tmp_path, loss_type, beta, mu, temperature=1.0, rewards=REWARDS, correction=False,
                     **options):
    trl_keys = {"epsilon_high": "epsilon_high", "delta": "delta", "scale_rewards": "scale_rewards",
                "mask_truncated_completions": "mask_truncated_completions"}
    config = dict(loss_type=loss_type, beta=beta, num_iterations=mu, temperature=temperature, epsilon=0.2,
                  max_completion_length=options.get("max_completion_length") or 7, rewards=rewards,
                  use_bias_correction_kl=correction,
                  **{trl_keys[k]: v for k, v in options.items() if k in trl_keys})
    trainer = trl_trainer(folder, tmp_path, **config)
    if beta:
        reference = twin(trainer.ref_model).eval().requires_grad_(False)
    else:
        assert trainer.ref_model is None
        reference = None
    add_noise(trainer.model, seed=11, scale=0.03)  # the rollout policy has moved off the reference
    rollout_policy = twin(trainer.model)
    inputs = trl_inputs(trainer)
    if mu > 1:
        add_noise(trainer.model, seed=12, scale=0.03)  # an update since the rollout: ratios != 1
    policy = twin(trainer.model)

    objective = GRPO(num_generations=G, num_iterations=mu, beta=beta, loss_type=loss_type,
                     use_bias_correction_kl=correction, max_completion_length=options.get("max_completion_length") or 7,
                     **{k: v for k, v in options.items() if k != "max_completion_length"})
    rollout = make_rollout(rewards=rewards, temperature=temperature)
    batch = objective.prepare(rollout_policy, rollout, reference=reference)
    loss, m = objective(policy, batch)
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    # the same tensors went in: TRL's padding of the prompts (left) and completions (right)
    C = rollout["completion_mask"].shape[1]
    P = rollout["input_ids"].shape[1] - C
    assert torch.equal(inputs["prompt_ids"], rollout["input_ids"][:, :P])
    assert torch.equal(inputs["prompt_mask"].bool(), rollout["attention_mask"][:, :P])
    assert torch.equal(inputs["completion_ids"], rollout["input_ids"][:, P:])
    mask = inputs["completion_mask"].bool()
    assert torch.equal(mask, batch["completion_mask"])
    # TRL's advantages, old and reference log-probs (its own code path) equal prepare's
    torch.testing.assert_close(batch["advantages"], inputs["advantages"], atol=1e-6, rtol=1e-6)
    assert ("old_logps" in batch) == ("old_per_token_logps" in inputs) == (mu > 1)
    assert ("ref_logps" in batch) == ("ref_per_token_logps" in inputs) == (beta > 0)
    for ours, theirs in (("old_logps", "old_per_token_logps"), ("ref_logps", "ref_per_token_logps")):
        if ours in batch:
            torch.testing.assert_close(batch[ours][mask], inputs[theirs][mask], atol=1e-5, rtol=1e-5)
    # the loss and what TRL logs
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    keys = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy"]
    keys += ["kl"] if beta else []
    assert ("kl" in logged) == bool(beta)
    for key in keys:
        assert m[key].item() == pytest.approx(logged[key], abs=1e-5), key
    # and the gradient, parameter by parameter
    loss.backward()
    trl_loss.backward()
    theirs = dict(trainer.model.named_parameters())
    for name, p in policy.named_parameters():
        torch.testing.assert_close(p.grad, theirs[hf_names(2)[name]].grad, atol=1e-6, rtol=1e-4, msg=name)
    assert sum(p.grad.abs().sum() for p in policy.parameters()) > 1e-3
    return m, logged


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta, mu, correction", [(0.0, 1, False), (0.04, 1, False), (0.04, 1, True), (0.0, 2, False),
                                                  (0.04, 2, False), (0.04, 2, True)])
def test_matches_trl_grpo_trainer(hf_folder, tmp_path, loss_type, beta, mu, correction):
    m, logged = compare_with_trl(hf_folder, tmp_path, loss_type, beta, mu, correction=correction)
    if mu > 1:  # the ratios moved enough for clipping on this batch
        assert logged["clip_ratio/region_mean"] > 0


@pytest.mark.parametrize("options", [
    dict(scale_rewards="batch", temperature=0.7),
    dict(scale_rewards="none", mask_truncated_completions=True),
    dict(epsilon_high=0.28, delta=1.5, max_completion_length=9),
])
def test_matches_trl_grpo_trainer_options(hf_folder, tmp_path, options):
    options = dict(options)
    temperature = options.pop("temperature", 1.0)
    compare_with_trl(hf_folder, tmp_path, "dr_grpo", 0.04, 2, temperature=temperature, correction=True, **options)


# --- arguments, config, spec ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"num_generations": 1}, r"objective\.num_generations=1: must be an integer >= 2"),
    ({"num_iterations": 0}, r"objective\.num_iterations=0: must be an integer >= 1"),
    ({"beta": -0.1}, r"objective\.beta=-0.1: must be a number >= 0"),
    ({"beta": True}, r"objective\.beta=True"),
    ({"epsilon": 1.0}, r"objective\.epsilon=1.0: must be a number in \[0, 1\)"),
    ({"epsilon_high": -1}, r"objective\.epsilon_high=-1: must be a number >= 0 or null"),
    ({"delta": 1.1}, r"objective\.delta=1.1: must be a number > 1 \+ epsilon_high = 1.2 or null"),
    ({"loss_type": "sapo"}, r"objective\.loss_type='sapo': allowed are grpo, bnpo, dr_grpo, dapo"),
    ({"scale_rewards": True}, r"objective\.scale_rewards=True: allowed are group, batch, none"),
    ({"mask_truncated_completions": 1}, r"objective\.mask_truncated_completions=1: must be true or false"),
    ({"max_completion_length": 0}, r"objective\.max_completion_length=0: must be an integer >= 1 or null"),
    ({"use_bias_correction_kl": None}, r"objective\.use_bias_correction_kl=None: must be true or false"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        GRPO(**kwargs)


def test_rollout_errors():
    policy = tiny()
    with pytest.raises(ValueError, match="not whole groups of objective.num_generations=5"):
        GRPO(num_generations=5, beta=0.0).prepare(policy, make_rollout())
    rollout = make_rollout()
    del rollout["rewards"]
    with pytest.raises(ValueError, match="rollout lacks rewards"):
        GRPO(num_generations=G, beta=0.0).prepare(policy, rollout)
    rollout = make_rollout()
    rollout["group"] = torch.arange(12) % 3
    with pytest.raises(ValueError, match="not 4 adjacent rows"):
        GRPO(num_generations=G, beta=0.0).prepare(policy, rollout)


def test_class_attributes_are_plain_literals_read_by_ast():
    tree = ast.parse(Path(grpo_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GRPO")
    attrs = {s.targets[0].id: ast.literal_eval(s.value) for s in cls.body
             if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)}
    assert attrs == {"batch_kind": "prompts", "extra_models": ("reference",)}
    objective = GRPO(num_generations=4, num_iterations=3)
    assert objective.num_generations == 4 and objective.num_iterations == 3


def test_yaml_pins_the_paper_defaults_and_matches_the_signature():
    node = yaml.safe_load((REPO / "conf/objective/grpo.yaml").read_text())
    assert node.pop("_target_") == "rizzrun.objectives.grpo.GRPO"
    assert node.pop("models") == {"reference": "init"} and node.pop("precompute") == []
    assert "rewards" not in node  # a top-level key: what scores completions is not the objective's
    params = inspect.signature(GRPO).parameters
    assert set(node) == set(params)  # every argument is pinned
    # dr_grpo's denominator is the generation limit, as TRL's max_completion_length
    assert node.pop("max_completion_length") == "${decoder.max_new_tokens}"
    assert {k: params[k].default for k in node} == node
    assert node["loss_type"] == "grpo" and node["beta"] == 0.04 and node["epsilon"] == 0.2
    assert node["scale_rewards"] == "group" and node["num_iterations"] == 1 and node["num_generations"] == 8
    assert grpo_spec.check({**node, "models": {"reference": "init"}, "precompute": []}, "objective") == []
    assert spec_of("rizzrun.objectives.grpo.GRPO") is grpo_spec


@pytest.mark.parametrize("node, problems", [
    ({"beta": 0.04, "models": {"reference": None}},
     ["objective.models.reference=null: GRPO with beta=0.04 needs a reference model (the k3 KL term); allowed: "
      "objective.models.reference=init (the policy's starting weights) or a run or Hugging Face folder, or "
      "objective.beta=0"]),
    ({"models": {}}, ["objective.models.reference=null: GRPO with beta=0.04 needs a reference model (the k3 KL "
                      "term); allowed: objective.models.reference=init (the policy's starting weights) or a run or "
                      "Hugging Face folder, or objective.beta=0"]),
    ({"beta": 0.0, "models": {"reference": None}}, []),
    ({"beta": 0.0, "models": {"reference": "init"}}, []),  # allowed (not run): a beta sweep needs one override
    ({"models": {"reference": "init"}, "epsilon_high": 0.28, "delta": 1.2},
     ["objective.delta=1.2: the two-sided cap must lie above the upper clip bound 1 + epsilon_high = 1.28; "
      "allowed: delta > 1.28, or null (off)"]),
    ({"models": {"reference": "init"}, "delta": 1.5}, []),
])
def test_spec_check(node, problems):
    assert grpo_spec.check(node, "objective") == problems
