"""WARP stage 1 (arXiv:2406.16768): the EMA anchor against its recurrence written out by hand, the
loss against a per-row float64 REINFORCE with the KL-shaped reward and the group baseline, its
gradient against an independent (likelihood-ratio) autograd formulation on a separately written
forward, the KL metrics by hand, the anchor never trained, its state round trip, and a run through
the runner that resumes to the uninterrupted run."""

from __future__ import annotations

import io
import math

import pytest
import torch
import yaml

from rizzrun.errors import InputError
from rizzrun.objectives import warp_spec
from rizzrun.objectives.warp import WARP, baseline_advantages, ema_update
from rizzrun.rewards.shaping import closeness, numeric_closeness

pytestmark = pytest.mark.usefixtures("one_thread")

V, D = 11, 6


class Toy(torch.nn.Module):
    """A tiny causal LM with completion_logps' calling convention: logits (N, T, V) of ids (N, T),
    each position reading its own token and the mean of the real tokens up to it."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(V, D, generator=g))
        self.out = torch.nn.Parameter(torch.randn(D, V, generator=g) * 0.7)
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, ids, key_padding_mask=None):
        m = torch.ones_like(ids, dtype=torch.float32) if key_padding_mask is None else key_padding_mask.float()
        x = self.emb[ids] * m.unsqueeze(-1)  # padding is read as nothing
        csum = x.cumsum(1) / m.cumsum(1).clamp(min=1).unsqueeze(-1)
        return torch.tanh(x + csum) @ self.out * self.scale


def hand_logp(model: Toy, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log pi(completion | prompt) of one row in float64, no padding, written out position by position."""
    emb, out = model.emb.double(), model.out.double()
    seq = prompt + completion
    total = torch.zeros((), dtype=torch.float64)
    for t in range(len(prompt), len(seq)):
        xs = [emb[seq[j]] for j in range(t)]
        h = torch.tanh(xs[-1] + sum(xs) / t)
        logits = h @ out
        total = total + logits[seq[t]] - torch.logsumexp(logits, 0)
    return total


# 2 prompts x G=3 completions; prompt 1 is left-padded by one; completions end at EOS=1 or run to C.
PROMPTS = [[3, 4], [5]]
COMPLETIONS = [[2, 1], [7, 8, 9], [6, 1], [1], [2, 3, 1], [9, 9, 9]]
G = 3


def make_rollout(rewards) -> dict:
    P, C = 2, 3
    ids, att, cm = [], [], []
    for i, comp in enumerate(COMPLETIONS):
        p = PROMPTS[i // G]
        ids.append([0] * (P - len(p)) + p + comp + [0] * (C - len(comp)))
        att.append([0] * (P - len(p)) + [1] * len(p) + [1] * len(comp) + [0] * (C - len(comp)))
        cm.append([1] * len(comp) + [0] * (C - len(comp)))
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att).bool(),
            "completion_mask": torch.tensor(cm).bool(), "truncated": torch.tensor([c[-1] != 1 for c in COMPLETIONS]),
            "rewards": torch.tensor(rewards, dtype=torch.float32), "group": torch.arange(2).repeat_interleave(G),
            "row": torch.arange(2).repeat_interleave(G), "temperature": torch.tensor(1.0)}


def perturbed(model: Toy, seed: int, size: float = 0.3) -> Toy:
    other = Toy()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * size)
    return other


def sgd_step(model: Toy, objective: WARP, batch: dict, lr: float = 0.5) -> None:
    model.zero_grad()
    loss, _ = objective(model, batch)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(lr * p.grad)
    objective.after_step(model)


# --- the EMA anchor ----------------------------------------------------------------------------

def test_the_ema_follows_its_recurrence_after_k_steps():
    model, mu = Toy(), 0.3
    objective = WARP(num_generations=G, beta=0.1, mu=mu)
    start = {k: v.detach().double().clone() for k, v in model.named_parameters()}
    batch = objective.prepare(model, make_rollout([1.0, 0.0, 0.5, 0.2, 0.9, 0.0]))
    expected = dict(start)
    for _ in range(4):
        sgd_step(model, objective, batch)
        now = {k: v.detach().double() for k, v in model.named_parameters()}
        expected = {k: (1 - mu) * expected[k] + mu * now[k] for k in expected}
    assert objective.updates == 4
    for name, p in objective.ema.named_parameters():
        torch.testing.assert_close(p.double(), expected[name], atol=1e-6, rtol=0)
        assert not torch.equal(p.double(), start[name]) and not torch.equal(p, dict(model.named_parameters())[name])
    # closed form: (1-mu)^k theta_0 + sum_j mu (1-mu)^(k-j) theta_j  is what the loop above wrote out;
    # and the anchor's log-probs are the next prepare's ema_logps
    nxt = objective.prepare(model, make_rollout([0.0] * 6))
    torch.testing.assert_close(nxt["ema_logps"][0, :2].sum().double(),
                               hand_logp(_as_toy(expected), PROMPTS[0], COMPLETIONS[0]), atol=1e-5, rtol=0)


