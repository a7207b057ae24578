"""Bradley–Terry reward model and RRM augmentation (rrm.md) against the spec's numbers, pairs
enumerated by hand, rewards of an additive stand-in model computed by hand, per-row forwards of
a real Llama, and a tiny training run on a toy signal."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rizzrun.models.llama import Llama
from rizzrun.objectives import reward_model as rm_module
from rizzrun.objectives.extra import Precomputed
from rizzrun.objectives.preference import join
from rizzrun.objectives.reward_model import (BradleyTerry, ScalarRewardModel, bt_loss, reward_model_from_state,
                                             rrm_pairs, rrm_partners)

REPO = Path(__file__).resolve().parents[1]


class Additive(nn.Module):
    """hidden_states = running sum of token embeddings, so the state at the last real token is the
    sum over the whole sequence: r(x, y) = w . sum(E[x ++ y]) + b, computable by hand."""

    def __init__(self, vocab=16, d=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab, d, generator=g))

    def hidden_states(self, input_ids):
        return self.embed[input_ids].cumsum(1)


def _pad(rows, pad=0):
    width = max(1, max(len(r) for r in rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    return ids, mask


def _batch(prompts, chosen, rejected, rows=None):
    out = {}
    for name, data in (("prompt", prompts), ("chosen", chosen), ("rejected", rejected)):
        out[f"{name}_ids"], out[f"{name}_mask"] = _pad(data)
    out["row"] = torch.tensor(rows if rows is not None else list(range(len(prompts))))
    return out


def _hand_reward(model, head, prompt, response):
    h = model.embed[torch.tensor(prompt + response)].sum(0)
    return (head.weight[0] @ h + head.bias[0]).item()


# --- the spec's numbers -----------------------------------------------------------------------

def test_spec_loss_numbers():
    got = bt_loss(torch.tensor([0.0, 2.0, 2.0]), torch.tensor([0.5, 0.5, 1.0]))
    assert got.tolist() == pytest.approx([math.log(2), 1.1269, 0.1269], abs=1e-4)
    assert got[1] - got[2] == pytest.approx(1.0, abs=1e-6)  # 0.5 * 2: the tie's extra cost at delta = 2
    # the tie loss is minimised at delta = 0 and symmetric; the order of a pair does not matter
    d = torch.linspace(-3, 3, 13)
    tie = bt_loss(d, torch.full_like(d, 0.5))
    assert tie.argmin() == 6 and torch.allclose(tie, tie.flip(0))
    assert torch.allclose(bt_loss(d, torch.ones_like(d)), bt_loss(-d, torch.zeros_like(d)))


# --- augmentation rows, by hand ----------------------------------------------------------------

PROMPTS = [[1], [2], [3]]
CHOSEN = [[4, 5], [6], [7, 8, 9]]
REJECTED = [[10], [11, 12], [13]]


def test_rrm_pairs_of_a_three_row_batch_by_hand():
    sigma = [1, 2, 0]
    w = [tuple(c) for c in CHOSEN]
    l = [tuple(r) for r in REJECTED]
    got = rrm_pairs(sigma, w, l)
    expected = [
        (0, (0, "w"), (1, "w"), 1.0), (0, (0, "w"), (1, "l"), 1.0), (0, (0, "l"), (1, "w"), 1.0),
        (0, (0, "l"), (1, "l"), 1.0), (0, (1, "w"), (1, "l"), 0.5),
        (1, (1, "w"), (2, "w"), 1.0), (1, (1, "w"), (2, "l"), 1.0), (1, (1, "l"), (2, "w"), 1.0),
        (1, (1, "l"), (2, "l"), 1.0), (1, (2, "w"), (2, "l"), 0.5),
        (2, (2, "w"), (0, "w"), 1.0), (2, (2, "w"), (0, "l"), 1.0), (2, (2, "l"), (0, "w"), 1.0),
        (2, (2, "l"), (0, "l"), 1.0), (2, (0, "w"), (0, "l"), 0.5),
    ]
    assert got == expected


def test_rrm_loss_equals_the_hand_built_pairs_with_hand_computed_rewards():
    torch.manual_seed(0)
    model = Additive()
    obj = BradleyTerry(d_model=4, augment="rrm", seed=3)
    batch = _batch(PROMPTS, CHOSEN, REJECTED)
    sigma = rrm_partners([tuple(p) for p in PROMPTS], rm_module._batch_generator(3, batch["row"]))
    assert sorted(sigma) == [0, 1, 2] and all(sigma[i] != i for i in range(3))
    loss, m = obj(model, batch)
    resp = {"w": CHOSEN, "l": REJECTED}
    terms, ties, r = [], [], lambda i, y: _hand_reward(model, obj.head, PROMPTS[i], y)
    for i in range(3):  # the data pairs
        terms.append(-math.log(1 / (1 + math.exp(-(r(i, CHOSEN[i]) - r(i, REJECTED[i]))))))
    for i in range(3):  # the five rows of rrm.md's table, written out
        j = sigma[i]
        for a, b in ((CHOSEN[i], CHOSEN[j]), (CHOSEN[i], REJECTED[j]), (REJECTED[i], CHOSEN[j]),
                     (REJECTED[i], REJECTED[j])):
            terms.append(math.log1p(math.exp(-(r(i, a) - r(i, b)))))
        d = r(i, resp["w"][j]) - r(i, resp["l"][j])
        terms.append(0.5 * math.log1p(math.exp(-d)) + 0.5 * math.log1p(math.exp(d)))
        ties.append(abs(d))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert m["rrm/tie_abs_margin"].item() == pytest.approx(sum(ties) / 3, rel=1e-5)
    assert m["rrm/augmented_rows"].item() == 5.0 and m["rrm/kept_fraction"].item() == 1.0
    rw = [r(i, CHOSEN[i]) for i in range(3)]
    rl = [r(i, REJECTED[i]) for i in range(3)]
    assert m["rewards/chosen"].item() == pytest.approx(sum(rw) / 3, rel=1e-5)
    assert m["rewards/margins"].item() == pytest.approx((sum(rw) - sum(rl)) / 3, rel=1e-5)
    assert m["rewards/accuracies"].item() == pytest.approx(sum(a > b for a, b in zip(rw, rl)) / 3)
    assert (m["pairs"].item(), m["tokens"].item()) == (3, 10)


def test_identical_responses_are_dropped():
    # row 1's chosen and rejected are the same text: no tie (x_i, y_1^w ~ y_1^l); row 2's chosen
    # equals row 0's chosen: no preference between them.
    w = [(4, 5), (6,), (4, 5)]
    l = [(10,), (6,), (13,)]
    got = rrm_pairs([1, 2, 0], w, l)
    assert (0, (1, "w"), (1, "l"), 0.5) not in got
    assert (2, (2, "w"), (0, "w"), 1.0) not in got
    assert (0, (0, "l"), (1, "w"), 1.0) in got and (1, (2, "w"), (2, "l"), 0.5) in got
    assert len(got) == 15 - 2  # every other pair holds two different texts


def test_accuracy_is_on_the_data_pairs_only():
    model = Additive(seed=1)
    obj = BradleyTerry(d_model=4, augment="rrm")
    batch = _batch(PROMPTS, CHOSEN, REJECTED)
    _, m = obj(model, batch)
    _, plain = obj.evaluate(model, batch)
    for key in ("rewards/accuracies", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert m[key].item() == pytest.approx(plain[key].item(), rel=1e-6), key
    rw = [_hand_reward(model, obj.head, PROMPTS[i], CHOSEN[i]) for i in range(3)]
    rl = [_hand_reward(model, obj.head, PROMPTS[i], REJECTED[i]) for i in range(3)]
    assert plain["rewards/accuracies"].item() == pytest.approx(sum(a > b for a, b in zip(rw, rl)) / 3)
    d = torch.tensor(rw) - torch.tensor(rl)
    assert plain["loss"].item() == pytest.approx(torch.nn.functional.softplus(-d).mean().item(), rel=1e-5)


def test_ties_never_count_as_correct_at_equal_rewards():
    obj = BradleyTerry(d_model=4)
    with torch.no_grad():
        obj.head.weight.zero_()
    _, m = obj(Additive(), _batch(PROMPTS, CHOSEN, REJECTED))
    assert m["rewards/accuracies"].item() == 0.0 and m["loss"].item() == pytest.approx(math.log(2))


# --- sigma --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(30))
def test_sigma_never_maps_to_the_same_prompt(seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(2, 10, (1,), generator=g))
    prompts = [(int(t),) for t in torch.randint(0, 3, (B,), generator=g)]
    sigma = rrm_partners(prompts, torch.Generator().manual_seed(seed))
    groups = {p: prompts.count(p) for p in prompts}
    if len(groups) == 1:
        assert sigma == [None] * B
        return
    assert all(prompts[j] != prompts[i] for i, j in enumerate(sigma))
    if 2 * max(groups.values()) <= B:
        assert sorted(sigma) == list(range(B))  # a permutation whenever one exists


def test_sigma_construction_when_shuffles_fail_and_when_no_permutation_exists(monkeypatch):
    monkeypatch.setattr(rm_module, "_SHUFFLE_TRIES", 0)  # force the shift construction
    prompts = [("a",), ("a",), ("a",), ("b",), ("b",), ("c",)]
    sigma = rrm_partners(prompts, torch.Generator().manual_seed(0))
    assert sorted(sigma) == list(range(6)) and all(prompts[j] != prompts[i] for i, j in enumerate(sigma))
    # 3 of 4 rows share a prompt: no permutation can avoid it; every row still gets another prompt
    prompts = [("a",), ("a",), ("a",), ("b",)]
    sigma = rrm_partners(prompts, torch.Generator().manual_seed(0))
    assert sigma[:3] == [3, 3, 3] and sigma[3] in (0, 1, 2)


def test_rows_whose_prompt_every_row_shares_get_no_augmentation():
    obj = BradleyTerry(d_model=4, augment="rrm")
    batch = _batch([[1], [1]], [[4], [5]], [[6], [7]])
    loss, m = obj(Additive(), batch)
    plain, _ = obj.evaluate(Additive(), batch)
    assert m["rrm/augmented_rows"].item() == 0.0 and loss.item() == pytest.approx(plain.item())


def test_augmentation_is_deterministic_given_seed_and_rows():
    prompts = [(i,) for i in range(8)]
    rows = torch.arange(100, 108)
    draw = lambda seed, r: rrm_partners(prompts, rm_module._batch_generator(seed, r))  # noqa: E731
    assert draw(0, rows) == draw(0, rows)
    assert len({tuple(draw(s, rows)) for s in range(6)}) > 1
    assert len({tuple(draw(0, rows + k)) for k in range(6)}) > 1
    model, batch = Additive(), _batch([[i] for i in range(1, 5)], [[5], [6], [7], [8]], [[9], [10], [11], [12]])
    obj = BradleyTerry(d_model=4, augment="rrm", seed=7)
    assert obj(model, batch)[0].item() == obj(model, batch)[0].item()


# --- the filter -------------------------------------------------------------------------------

def test_filter_keeps_augmented_pairs_the_baseline_is_unsure_about():
    model, batch = Additive(), _batch(PROMPTS, CHOSEN, REJECTED)
    obj = BradleyTerry(d_model=4, augment="rrm", filter_below=0.8)
    calls = []

    def indifferent(input_ids, lengths):  # P(label) = 0.5 for preferences, 1 for ties
        calls.append(input_ids.shape[0])
        return torch.zeros(input_ids.shape[0])

    _, m = obj(model, batch, baseline=indifferent)
    assert calls == [12]  # 2B data + 2 per partnered row
    assert m["rrm/kept_fraction"].item() == pytest.approx(12 / 15)
    assert m["rrm/augmented_rows"].item() == 4.0 and m["rrm/tie_abs_margin"].item() == 0.0

    def by_prompt_match(input_ids, lengths):  # scores each response by hand: on-topic 5, off-topic 0
        out = []
        for ids, n in zip(input_ids.tolist(), lengths.tolist()):
            prompt, response = ids[0], tuple(ids[1:n])
            on_topic = response in (tuple(CHOSEN[prompt - 1]), tuple(REJECTED[prompt - 1]))
            out.append(5.0 if on_topic else 0.0)
        return torch.tensor(out)

    # preferences: P = sigmoid(5) = 0.993 >= 0.8 -> dropped; ties: delta 0 -> P = 1 -> dropped
    _, m = obj(model, batch, baseline=by_prompt_match)
    assert m["rrm/kept_fraction"].item() == 0.0 and m["rrm/augmented_rows"].item() == 0.0
    # with filter_below = 1 the ties (P = 1) go, the preferences (0.993) stay
    _, m = BradleyTerry(d_model=4, augment="rrm", filter_below=1.0)(model, batch, baseline=by_prompt_match)
    assert m["rrm/augmented_rows"].item() == 4.0


def test_filter_label_probability_of_a_tie():
    # a tie's label probability is 2 sqrt(sigmoid(d) sigmoid(-d)): 0.6481 at |d| = 2
    p_tie = 2 * math.sqrt(1 / (1 + math.exp(-2)) * 1 / (1 + math.exp(2)))

    def baseline(input_ids, lengths):  # on-topic 5, another row's chosen 2, another row's rejected 0
        out = []
        for ids, n in zip(input_ids.tolist(), lengths.tolist()):
            prompt, response = ids[0], tuple(ids[1:n])
            on_topic = response in (tuple(CHOSEN[prompt - 1]), tuple(REJECTED[prompt - 1]))
            out.append(5.0 if on_topic else 2.0 if response in map(tuple, CHOSEN) else 0.0)
        return torch.tensor(out)

    model, batch = Additive(), _batch(PROMPTS, CHOSEN, REJECTED)
    # preferences have d >= 3 (P >= 0.95): dropped; ties have d = 2 (P = 0.648)
    kept = {}
    for below in (p_tie + 1e-3, p_tie - 1e-3):
        _, m = BradleyTerry(d_model=4, augment="rrm", filter_below=below)(model, batch, baseline=baseline)
        kept[below] = m["rrm/augmented_rows"].item()
    assert list(kept.values()) == [1.0, 0.0]  # the 3 ties (one per row), then none


def test_filter_needs_a_live_baseline():
    obj = BradleyTerry(d_model=4, augment="rrm", filter_below=0.8)
    batch = _batch(PROMPTS, CHOSEN, REJECTED)
    with pytest.raises(ValueError, match="filter_below needs the baseline reward model"):
        obj(Additive(), batch)
    with pytest.raises(ValueError, match="precomputed outputs cannot cover them"):
        obj(Additive(), batch, baseline=Precomputed(torch.zeros(3)))


# --- a real model ----------------------------------------------------------------------------

def _tiny_llama(seed=0, vocab=32):
    torch.manual_seed(seed)
    return Llama(vocab_size=vocab, d_model=16, n_layer=1, n_head=2, d_ff=32, max_seq_len=64)


def test_rewards_read_the_last_real_token_of_each_unpadded_sequence():
    lm = _tiny_llama()
    obj = BradleyTerry(d_model=16)
    batch = _batch([[1, 2, 3], [4], [5, 6]], [[7], [8, 9, 10, 11], [12, 13]], [[14, 15], [16], [17, 18, 19]])
    _, m = obj.evaluate(lm, batch)
    rm = obj.reward_model(lm)
    p, pm = batch["prompt_ids"], batch["prompt_mask"]
    got_w = rm.score(p, pm, batch["chosen_ids"], batch["chosen_mask"])
    with torch.no_grad():
        want_w = [obj.head(lm.hidden_states(torch.tensor([prompt + resp]))[0, -1]).item()
                  for prompt, resp in zip([[1, 2, 3], [4], [5, 6]], [[7], [8, 9, 10, 11], [12, 13]])]
    assert got_w.tolist() == pytest.approx(want_w, rel=1e-5, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(sum(want_w) / 3, rel=1e-5, abs=1e-6)
    # forward with labels (join one longer) equals forward with lengths
    ids, labels = join(p, pm, batch["chosen_ids"], batch["chosen_mask"], length=8)
    lengths = pm.sum(1) + batch["chosen_mask"].sum(1)
    assert torch.allclose(rm(ids, labels), rm(ids, lengths))
    with pytest.raises(ValueError, match="last token is not in input_ids"):
        rm(*join(p, pm, batch["chosen_ids"], batch["chosen_mask"]))


def test_reward_model_from_state_reproduces_the_scores():
    lm = _tiny_llama()
    obj = BradleyTerry(d_model=16)
    batch = _batch([[1, 2]], [[3, 4]], [[5]])
    want = obj.reward_model(lm).score(batch["prompt_ids"], batch["prompt_mask"], batch["chosen_ids"],
                                      batch["chosen_mask"])
    for state in (obj.state_dict(), {f"objective.{k}": v for k, v in obj.state_dict().items()}):
        rm = reward_model_from_state(lm, state)
        assert isinstance(rm, ScalarRewardModel) and rm.head is not obj.head
        got = rm.score(batch["prompt_ids"], batch["prompt_mask"], batch["chosen_ids"], batch["chosen_mask"])
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="no reward head"):
        reward_model_from_state(lm, {"model.x": torch.zeros(1)})
    assert set(obj.state_dict()) == {"head.weight", "head.bias"}


def test_head_gradients_are_finite_and_center_term_adds():
    lm = _tiny_llama()
    batch = _batch(PROMPTS, CHOSEN, REJECTED)
    obj = BradleyTerry(d_model=16, augment="rrm")
    loss, metrics = obj(lm, batch)
    loss.backward()
    for p in (obj.head.weight, obj.head.bias, lm.embed.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(not v.requires_grad for v in metrics.values())
    centred = BradleyTerry(d_model=16, center_rewards_coefficient=0.5)
    centred.load_state_dict(obj.state_dict())
    plain = BradleyTerry(d_model=16)
    plain.load_state_dict(obj.state_dict())
    with torch.no_grad():
        rm = plain.reward_model(lm)
        rw = rm.score(batch["prompt_ids"], batch["prompt_mask"], batch["chosen_ids"], batch["chosen_mask"])
        rl = rm.score(batch["prompt_ids"], batch["prompt_mask"], batch["rejected_ids"], batch["rejected_mask"])
        extra = 0.5 * (rw + rl).square().mean()
        assert centred(lm, batch)[0].item() == pytest.approx((plain(lm, batch)[0] + extra).item(), rel=1e-5)


def _toy_pairs(g, n, vocab=32):
    """Prompts of 3 random ids in [1, 16); chosen responses repeat the prompt's first id, rejected
    responses are random ids in [16, 32) (never in any prompt). 3 response tokens each."""
    prompts = torch.randint(1, 16, (n, 3), generator=g)
    chosen = prompts[:, :1].repeat(1, 3)
    rejected = torch.randint(16, vocab, (n, 3), generator=g)
    ones = torch.ones(n, 3, dtype=torch.bool)
    return {"prompt_ids": prompts, "prompt_mask": ones, "chosen_ids": chosen, "chosen_mask": ones,
            "rejected_ids": rejected, "rejected_mask": ones.clone(), "row": torch.arange(n)}


@pytest.mark.parametrize("augment", ["none", "rrm"])
def test_tiny_training_run_reaches_high_reward_accuracy(augment):
    lm = _tiny_llama(seed=1)
    obj = BradleyTerry(d_model=16, augment=augment)
    opt = torch.optim.Adam(list(lm.parameters()) + list(obj.parameters()), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    held_out = _toy_pairs(torch.Generator().manual_seed(99), 64)
    with torch.no_grad():
        _, before = obj.evaluate(lm, held_out)
    for step in range(120):
        batch = _toy_pairs(g, 16)
        batch["row"] += 16 * step
        loss, _ = obj(lm, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, after = obj.evaluate(lm, held_out)
    assert after["rewards/accuracies"].item() >= 0.95
    assert after["loss"].item() < 0.5 * before["loss"].item()


# --- arguments and config ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({}, "d_model=None"),
    ({"d_model": 4, "augment": "swap"}, "augment='swap'"),
    ({"d_model": 4, "filter_below": 0.8}, "filter_below=0.8 is not allowed with augment='none'"),
    ({"d_model": 4, "augment": "rrm", "filter_below": 1.5}, "filter_below=1.5"),
    ({"d_model": 4, "center_rewards_coefficient": -1.0}, "center_rewards_coefficient=-1.0"),
    ({"d_model": 4, "seed": -1}, "seed=-1"),
])
def test_bad_arguments_name_the_key(kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle.replace(".", r"\.")):
        BradleyTerry(**kwargs)


def test_class_attributes_are_plain_literals_read_by_ast():
    tree = ast.parse(Path(rm_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BradleyTerry")
    attrs = {s.targets[0].id: ast.literal_eval(s.value) for s in cls.body if isinstance(s, ast.Assign)}
    assert attrs == {"batch_kind": "preference", "extra_models": ("baseline",), "policy_generates": False}


def test_yaml_defaults_match_the_signature():
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "objective" / "reward_model.yaml")
    params = inspect.signature(BradleyTerry).parameters
    assert node._target_ == "rizzrun.objectives.reward_model.BradleyTerry"
    assert set(node) - {"_target_", "models"} == set(params)  # models: read by the runner (the baseline)
    assert node.models == {"baseline": None}
    for name, p in params.items():
        if name != "seed":
            assert node[name] == p.default, name
    assert OmegaConf.to_container(node)["seed"] == "${seed}"


def test_config_rules_without_torch():
    import subprocess
    import sys

    code = ("import sys; from rizzrun.config import load, ConfigError\n"
            "try:\n    load(['objective=reward_model', 'objective.filter_below=0.5', 'objective.d_model=0'])\n"
            "except ConfigError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert "objective.filter_below=0.5: filters RRM's augmented pairs, but augment='none'" in out
    assert "objective.d_model=0: out of range; allowed: d_model >= 1" in out
    assert out.strip().endswith("False")


def test_rewards_are_float32_with_a_bf16_head_under_autocast():
    lm = _tiny_llama()
    obj = BradleyTerry(d_model=16)
    batch = _batch(PROMPTS, CHOSEN, REJECTED)
    want = obj.evaluate(lm, batch)[1]["rewards/chosen"]
    obj.head.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, m = obj.evaluate(lm, batch)
    assert loss.dtype == torch.float32
    assert m["rewards/chosen"].item() == pytest.approx(want.item(), abs=0.05)  # bf16 weights and states
