"""BSPO (arXiv:2503.18130) against independent formulations: GAE by hand and as a Monte-Carlo return
(lambda = 1), the spec's numeric sanity example (beta = 3e-6 < epsilon -> target Q_min = -5 instead
of r + gamma V(s') = +2), PPO's clipped loss and value loss as per-token float64 loops, whitening as
a plain mean/std; the whole objective on a tiny Llama against a per-row float64 re-derivation; the
ScoreLM's LM loss against per-row log-softmax; a reward model run folder as a reward against its own
model; and BSPO through the runner with a ScoreLM run as behaviour model and reward."""

from __future__ import annotations

import ast
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rizzrun.errors import InputError
from rizzrun.models.llama import Llama
from rizzrun.objectives import bspo as bspo_module
from rizzrun.objectives.bspo import BSPO, gae, masked_whiten, ppo_losses, support_mask
from rizzrun.objectives.reward_model import BradleyTerry
from rizzrun.rollouts.logps import completion_logps

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
V = 24
EOS = 1


# --- GAE ------------------------------------------------------------------------------------------

def test_gae_by_hand_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # row 1: two tokens, the rest padding
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: delta = (0.1, 0.1, 0.3); A2 = 0.3, A1 = 0.1 + 0.95 * 0.3, A0 = 0.1 + 0.95 * A1
    a1 = 0.1 + 0.95 * 0.3
    want = [[0.1 + 0.95 * a1, a1, 0.3], [0.95, 1.0, 0.0]]  # row 1: V = 0 after its last token
    torch.testing.assert_close(adv, torch.tensor(want), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.5 + 0.1 + 0.95 * a1, 0.6 + a1, 1.0], [1.95, 2.0, 0.0]]),
                               atol=1e-6, rtol=0)


def test_gae_with_lambda_one_is_the_monte_carlo_return_minus_the_value():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    lengths = [7, 3, 1, 5, 6]
    mask = torch.tensor([[t < n for t in range(7)] for n in lengths])
    gamma = 0.9
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=1.0)
    for i, n in enumerate(lengths):
        for t in range(n):
            mc = sum(gamma ** (k - t) * rewards[i, k].item() for k in range(t, n))
            assert adv[i, t].item() == pytest.approx(mc - values[i, t].item(), abs=1e-5)
            assert ret[i, t].item() == pytest.approx(mc, abs=1e-5)


def test_spec_sanity_example_unsupported_token_gets_q_min():
    # Token 0: beta = 3e-6 < epsilon = 1e-4; its normal target r + gamma V(s') = 0 + 2 = +2, V(s) = 1.
    # Token 1: beta = 0.02 keeps its normal target (the reward 2 at the end).
    beta = torch.tensor([[3e-6, 0.02]])
    unsupported = support_mask(beta.log(), epsilon=1e-4)
    assert unsupported.tolist() == [[True, False]]
    rewards, values, mask = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool)
    plain, plain_ret = gae(rewards, values, mask, 1.0, 0.95)
    cut, cut_ret = gae(rewards, values, mask, 1.0, 0.95, unsupported, v_min=-5.0)
    assert plain_ret[0, 0].item() == pytest.approx(2.0) and plain[0, 0].item() == pytest.approx(1.0)
    assert cut_ret[0, 0].item() == pytest.approx(-5.0) and cut[0, 0].item() == pytest.approx(-6.0)
    assert cut[0, 1].item() == plain[0, 1].item() == pytest.approx(0.0)  # the supported token: unchanged
    # A strongly negative advantage: PPO lowers pi(a|s) (d loss / d log pi = -A / tokens at rho = 1).
    logps = torch.zeros(1, 2, requires_grad=True)
    ppo_losses(logps, logps.detach(), cut, values, values, cut_ret, mask)["policy"].backward()
    assert logps.grad[0, 0].item() == pytest.approx(6.0 / 2)