def _as_toy(params: dict) -> Toy:
    toy = Toy()
    with torch.no_grad():
        for k, p in toy.named_parameters():
            p.copy_(params[k].float())
    return toy


@pytest.mark.parametrize("mu", [0.0, 1.0])
def test_mu_zero_keeps_the_start_and_mu_one_follows_the_policy(mu):
    model = Toy()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    objective = WARP(num_generations=G, mu=mu)
    batch = objective.prepare(model, make_rollout([1.0, 0.0, 0.5, 0.2, 0.9, 0.0]))
    for _ in range(3):
        sgd_step(model, objective, batch)
    policy = dict(model.named_parameters())
    for name, p in objective.ema.named_parameters():
        assert torch.equal(p, start[name] if mu == 0 else policy[name].detach())
        assert not torch.equal(policy[name].detach(), start[name])  # the policy did move


def test_ema_update_is_a_lerp_of_named_parameters():
    a, b = Toy(0), Toy(1)
    expected = {k: 0.75 * v.detach() + 0.25 * dict(b.named_parameters())[k].detach() for k, v in a.named_parameters()}
    ema_update(a, b, 0.25)
    for k, v in a.named_parameters():
        torch.testing.assert_close(v.detach(), expected[k], atol=1e-6, rtol=0)


def test_after_step_before_prepare_is_refused():
    with pytest.raises(RuntimeError, match="after_step before any prepare"):
        WARP(num_generations=G).after_step(Toy())


# --- the loss, its gradient, the metrics -------------------------------------------------------

REWARDS = [1.0, 0.0, 0.5, 0.2, 0.9, float("nan")]


