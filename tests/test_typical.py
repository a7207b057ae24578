"""Locally typical sampling (arXiv 2202.00666): `typical_filter` mask for mask against
`transformers`' `TypicalLogitsWarper` (decoders README, equivalence 1), the spec's hand-derived
cases, the warper order inside `generate`, and the sampling statistics of `Typical`."""

from __future__ import annotations

import math

import pytest
import torch

from rizzrun.decoders import Sample, Typical, typical_filter
from sampling_checks import chi2_pvalue, draw_counts


@pytest.fixture(scope="module")
def hf_lp():
    from transformers.generation import logits_process  # the `test` extra: installed, never skipped

    return logits_process


def _hf_mask(hf_lp, logits, mass, min_keep):
    warper = hf_lp.TypicalLogitsWarper(mass=mass, min_tokens_to_keep=min_keep)
    return warper(None, logits.clone()) > -math.inf


def _rows(kind: str, rows: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(rows, vocab, generator=g) * 3
    if kind == "peaked":  # one dominant token, a flat tail: the argmax-exclusion regime
        x = torch.randn(rows, vocab, generator=g) * 0.1
        x[:, 0] += 6
        return x
    if kind == "ties":  # few distinct values, so surprisal ties straddle the boundary
        return torch.randint(0, 4, (rows, vocab), generator=g).float()
    if kind == "prefiltered":  # -inf entries from an earlier top-k
        x = torch.randn(rows, vocab, generator=g) * 2
        k = max(1, vocab // 3)
        kth = x.topk(k, dim=-1).values[:, -1:]
        return x.masked_fill(x < kth, -math.inf)
    raise ValueError(kind)


CASES = [(kind, vocab) for kind in ("gauss", "peaked", "ties", "prefiltered") for vocab in (5, 50, 32000)]


@pytest.mark.parametrize("kind,vocab", CASES)
def test_masks_equal_transformers(hf_lp, kind, vocab):
    # 1,000+ rows in all: 12 cases x 6 masses x 3 min_tokens_to_keep x (16 or 4) rows.
    rows = 4 if vocab == 32000 else 16
    for mass in (0.01, 0.2, 0.5, 0.9, 0.95, 0.999):
        for min_keep in (1, 2, 5):
            logits = _rows(kind, rows, vocab, seed=hash((kind, vocab, mass, min_keep)) % 2**31)
            before = logits.clone()
            ours = typical_filter(logits, mass, min_tokens_to_keep=min_keep)
            assert torch.equal(logits, before), "typical_filter modified its input"
            theirs = _hf_mask(hf_lp, logits, mass, min_keep)
            assert torch.equal(ours > -math.inf, theirs), (kind, vocab, mass, min_keep)
            assert not torch.isnan(ours).any()
            kept = ours > -math.inf
            assert torch.equal(ours[kept], logits[kept]), "kept logits must be unchanged"


def test_kept_mass_reaches_tau_and_is_a_prefix_of_the_eps_order():
    logits = _rows("gauss", 200, 50, seed=1)
    for mass in (0.2, 0.5, 0.9):
        kept = typical_filter(logits, mass) > -math.inf
        p = logits.softmax(-1)
        assert bool(((p * kept).sum(-1) >= mass - 1e-6).all())
        logp = logits.log_softmax(-1)
        eps = (-logp + (p * logp).sum(-1, keepdim=True)).abs()
        # every kept token is at least as typical as every dropped one
        worst_kept = eps.masked_fill(~kept, -1).max(-1).values
        best_dropped = eps.masked_fill(kept, math.inf).min(-1).values
        assert bool((worst_kept <= best_dropped).all())


def test_uniform_rows_keep_everything():
    logits = torch.zeros(3, 17)
    assert bool((typical_filter(logits, 0.2) > -math.inf).all())


def test_argmax_exclusion_and_tie_rule_from_the_spec(hf_lp):
    # p = [0.4, 0.01 x 60]: H ~ 3.13, eps(argmax) ~ 2.21 > eps(small) ~ 1.48; tau = 0.15 drops the
    # argmax, and since the 60 small tokens tie in eps, all 60 are kept (mass 0.6), not 15.
    p = torch.tensor([0.4] + [0.01] * 60)
    logits = p.log()[None]
    h = float(-(p * p.log()).sum())
    assert h == pytest.approx(3.13, abs=0.01)
    kept = typical_filter(logits, 0.15)[0] > -math.inf
    assert not bool(kept[0]), "the argmax is far less typical than the tail: dropped by design"
    assert int(kept.sum()) == 60
    assert torch.equal(kept, _hf_mask(hf_lp, logits, 0.15, 1)[0])


def test_single_survivor_row():
    # Everything but one token filtered before: H = 0, eps = 0 for the survivor, which stays.
    logits = torch.full((1, 9), -math.inf)
    logits[0, 4] = 1.3
    out = typical_filter(logits, 0.5)
    assert (out[0] > -math.inf).nonzero().flatten().tolist() == [4]
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("mass", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_mass(mass):
    with pytest.raises(ValueError, match="typical_p"):
        typical_filter(torch.zeros(1, 4), mass)
    with pytest.raises(ValueError, match="typical_p"):
        Typical(typical_p=mass)


def test_off_at_one_and_default_of_the_option():
    logits = _rows("gauss", 4, 20, seed=2)
    assert torch.equal(typical_filter(logits, 1.0), logits)
    assert Typical().typical_p == 0.9 and Sample().typical_p == 1.0


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=10, top_p=0.9, typical_p=0.8),
    dict(temperature=1.6, top_k=0, top_p=1.0, typical_p=0.3),
    dict(temperature=1.0, top_k=4, top_p=0.95, typical_p=0.95),
])
def test_warpers_in_generate_order_match_transformers(hf_lp, settings):
    # generate(do_sample=True) builds: temperature -> top-k -> top-p -> typical.
    s, logits = settings, _rows("gauss", 32, 50, seed=5)
    chain = []
    if s["temperature"] != 1.0:
        chain.append(hf_lp.TemperatureLogitsWarper(s["temperature"]))
    if s["top_k"]:
        chain.append(hf_lp.TopKLogitsWarper(s["top_k"]))
    if s["top_p"] < 1.0:
        chain.append(hf_lp.TopPLogitsWarper(s["top_p"]))
    chain.append(hf_lp.TypicalLogitsWarper(s["typical_p"]))
    expected = hf_lp.LogitsProcessorList(chain)(None, logits.clone())
    assert torch.equal(Typical(**s).warp(logits), expected)


@pytest.mark.parametrize("mass", [0.3, 0.9])
def test_sampling_frequencies_chi_squared(mass):
    logits = _rows("gauss", 1, 40, seed=11)
    dec = Typical(typical_p=mass, seed=0)
    counts = draw_counts(dec.choose, logits, 100_000)
    probs = typical_filter(logits, mass).softmax(-1)[0]
    assert chi2_pvalue(counts, probs) > 1e-3
    # and the check has power: the unfiltered distribution is rejected
    assert chi2_pvalue(counts, logits.softmax(-1)[0]) < 1e-6


def test_typical_generate_reproducible_with_seed():
    from rizzrun.models.llama import Llama

    torch.manual_seed(0)
    model = Llama(40, d_model=32, n_layer=1, n_head=2, n_kv_head=1, d_ff=64, max_seq_len=32).eval()
    prompt = torch.randint(0, 40, (2, 3))
    a = Typical(max_new_tokens=10, typical_p=0.5, seed=4).generate(model, prompt)
    b = Typical(max_new_tokens=10, typical_p=0.5, seed=4).generate(model, prompt)
    assert torch.equal(a, b) and a.shape == (2, 13)
