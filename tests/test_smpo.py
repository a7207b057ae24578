"""SMPO against the spec's numbers (smpo.md), a per-token Python loop over the raw pairs, numpy's
quantile, and the intended semantics of the 2025 flags written out by hand."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rizzrun.objectives import smpo as smpo_module
from rizzrun.objectives.preference import IGNORE, pair_sequences
from rizzrun.objectives.smpo import SMPO, adjust_token_logps, margin_at, smpo_pair_loss
from test_objectives import LogitsTable

REPO = Path(__file__).resolve().parents[1]
Table = LogitsTable  # logits = a learnable (N, T, V) table, whatever the input ids




def _pad(rows, pad=0):
    width = max(1, max(len(r) for r in rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    return ids, mask


def _batch(prompts, chosen, rejected):
    out = {}
    for name, rows in (("prompt", prompts), ("chosen", chosen), ("rejected", rejected)):
        out[f"{name}_ids"], out[f"{name}_mask"] = _pad(rows)
    out["row"] = torch.arange(len(prompts))
    return out


def _table_for(labels, target_lp, vocab=7):
    """Logits (N, T, V) giving log p(label) = target_lp[n, t] at every labelled position: the label
    gets logit a, the others 0, with a = log(p (V - 1) / (1 - p))."""
    N, T = labels.shape
    logits = torch.zeros(N, T, vocab, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            if labels[n, t] != IGNORE:
                p = math.exp(target_lp[n][t])
                logits[n, t, labels[n, t]] = math.log(p * (vocab - 1) / (1 - p))
    return logits.float()


# --- the spec's numbers -----------------------------------------------------------------------

def test_spec_pair_loss_example():
    delta = torch.tensor([0.10, 0.35, 0.5])
    got = smpo_pair_loss(delta, 0.35, 1.2, "smooth_lower_bound")
    assert got.tolist() == pytest.approx([0.09, 0.0, 0.0], abs=1e-7)  # (1.2 * 0.25)^2; no push past m


def test_loss_types_follow_their_formulas():
    d, m, b = torch.tensor([0.1, 0.6]), 0.35, 1.2
    z = [b * (0.1 - m), b * (0.6 - m)]
    assert smpo_pair_loss(d, m, b, "sigmoid").tolist() == pytest.approx([math.log1p(math.exp(-x)) for x in z], rel=1e-6)
    assert smpo_pair_loss(d, m, b, "hinge").tolist() == pytest.approx([max(0, -x) for x in z], rel=1e-6)
    assert smpo_pair_loss(d, m, b, "ipo").tolist() == pytest.approx([x * x for x in z], rel=1e-6)


def test_spec_total_loss_example_2_19():
    # Two pairs with per-pair mean log-probs (chosen, rejected) = (-1, -1.1) and (-3, -3.1): both
    # delta = 0.1 -> L_po = 0.09. Chosen lengths 1, 1 and rejected 3, 7 make the token-mean CEs
    # exactly the spec's 2.0 and 2.5: L = 0.09 + 0.8 * 2.0 + 0.2 * 2.5 = 2.19.
    batch = _batch([[1, 2], [3]], [[4], [5]], [[6, 1, 2], [3, 4, 5, 6, 1, 2, 3]])
    _, labels = pair_sequences(batch)
    per_row = [-1.0, -3.0, -1.1, -3.1]
    target = [[per_row[n]] * labels.shape[1] for n in range(4)]
    model = Table(_table_for(labels, target))
    loss, m = SMPO(margin_schedule=False)(model, batch)
    assert loss.item() == pytest.approx(2.19, abs=1e-5)
    assert m["chosen_sft_loss"].item() == pytest.approx(2.0, abs=1e-5)
    assert m["rejected_sft_loss"].item() == pytest.approx(2.5, abs=1e-5)
    assert m["rewards/margins"].item() == pytest.approx(1.2 * 0.1, abs=1e-5)
    assert m["rewards/chosen"].item() == pytest.approx(1.2 * -2.0, abs=1e-5)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == pytest.approx(-2.0, abs=1e-5)  # summed: -1 and -3
    assert m["logps/rejected"].item() == pytest.approx((-3.3 - 21.7) / 2, abs=1e-4)
    assert m["rewards/target_margin"].item() == pytest.approx(0.35)
    assert (m["pairs"].item(), m["tokens"].item()) == (2, 12)


def test_spec_min_log_prob_clamp_gives_no_gradient():
    lp = torch.tensor([[-4.0, -1.0], [-4.0, -1.0]], requires_grad=True)
    labels = torch.tensor([[1, 2], [1, 2]])
    rejected = torch.tensor([False, True])
    out, extra = adjust_token_logps(lp, labels, rejected, min_log_prob=-2.3)
    assert out.tolist() == [[-4.0, -1.0], [pytest.approx(-2.3), -1.0]]  # chosen rows untouched
    out.sum().backward()
    assert lp.grad.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert extra["clipped_fraction"].item() == 0.5


# --- against a direct per-token computation ---------------------------------------------------

def _reference_smpo(logits, batch, beta, m, r):
    """The spec's formula, pair by pair from the raw ids: position k of prompt ++ completion is
    predicted by the logits at position k - 1."""
    lp = torch.log_softmax(logits.double(), -1)
    B = batch["row"].shape[0]
    means, sums, counts = {}, {}, {}
    for side, offset in (("chosen", 0), ("rejected", B)):
        for i in range(B):
            p = batch["prompt_ids"][i][batch["prompt_mask"][i]].tolist()
            c = batch[f"{side}_ids"][i][batch[f"{side}_mask"][i]].tolist()
            seq = p + c
            vals = [lp[offset + i, k - 1, seq[k]].item() for k in range(len(p), len(seq))]
            sums[side, i], counts[side, i] = sum(vals), len(vals)
            means[side, i] = sum(vals) / max(len(vals), 1)
    po = [max(0.0, -beta * (means["chosen", i] - means["rejected", i] - m)) ** 2 for i in range(B)]
    ce = {s: -sum(sums[s, i] for i in range(B)) / sum(counts[s, i] for i in range(B)) for s in ("chosen", "rejected")}
    return sum(po) / B + r * ce["chosen"] + (1 - r) * ce["rejected"]


def test_loss_equals_per_token_reference_on_random_pairs():
    g = torch.Generator().manual_seed(0)
    batch = _batch([[1, 2, 3], [4], [5, 6]], [[7, 8], [9, 10, 11, 12], [3]], [[2], [5, 6], [8, 9, 10]])
    input_ids, _ = pair_sequences(batch)
    logits = torch.randn(*input_ids.shape, 13, generator=g)
    obj = SMPO(margin_schedule=False, target_margin=2.0)  # a large margin: every pair is pushed
    loss, _ = obj(Table(logits), batch)
    assert loss.item() == pytest.approx(_reference_smpo(logits, batch, 1.2, 2.0, 0.8), rel=1e-5)


# --- the margin schedule ----------------------------------------------------------------------

def test_margin_schedule_values():
    assert margin_at(0, 0.35, 100) == pytest.approx(0.01)
    assert margin_at(50, 0.35, 100) == pytest.approx(0.18)
    assert margin_at(100, 0.35, 100) == pytest.approx(0.35)
    assert margin_at(250, 0.35, 100) == pytest.approx(0.35)
    obj = SMPO(max_steps=10)
    assert obj.margin == pytest.approx(0.01)
    obj.set_step(5)
    assert obj.margin == pytest.approx(0.18)
    assert SMPO(margin_schedule=False, max_steps=10).margin == 0.35


def test_schedule_state_round_trip_and_metric():
    obj = SMPO(max_steps=20)
    obj.set_step(7)
    fresh = SMPO(max_steps=20)
    fresh.load_state_dict(obj.state_dict())
    assert fresh.step == 7 and fresh.margin == obj.margin == pytest.approx(0.01 + 0.34 * 7 / 20)
    batch = _batch([[1]], [[2, 3]], [[4]])
    input_ids, _ = pair_sequences(batch)
    _, m = fresh(Table(torch.zeros(*input_ids.shape, 5)), batch)
    assert m["rewards/target_margin"].item() == pytest.approx(0.01 + 0.34 * 7 / 20)


def test_schedule_without_set_step_warns_once(caplog):
    obj = SMPO(max_steps=20)
    batch = _batch([[1]], [[2, 3]], [[4]])
    input_ids, _ = pair_sequences(batch)
    with caplog.at_level("WARNING", logger="rizzrun.objectives.smpo"):
        obj(Table(torch.zeros(*input_ids.shape, 5)), batch)
        obj(Table(torch.zeros(*input_ids.shape, 5)), batch)
    assert sum("set_step() was never called" in r.message for r in caplog.records) == 1


# --- the 2025 flags, intended semantics -------------------------------------------------------

def test_eos_inversion_only_on_a_rejected_rows_final_eos():
    EOS = 9
    labels = torch.tensor([[IGNORE, 3, EOS, IGNORE],   # chosen ending in EOS: untouched
                           [IGNORE, 3, EOS, IGNORE],   # rejected ending in EOS: inverted
                           [IGNORE, EOS, 4, IGNORE],   # rejected with EOS inside: untouched
                           [IGNORE, 3, 4, 5]])          # rejected without EOS (truncated): untouched
    lp = torch.full((4, 4), -0.5)
    out, _ = adjust_token_logps(lp, labels, torch.tensor([False, True, True, True]), eos_id=EOS)
    expected = lp.clone()
    expected[1, 2] = 0.5
    assert torch.equal(out, expected)


def test_lower_winsorization_matches_numpy_quantile_and_zeroes_those_gradients():
    g = torch.Generator().manual_seed(3)
    lp = (-torch.rand(2, 40, generator=g) * 6).requires_grad_()
    labels = torch.ones(2, 40, dtype=torch.long)
    labels[1, 35:] = IGNORE  # the rejected row has 35 completion tokens
    rejected = torch.tensor([False, True])
    # 35 rejected tokens < 50: the fallback leaves everything alone
    out, _ = adjust_token_logps(lp, labels, rejected, lower_clip_percentile=0.1)
    assert torch.equal(out, lp)
    out, extra = adjust_token_logps(lp, labels, rejected, lower_clip_percentile=0.1, min_clip_tokens=30)
    q = np.quantile(lp.detach()[1, :35].numpy().astype(np.float64), 0.1)  # linear interpolation
    low = lp.detach()[1, :35] < q
    assert low.sum() == 4  # the quantile sits at sorted position 0.1 * 34 = 3.4: 4 values below it
    assert torch.allclose(out[1, :35], torch.where(low, torch.tensor(q, dtype=torch.float32), lp[1, :35]))
    assert torch.equal(out[0], lp[0]) and torch.equal(out[1, 35:], lp[1, 35:])  # chosen row, ignored tail
    out.sum().backward()
    assert torch.equal(lp.grad[1, :35], (~low).float())
    assert extra["clipped_fraction"].item() == pytest.approx(4 / 35)


def test_upper_winsorization_clamps_chosen_tokens_from_above():
    lp = torch.tensor([[-0.1, -0.2, -0.3, -3.0], [-0.01, -0.02, -5.0, -6.0]])
    labels = torch.ones(2, 4, dtype=torch.long)
    out, _ = adjust_token_logps(lp, labels, torch.tensor([False, True]), upper_clip_percentile=0.5, min_clip_tokens=4)
    q = float(np.quantile([-0.1, -0.2, -0.3, -3.0], 0.5))  # -0.25
    assert out[0].tolist() == pytest.approx([q, q, -0.3, -3.0])
    assert torch.equal(out[1], lp[1])


def test_flags_apply_in_order_inversion_then_clamps():
    EOS = 2
    lp = torch.tensor([[-3.0, -4.0]])
    labels = torch.tensor([[1, EOS]])
    out, _ = adjust_token_logps(lp, labels, torch.tensor([True]), eos_id=EOS, min_log_prob=-2.3)
    assert out.tolist() == [[pytest.approx(-2.3), 4.0]]  # the inverted EOS (+4) is above the floor


def test_flags_change_the_loss_only_through_the_rejected_log_probs():
    g = torch.Generator().manual_seed(1)
    batch = _batch([[1, 2], [3, 4]], [[5, 6], [7]], [[8, 9, 10], [11, 12]])
    input_ids, labels = pair_sequences(batch)
    logits = torch.randn(*input_ids.shape, 13, generator=g) * 3
    plain_loss, plain = SMPO(margin_schedule=False)(Table(logits), batch)
    loss, m = SMPO(margin_schedule=False, min_log_prob=-1e-6)(Table(logits), batch)
    # every rejected token is clamped to ~0, so l(y_l) ~ 0 and only l(y_w) remains in the margin
    lp = torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    n = (labels != IGNORE).sum(-1)
    lw = ((lp * (labels != IGNORE))[:2].sum(-1) / n[:2]).float()
    assert m["rewards/rejected"].item() == pytest.approx(0.0, abs=1e-5)
    assert m["rewards/chosen"].item() == pytest.approx(1.2 * lw.mean().item(), rel=1e-5)
    assert m["rejected_sft_loss"].item() == pytest.approx(plain["rejected_sft_loss"].item())  # SFT: raw log-probs
    assert m["logps/rejected"].item() == pytest.approx(plain["logps/rejected"].item())
    po = (1.2 * (0.35 - lw.double())).clamp(min=0).square().mean()
    assert loss.item() == pytest.approx((po + 0.8 * plain["chosen_sft_loss"] + 0.2 * plain["rejected_sft_loss"]).item(),
                                        rel=1e-5)
    assert m["rejected_clipped_fraction"].item() == 1.0


def test_defaults_leave_log_probs_unchanged():
    lp = torch.randn(3, 5)
    out, _ = adjust_token_logps(lp, torch.ones(3, 5, dtype=torch.long), torch.tensor([False, True, True]))
    assert out is lp


def test_gradient_is_finite_and_reaches_both_completions():
    batch = _batch([[1, 2]], [[3, 4]], [[5]])
    input_ids, labels = pair_sequences(batch)
    model = Table(torch.randn(*input_ids.shape, 7, generator=torch.Generator().manual_seed(2)))
    loss, metrics = SMPO(max_steps=5, eos_invert_rejected=True, eos_id=5)(model, batch)
    loss.backward()
    grad = model.table.grad
    assert torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert all(not v.requires_grad for v in metrics.values())


# --- arguments and config ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"margin_schedule": True}, "max_steps=None"),
    ({"max_steps": 5, "eos_invert_rejected": True}, "eos_id=None"),
    ({"max_steps": 5, "lower_clip_percentile": 0.6}, "lower_clip_percentile=0.6"),
    ({"max_steps": 5, "upper_clip_percentile": 0.2}, "upper_clip_percentile=0.2"),
    ({"max_steps": 5, "min_log_prob": 0.0}, "min_log_prob=0.0"),
    ({"max_steps": 5, "loss_type": "smooth_double_bound"}, "loss_type='smooth_double_bound'"),
    ({"max_steps": 5, "chosen_sft_ratio": 1.5}, "chosen_sft_ratio=1.5"),
    ({"max_steps": 0}, "max_steps=0"),
])
def test_bad_arguments_name_the_key(kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(").replace(".", r"\.")):
        SMPO(**kwargs)


def test_batch_kind_is_a_plain_literal_read_by_ast():
    tree = ast.parse(Path(smpo_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SMPO")
    values = [s.value.value for s in cls.body if isinstance(s, ast.Assign)
              and [getattr(t, "id", None) for t in s.targets] == ["batch_kind"]]
    assert values == ["preference"]


def test_yaml_defaults_match_the_signature_and_the_spec():
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "objective" / "smpo.yaml")
    params = inspect.signature(SMPO).parameters
    assert node._target_ == "rizzrun.objectives.smpo.SMPO"
    assert set(node) - {"_target_"} == set(params)
    for name, p in params.items():
        if name != "max_steps":
            assert node[name] == p.default, name
    assert OmegaConf.to_container(node)["max_steps"] == "${trainer.max_steps}"
    spec = {"beta": 1.2, "target_margin": 0.35, "chosen_sft_ratio": 0.8, "loss_type": "smooth_lower_bound",
            "margin_schedule": True}
    assert {n: params[n].default for n in spec} == spec


def test_config_rules_report_dependent_keys_without_torch():
    import subprocess
    import sys

    code = ("import sys; from rizzrun.config import load, ConfigError\n"
            "try:\n    load(['objective=smpo', 'objective.max_steps=null', 'objective.eos_invert_rejected=true',"
            " 'objective.min_log_prob=0.5'])\n"
            "except ConfigError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert "objective.max_steps=null: margin_schedule=true needs the run's optimizer steps" in out
    assert "objective.eos_id=null: eos_invert_rejected=true needs the EOS token id" in out
    assert "objective.min_log_prob=0.5: out of range; allowed: min_log_prob < 0" in out
    assert out.strip().endswith("False")