def test_support_threshold_edges_and_top_p():
    lp = torch.tensor([math.log(1e-4), math.log(1.01e-4), -math.inf])
    assert support_mask(lp, 1e-4).tolist() == [True, False, True]  # beta <= epsilon is unsupported
    assert not support_mask(lp, 0.0).any()  # epsilon = 0: support off
    probs = torch.tensor([0.6, 0.3, 0.09, 0.01])
    logits = probs.log().expand(4, 4).unsqueeze(0)  # (1, 4, V=4): the same distribution at 4 positions
    actions = torch.arange(4).unsqueeze(0)
    got = support_mask(None, top_p=0.95, behavior_logits=logits, actions=actions)
    assert got.tolist() == [[False, False, False, True]]  # nucleus {0.6, 0.3, 0.09} reaches 0.95
    assert support_mask(None, top_p=0.9, behavior_logits=logits, actions=actions).tolist() == [[False, False, True,
                                                                                                True]]


# --- PPO losses and whitening ---------------------------------------------------------------------

def test_ppo_losses_against_per_token_loops():
    g = torch.Generator().manual_seed(1)
    N, C = 3, 4
    logps, old = torch.randn(N, C, generator=g) * 0.3, torch.randn(N, C, generator=g) * 0.3
    A, vals, old_v, R = (torch.randn(N, C, generator=g) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = ppo_losses(logps, old, A, vals, old_v, R, mask, clip=0.2, cliprange_value=0.2)
    pg, vf, cf, n = 0.0, 0.0, 0, 0
    for i in range(N):
        for t in range(C):
            if not mask[i, t]:
                continue
            r = math.exp(logps[i, t].item() - old[i, t].item())
            a = A[i, t].item()
            pg += -min(r * a, min(max(r, 0.8), 1.2) * a)
            cf += (-min(max(r, 0.8), 1.2) * a) > -r * a
            v, ov, ret = vals[i, t].item(), old_v[i, t].item(), R[i, t].item()
            vc = ov + min(max(v - ov, -0.2), 0.2)
            vf += 0.5 * max((v - ret) ** 2, (vc - ret) ** 2)
            n += 1
    assert out["policy"].item() == pytest.approx(pg / n, abs=1e-6)
    assert out["value"].item() == pytest.approx(vf / n, abs=1e-6)
    assert out["clipfrac"].item() == pytest.approx(cf / n)


def test_masked_whiten_is_mean_and_unbiased_std_of_the_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    real = torch.tensor([1.0, 2.0, 3.0, 4.0])
    want = (real - real.mean()) / real.std()  # torch.std: unbiased
    got = masked_whiten(x, mask)
    torch.testing.assert_close(got[mask], want, atol=1e-5, rtol=0)
    assert got[~mask].tolist() == [0.0, 0.0]


# --- the objective on a tiny Llama ----------------------------------------------------------------

def _llama(seed):
    torch.manual_seed(seed)
    return Llama(vocab_size=V, d_model=16, n_layer=1, n_head=2, d_ff=32, max_seq_len=32)


def _rollout():
    """3 prompts (left-padded) x completions of 3, 2 and 1 tokens (EOS = 1 ends two of them)."""
    prompt = torch.tensor([[1, 5, 6], [0, 1, 7], [1, 8, 9]])
    pmask = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    comp = torch.tensor([[10, 11, EOS], [12, EOS, 0], [13, 0, 0]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    return {"input_ids": torch.cat([prompt, comp], 1), "attention_mask": torch.cat([pmask, cmask], 1),
            "completion_mask": cmask, "truncated": torch.tensor([False, False, True]),
            "rewards": torch.tensor([0.5, -1.0, 2.0]), "row": torch.arange(3), "temperature": torch.tensor(1.0)}


class TableBehavior(nn.Module):
    """beta(a | s) depends on the previous token only: logits = table[previous token]; token 11 after
    10 and token 13 after 9 get probability ~1e-9 (unsupported), everything else is plausible."""

    def __init__(self):
        super().__init__()
        self.table = torch.zeros(V, V)
        self.table[10, 11] = -25.0
        self.table[9, 13] = -25.0

    def forward(self, input_ids, key_padding_mask=None):
        return self.table[input_ids]


def _by_hand(policy, head, rollout, unsupported=None, v_min=0.0, clip=0.2, vf_coef=0.1, mode="value_target"):
    """The BSPO loss in float64, row by row, each row's sequence on its own (no padding)."""
    C = rollout["completion_mask"].shape[1]
    P = rollout["input_ids"].shape[1] - C
    rows = []
    with torch.no_grad():
        for i in range(rollout["input_ids"].shape[0]):
            real = rollout["attention_mask"][i].bool()
            seq = rollout["input_ids"][i][real]
            n = int(rollout["completion_mask"][i].sum())
            p = int(real[:P].sum())
            h = policy.hidden_states(seq[:-1].unsqueeze(0))[0].double()
            logits = policy.lm_head(h.float()).double()[p - 1:p - 1 + n]
            logp = torch.log_softmax(logits, -1).gather(1, seq[p:p + n].unsqueeze(1)).squeeze(1)
            vals = (h[p - 1:p - 1 + n] @ head.weight[0].double() + head.bias.double()).tolist()
            score = float(rollout["rewards"][i])
            u = [False] * n if unsupported is None else unsupported[i][:n].tolist()
            if mode == "reward_penalty" and any(u):
                score = v_min
            adv = [0.0] * n
            nxt_a = 0.0
            for t in reversed(range(n)):
                r = score if t == n - 1 else 0.0
                nv = vals[t + 1] if t + 1 < n else 0.0
                a = r + nv - vals[t] + 0.95 * nxt_a
                if u[t] and mode == "value_target":
                    a = v_min - vals[t]
                adv[t] = nxt_a = a
            rows.append((logp, vals, adv))
    flat = [a for _, _, adv in rows for a in adv]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((a - mean) ** 2 for a in flat) / (len(flat) - 1))
    pg = vf = 0.0
    for logp, vals, adv in rows:
        for t in range(len(adv)):
            A = (adv[t] - mean) / std
            pg += -A  # rho = 1 at the first step: -min(A, clip(1) A)
            vf += 0.5 * (vals[t] - (adv[t] + vals[t])) ** 2
    return pg / len(flat) + vf_coef * vf / len(flat)


def _objective(**kw):
    obj = BSPO(d_model=16, **kw)
    with torch.no_grad():  # a non-zero value head so that values matter
        obj.value_head.weight.copy_(torch.linspace(-0.3, 0.3, 16))
        obj.value_head.bias.fill_(0.1)
    return obj


def test_plain_ppo_equals_a_per_row_float64_derivation():
    policy, rollout = _llama(0), _rollout()
    obj = _objective()
    with torch.no_grad():
        batch = obj.prepare(policy, rollout)
    loss, metrics = obj(policy, batch)
    assert loss.item() == pytest.approx(_by_hand(policy, obj.value_head, rollout), abs=1e-5)
    assert metrics["completions"].item() == 3 and metrics["tokens"].item() == 6
    assert "bspo/frac_unsupported_tokens" not in metrics
    # completion log-probs agree with the shared helper every other objective scores with
    torch.testing.assert_close(batch["old_logps"], completion_logps(policy, rollout), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["value_target", "reward_penalty"])
def test_behaviour_support_against_the_derivation(mode):
    policy, rollout, behavior = _llama(0), _rollout(), TableBehavior()
    obj = _objective(mode=mode, v_min=-3.0)
    with torch.no_grad():
        batch = obj.prepare(policy, rollout, behavior=behavior)
    want_u = torch.tensor([[False, True, False], [False, False, False], [True, False, False]])
    assert batch["unsupported"].tolist() == want_u.tolist()
    loss, metrics = obj(policy, batch)
    assert loss.item() == pytest.approx(_by_hand(policy, obj.value_head, rollout, want_u, -3.0, mode=mode), abs=1e-5)
    assert metrics["bspo/frac_unsupported_tokens"].item() == pytest.approx(2 / 6)
    assert metrics["bspo/frac_unsupported_responses"].item() == pytest.approx(2 / 3)
    if mode == "value_target":  # the unsupported tokens' raw target is V_min
        assert batch["returns"][want_u].tolist() == pytest.approx([-3.0, -3.0])


def test_monitor_mode_and_epsilon_zero_are_plain_ppo():
    policy, rollout = _llama(0), _rollout()
    plain = _objective()
    with torch.no_grad():
        ref = plain(policy, plain.prepare(policy, rollout))[0]
        for obj in (_objective(mode="monitor"), _objective(epsilon=0.0)):
            loss, metrics = obj(policy, obj.prepare(policy, rollout, behavior=TableBehavior()))
            assert loss.item() == pytest.approx(ref.item(), abs=1e-7)
    assert metrics.get("bspo/frac_unsupported_tokens") is None  # epsilon = 0: nothing measured
    monitor = _objective(mode="monitor")
    with torch.no_grad():
        _, m = monitor(policy, monitor.prepare(policy, rollout, behavior=TableBehavior()))
    assert m["bspo/frac_unsupported_responses"].item() == pytest.approx(2 / 3)


def test_v_min_null_is_the_lowest_reward_seen_so_far():
    policy, rollout = _llama(0), _rollout()
    obj = _objective()
    with torch.no_grad():
        assert float(obj.prepare(policy, rollout)["v_min"]) == -1.0
        rollout["rewards"] = torch.tensor([3.0, 4.0, 5.0])
        assert float(obj.prepare(policy, rollout)["v_min"]) == -1.0  # still the lowest seen
    assert "seen_min" in obj.state_dict()  # checkpointed with the value head


def test_gradients_reach_policy_and_value_head_and_num_iterations_clip():
    policy, rollout = _llama(0), _rollout()
    obj = _objective(num_iterations=2)
    with torch.no_grad():
        batch = obj.prepare(policy, rollout, behavior=TableBehavior())
    loss, _ = obj(policy, batch)
    loss.backward()
    assert obj.value_head.weight.grad.abs().sum() > 0
    assert policy.lm_head.weight.grad.abs().sum() > 0
    opt = torch.optim.SGD([*policy.parameters(), *obj.parameters()], lr=5.0)
    opt.step()
    _, m = obj(policy, batch)  # the second step on the same rollout: the ratio moved
    assert m["policy/approxkl_avg"].item() > 0 and m["val/ratio"].item() != 1.0


def test_kl_needs_a_reference_and_reward_includes_it():
    policy, rollout = _llama(0), _rollout()
    obj = _objective(kl_coef=0.5)
    with pytest.raises(ValueError, match="needs a reference model"):
        obj.prepare(policy, rollout)
    with torch.no_grad():
        batch = obj.prepare(policy, rollout, reference=_llama(1))
    assert batch["kl"].shape == (3,) and batch["kl"].abs().sum() > 0


@pytest.mark.parametrize("kwargs,needle", [({"clip": 1.5}, "objective.clip=1.5"),
                                           ({"mode": "x"}, "objective.mode='x'"),
                                           ({"epsilon": -1}, "objective.epsilon=-1"),
                                           ({"top_p": 0}, "objective.top_p=0"),
                                           ({"d_model": None}, "objective.d_model=None")])
def test_bad_arguments_name_the_key(kwargs, needle):
    with pytest.raises(InputError, match="^" + needle.replace(".", r"\.").replace("(", r"\(")):
        BSPO(**{"d_model": 16, **kwargs})


def test_yaml_defaults_match_the_signature_and_attributes_are_literals():
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "objective" / "bspo.yaml")
    params = inspect.signature(BSPO).parameters
    assert set(node) - {"_target_", "models", "precompute"} == set(params)
    for name, p in params.items():
        assert node[name] == p.default, name
    tree = ast.parse(Path(bspo_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BSPO")
    attrs = {s.targets[0].id: ast.literal_eval(s.value) for s in cls.body if isinstance(s, ast.Assign)}
    assert attrs == {"batch_kind": "prompts", "extra_models": ("behavior", "reference"),
                     "unshardable": attrs.get("unshardable")}
    assert "value head" in attrs["unshardable"]  # the validator's reason under trainer.strategy=fsdp


def test_config_rules_without_torch():
    code = ("import sys; from rizzrun.config import load, ConfigError\n"
            "try:\n    load(['data=arithmetic_prompts', 'objective=bspo', 'objective.kl_coef=0.1', 'objective.clip=2'])\n"
            "except ConfigError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert "objective.models.reference=null: BSPO with kl_coef=0.1 needs a reference model" in out
    assert "objective.clip=2: out of range" in out
    assert out.strip().endswith("False")


# --- ScoreLM: the reward model keeps its LM head ----------------------------------------------------

def test_scorelm_loss_adds_the_responses_next_token_loss():
    lm = _llama(0)
    batch = {"prompt_ids": torch.tensor([[1, 5, 6], [1, 7, 0]]), "prompt_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]).bool(),
             "chosen_ids": torch.tensor([[10, 1], [11, 12]]), "chosen_mask": torch.tensor([[1, 1], [1, 1]]).bool(),
             "rejected_ids": torch.tensor([[13, 14, 1], [15, 0, 0]]),
             "rejected_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]).bool(), "row": torch.arange(2)}
    plain = BradleyTerry(d_model=16)
    score = BradleyTerry(d_model=16, lm_coef=0.5)
    score.load_state_dict(plain.state_dict())
    bt, m0 = plain(lm, batch)
    total, m = score(lm, batch)
    nll, count = 0.0, 0
    with torch.no_grad():
        for prompt, resp in [([1, 5, 6], [10, 1]), ([1, 7], [11, 12]), ([1, 5, 6], [13, 14, 1]), ([1, 7], [15])]:
            seq = torch.tensor(prompt + resp)
            lp = torch.log_softmax(lm(seq[:-1].unsqueeze(0))[0].double(), -1)
            for k in range(len(resp)):
                nll -= lp[len(prompt) - 1 + k, resp[k]].item()
                count += 1
    assert m["lm_loss"].item() == pytest.approx(nll / count, abs=1e-5)
    assert total.item() == pytest.approx(bt.item() + 0.5 * nll / count, abs=1e-5)
    assert "lm_loss" not in m0 and m["rewards/chosen"].item() == pytest.approx(m0["rewards/chosen"].item(), abs=1e-6)
    total.backward()
    assert lm.lm_head.weight.grad.abs().sum() > 0


# --- through the runner: a ScoreLM run folder as reward and behaviour model -------------------------

TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler=constant", "optimizer.lr=1e-3",
        "trainer.num_threads=1", "trainer.samples_per_val=0"]


@pytest.fixture(scope="module")
def scorelm(tmp_path_factory, shared_cache) -> Path:
    """A tiny ScoreLM run folder (reward_model with lm_coef) on the built-in addition pairs."""
    from rizzrun.config import compose
    from rizzrun.runner.train import run

    folder = tmp_path_factory.mktemp("scorelm") / "run"
    cfg = compose([*TINY, f"cache_dir={shared_cache}", "data=arithmetic_pairs", "data.n_train=32", "data.n_val=8",
                   "data.batch_size=8", "objective=reward_model", "objective.lm_coef=1.0", "trainer.max_steps=2",
                   "trainer.val_every=2", "eval.at_end=false"])
    assert run(cfg, folder)["status"] == "completed"
    return folder


def test_run_reward_model_scores_as_its_own_model(scorelm):
    from rizzrun.rewards.model import RunRewardModel
    from rizzrun.runner.generate import load_run_model

    fn = RunRewardModel(str(scorelm), device="cpu")
    prompts, completions = ["12+34=", "5+7=", "12+34="], ["46", "", "4x"]
    got = fn(prompts, completions, answer=[46, 12, 46])
    model, tok = load_run_model(scorelm)
    want = []
    with torch.no_grad():
        for p, c in zip(prompts, completions):  # [EOS] + prompt bytes, completion bytes + [EOS]
            ids = [tok.eos_id, *tok.encode(p), *tok.encode(c), tok.eos_id]
            want.append(model(torch.tensor([ids]), torch.tensor([len(ids)])).item())
    assert got == pytest.approx(want, abs=1e-5)
    assert fn(prompts[:1], completions[:1]) == pytest.approx(want[:1], abs=1e-5)  # batch-independent
    assert hasattr(model, "lm")  # the ScoreLM keeps its LM: BSPO's behaviour model


def test_bspo_trains_through_the_runner_with_a_scorelm(scorelm, tmp_path, shared_cache):
    from rizzrun.config import compose
    from rizzrun.layout import METRICS
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    cfg = compose([*TINY, f"cache_dir={shared_cache}", "data=arithmetic_prompts", "data.n_train=24", "data.n_val=6",
                   "data.batch_size=3", "decoder=sample", "decoder.max_new_tokens=4", "objective=bspo",
                   "objective.num_generations=2", "objective.epsilon=0.01", f"objective.models.behavior={scorelm}",
                   "trainer.max_steps=2", "trainer.val_every=2", "eval.at_end=false",
                   f"rewards={{rm: {{_target_: rizzrun.rewards.model.RunRewardModel, path: '{scorelm}'}}, "
                   "gold: {_target_: rizzrun.rewards.tasks.char_accuracy, _partial_: true, weight: 0.0}}"])
    assert run(cfg, tmp_path / "run")["status"] == "completed"
    rows = [r for r in read_metrics(tmp_path / "run" / METRICS) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["train/bspo/frac_unsupported_tokens"] <= r["train/bspo/frac_unsupported_responses"] <= 1
        assert "train/rewards/rm/mean" in r and 0 <= r["train/rewards/gold/mean"] <= 1
        assert r["train/reward"] == pytest.approx(r["train/rewards/rm/mean"], abs=1e-5)  # gold has weight 0
    from rizzrun.runner.generate import load_run_model

    policy, _ = load_run_model(tmp_path / "run")  # the value head is the objective's: the run loads as its policy
    assert isinstance(policy, Llama)


# --- the proxy reward model's data: pairs of a sample run's completions ------------------------------

def test_rollout_pairs_by_hand():
    from rizzrun.data.rollout_pairs import rollout_pairs

    def row(r, s, text, reward, truncated=False):
        return {"row": r, "sample": s, "prompt": f"p{r}=", "completion": text, "reward": reward,
                "truncated": truncated}

    rows = [row(0, 0, "a", 1.0), row(0, 1, "b", 0.5), row(0, 2, "a", 1.0), row(0, 3, "c", 0.0),
            row(0, 4, "d", 0.0, truncated=True), row(0, 5, "e", None), row(1, 0, "x", 0.3), row(1, 1, "y", 0.3)]
    # prompt 0: distinct scored untruncated a (1.0), b (0.5), c (0.0): gaps a>c 1.0, a>b 0.5, b>c 0.5
    assert rollout_pairs(rows, per_prompt=2) == [("p0=", "a", "c"), ("p0=", "a", "b")]
    assert rollout_pairs(rows, per_prompt=None) == [("p0=", "a", "c"), ("p0=", "a", "b"), ("p0=", "b", "c")]
    assert rollout_pairs(rows, min_gap=0.6, per_prompt=None) == [("p0=", "a", "c")]  # prompt 1: a tie, no pair
    assert ("p0=", "a", "d") in rollout_pairs(rows, per_prompt=None, drop_truncated=False)
    # a reference answer (sample -1, reward 1) is paired only when asked for: prompt 1's tie gets a pair
    rows.append(row(1, -1, "z", 1.0))
    assert rollout_pairs(rows, per_prompt=None) == rollout_pairs(rows[:-1], per_prompt=None)
    assert rollout_pairs(rows, min_gap=0.6, per_prompt=None, references=True) == [
        ("p0=", "a", "c"), ("p1=", "z", "x"), ("p1=", "z", "y")]