def hand_loss(policy: Toy, ema: Toy, ref: Toy, beta: float) -> tuple[torch.Tensor, dict]:
    """Per row in float64: S_i, E_i, R_i = r_i - beta (S_i - E_i), A_i = R_i - mean of the group's
    scored R (a NaN reward: left out, A = 0), loss = -mean_i A_i S_i; KLs per completion token."""
    rows = []
    for i, comp in enumerate(COMPLETIONS):
        p = PROMPTS[i // G]
        S = hand_logp(policy, p, comp)
        with torch.no_grad():
            E, F = float(hand_logp(ema, p, comp)), float(hand_logp(ref, p, comp))
        rows.append((S, E, F, REWARDS[i], len(comp)))
    shaped = [r - beta * (float(S.detach()) - E) for S, E, F, r, n in rows]
    adv = []
    for b in range(2):
        group = [x for x in shaped[b * G:(b + 1) * G] if not math.isnan(x)]
        mean = sum(group) / len(group)
        adv += [0.0 if math.isnan(x) else x - mean for x in shaped[b * G:(b + 1) * G]]
    loss = -sum(a * S for a, (S, *_) in zip(adv, rows)) / len(rows)
    tokens = sum(n for *_, n in rows)
    kl_ema = sum(float(S.detach()) - E for S, E, F, r, n in rows) / tokens
    kl_init = sum(float(S.detach()) - F for S, E, F, r, n in rows) / tokens
    scored = [x for x in shaped if not math.isnan(x)]
    return loss, {"kl_ema": kl_ema, "kl_init": kl_init, "shaped": sum(scored) / len(scored), "adv": adv}


def test_the_loss_and_metrics_equal_a_hand_written_reinforce():
    ref = Toy()
    policy, ema = perturbed(ref, 1), perturbed(ref, 2)
    beta = 0.4
    objective = WARP(num_generations=G, beta=beta)
    objective.prepare(ema, make_rollout(REWARDS))  # the anchor is made from the first policy seen: `ema`
    batch = objective.prepare(policy, make_rollout(REWARDS), reference=ref)
    loss, metrics = objective(policy, batch)
    expected, m = hand_loss(policy, ema, ref, beta)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert metrics["kl_ema"].item() == pytest.approx(m["kl_ema"], abs=1e-5)
    assert metrics["kl_init"].item() == pytest.approx(m["kl_init"], abs=1e-5)
    assert metrics["shaped_reward"].item() == pytest.approx(m["shaped"], abs=1e-5)
    assert metrics["completions"].item() == 6 and metrics["tokens"].item() == sum(map(len, COMPLETIONS))
    assert m["kl_ema"] != 0 and m["kl_init"] != 0 and m["kl_ema"] != pytest.approx(m["kl_init"])
    # beta = 0: the shaped reward is the reward
    plain, _ = WARP(num_generations=G, beta=0.0)(policy, {**batch})
    expected0, _ = hand_loss(policy, ema, ref, 0.0)
    assert plain.item() == pytest.approx(expected0.item(), abs=1e-5)


def test_the_gradient_equals_a_likelihood_ratio_formulation():
    """grad of -mean A_i S_i  ==  grad of -mean A_i exp(S_i - S_i.detach()) (the importance-ratio form
    at rho = 1), each S from the separately written float64 forward; A from the hand formulas."""
    ref = Toy()
    policy, ema = perturbed(ref, 3), perturbed(ref, 4)
    objective = WARP(num_generations=G, beta=0.25)
    objective.prepare(ema, make_rollout(REWARDS))
    batch = objective.prepare(policy, make_rollout(REWARDS))
    loss, _ = objective(policy, batch)
    ours = torch.autograd.grad(loss, [policy.emb, policy.out])
    _, m = hand_loss(policy, ema, ref, 0.25)
    S = torch.stack([hand_logp(policy, PROMPTS[i // G], c) for i, c in enumerate(COMPLETIONS)])
    A = torch.tensor(m["adv"], dtype=torch.float64)
    surrogate = -(A * torch.exp(S - S.detach())).mean()
    theirs = torch.autograd.grad(surrogate, [policy.emb, policy.out])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-4)
        assert b.abs().max() > 1e-3


def test_the_expected_update_is_the_kl_regularised_policy_gradient():
    """Over all completions of one prompt (a 1-token vocabulary walk, enumerated), the REINFORCE
    gradient weighted by pi equals the exact gradient of E_pi[r] - beta KL(pi || pi_ema)."""
    ref = Toy()
    policy, ema = perturbed(ref, 5), perturbed(ref, 6)
    r = torch.linspace(0, 1, V, dtype=torch.float64)
    beta = 0.3

    def dist(model):
        logits = torch.tanh(2 * model.emb[3].double()) @ model.out.double()  # prompt [3], one token
        return torch.log_softmax(logits, 0)

    lp, le = dist(policy), dist(ema).detach()
    exact = (lp.exp() * (r - beta * (lp - le))).sum()
    g_exact = torch.autograd.grad(exact, [policy.emb, policy.out], retain_graph=True)
    # REINFORCE in expectation: sum_y pi(y) (R(y) - b) grad log pi(y), R with no grad, b any constant
    R = (r - beta * (lp.detach() - le))
    b = (lp.exp().detach() * R).sum()
    est = (lp.exp().detach() * (R - b) * lp).sum()
    g_est = torch.autograd.grad(est, [policy.emb, policy.out])
    for a, c in zip(g_exact, g_est):
        torch.testing.assert_close(a, c, atol=1e-10, rtol=1e-8)


def test_baselines():
    v = torch.tensor([1.0, 2.0, 6.0, float("nan"), 3.0, 5.0])
    torch.testing.assert_close(baseline_advantages(v, 3, "group"), torch.tensor([-2.0, -1.0, 3.0, 0.0, -1.0, 1.0]))
    loo = baseline_advantages(v, 3, "loo")  # others' mean: (2+6)/2, (1+6)/2, (1+2)/2 ; 5, 3
    torch.testing.assert_close(loo, torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0.0, 3 - 5.0, 5 - 3.0]))
    torch.testing.assert_close(baseline_advantages(v, 3, "none"), torch.nan_to_num(v, nan=0.0))
    with pytest.raises(ValueError, match="not whole groups"):
        baseline_advantages(v, 4)


# --- the anchor is never trained ----------------------------------------------------------------

def test_the_anchor_gets_no_gradient_and_is_no_parameter_of_anything():
    model = Toy()
    objective = WARP(num_generations=G, beta=1.0, mu=0.5)
    batch = objective.prepare(model, make_rollout(REWARDS), reference=Toy(7))
    assert batch["ema_logps"].grad_fn is None and batch["ref_logps"].grad_fn is None
    loss, _ = objective(model, batch)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in objective.ema.parameters())
    assert all(p.grad is not None for p in model.parameters())
    assert not isinstance(objective, torch.nn.Module)  # the runner's trainable(): the policy only
    ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ids for p in objective.ema.parameters())
    assert not objective.ema.training


# --- state ---------------------------------------------------------------------------------------

def test_the_state_round_trips_and_continues_the_same_anchor():
    rollout = make_rollout([1.0, 0.0, 0.5, 0.2, 0.9, 0.0])
    model = Toy()
    first = WARP(num_generations=G, beta=0.2, mu=0.2)
    batch = first.prepare(model, rollout)
    for _ in range(2):
        sgd_step(model, first, batch)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what the runner's state.pt loader allows
    assert state["updates"] == 2 and set(state["ema"]) == {"emb", "out"}
    twin = Toy()
    twin.load_state_dict(model.state_dict())
    second = WARP(num_generations=G, beta=0.2, mu=0.2)
    second.load_state_dict(state)
    assert second.state_dict()["updates"] == 2  # a checkpoint before the anchor is rebuilt keeps it
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict()["ema"].values(), state["ema"].values()))
    sgd_step(twin, second, second.prepare(twin, rollout))  # a resume inside a block: after_step alone works too
    sgd_step(model, first, first.prepare(model, rollout))
    for (k, a), (_, b) in zip(first.ema.named_parameters(), second.ema.named_parameters()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="a checkpoint of another model"):
        other = WARP(num_generations=G)
        other.load_state_dict({"updates": 1, "ema": {"nope": torch.zeros(1)}})
        other.after_step(Toy())


# --- config --------------------------------------------------------------------------------------

def test_bad_settings_are_one_line_errors():
    with pytest.raises(InputError, match=r"objective.mu=1.5: must be a number in \[0, 1\]"):
        WARP(mu=1.5)
    with pytest.raises(InputError, match="objective.beta=-1: must be a number >= 0"):
        WARP(beta=-1)
    with pytest.raises(InputError, match="objective.baseline='mean': allowed are group, loo, none"):
        WARP(baseline="mean")
    with pytest.raises(InputError, match="objective.num_generations=1: must be an integer >= 2"):
        WARP(num_generations=1)
    assert WARP(num_generations=1, baseline="none").num_generations == 1
    assert warp_spec.check({"num_generations": 1, "baseline": "group"}, "objective")
    assert not warp_spec.check({"num_generations": 1, "baseline": "none"}, "objective")


def test_the_yaml_pins_the_papers_values():
    from pathlib import Path

    node = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/objective/warp.yaml").read_text())
    assert node["beta"] == 0.1 and node["mu"] == 0.01 and node["baseline"] == "group"
    assert node["models"] == {"reference": "init"} and node["precompute"] == []


def test_numeric_closeness():
    assert closeness("12", 12) == 1.0 and closeness(" 15x", 12, 3.0) == pytest.approx(math.exp(-1))
    assert closeness("abc", 12) == 0.0
    assert numeric_closeness(["1+1="] * 3, ["2", "12", "x"], answer=[2, 2, None], scale=10) == \
        [1.0, pytest.approx(math.exp(-1)), None]
    with pytest.raises(ValueError, match="scale=0"):
        numeric_closeness(["a"], ["1"], answer=[1], scale=0)


# --- through the runner ----------------------------------------------------------------------------

def test_a_resumed_run_is_the_uninterrupted_run_anchor_included(tmp_path, shared_cache):
    """objective=warp on the tiny runner setup of tests/test_on_policy_runner.py (mu 0.3: the anchor
    moves visibly): 4 steps straight vs 2 + a resume to 4 give the same weights, metrics and anchor;
    the anchor lives in the checkpoint's `objective` entry (no `objective.*` weights: mergeable)."""
    from test_on_policy_runner import train
    from rizzrun import layout
    from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_state, load_weights
    from rizzrun.runner.generate import objective_weights
    from rizzrun.runner.metrics import read_metrics
    from test_runner import deterministic

    options = ["objective=warp", "objective.mu=0.3", "objective.beta=0.5", "trainer.checkpoint_every=2",
               "trainer.val_every=2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(straight, *options, "trainer.max_steps=4", cache=shared_cache)
    train(split, *options, "trainer.max_steps=2", cache=shared_cache)
    half = load_state(latest_checkpoint(split) / layout.STATE)["objective"]
    assert half["updates"] == 2
    train(split, *options, "trainer.max_steps=4", "resume=true", cache=shared_cache)
    a, b = load_weights(latest_checkpoint(straight) / WEIGHTS), load_weights(latest_checkpoint(split) / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (load_state(latest_checkpoint(d) / layout.STATE)["objective"] for d in (straight, split))
    assert sa["updates"] == sb["updates"] == 4
    assert set(sa["ema"]) == {k for k in a if k in sa["ema"]} and sa["ema"]
    assert all(torch.equal(sa["ema"][k], sb["ema"][k]) for k in sa["ema"])
    assert any(not torch.equal(sa["ema"][k], half["ema"][k]) for k in sa["ema"])  # the anchor moved
    assert any(not torch.equal(sa["ema"][k], a[k]) for k in sa["ema"])  # ... and is not the policy
    rows = read_metrics(straight / layout.METRICS)
    assert deterministic(rows) == deterministic(read_metrics(split / layout.METRICS))
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["train/ema_updates"] for r in train_rows] == [0, 1, 2, 3]
    assert train_rows[0]["train/kl_ema"] == pytest.approx(0, abs=1e-6)  # step 1: anchor = policy = init
    assert all("train/kl_init" in r and "train/reward" in r for r in train_rows)
    assert objective_weights(latest_checkpoint(straight)) == {}
