"""Generation equal to `transformers.generate` on a tiny random Llama (no network).

A random `transformers.LlamaForCausalLM` is copied into rizzrun's `Llama`; greedy continuations
must equal `generate(do_sample=False, ...)` token for token (batch 1 and a left-padded batch,
repetition penalty, min_new_tokens, EOS that fires, padding of finished rows). For sampling the
random streams differ, so the fully processed logits of every step are compared with the scores
`generate(do_sample=True, output_scores=True)` hands its sampler, while our decoder is made to
follow the tokens `transformers` drew.
"""

from __future__ import annotations

import pytest
import torch

from transformers.generation import logits_process as hf_lp

from rizzrun.decoders import (  # noqa: E402
    Greedy,
    Sample,
    apply_repetition_penalty,
    decode_loop,
    left_pad,
    min_new_tokens_filter,
)
from llama_twins import hf_and_rizzrun_llamas

pytestmark = pytest.mark.usefixtures("one_thread")

V, MAX_LEN, N = 61, 64, 24


@pytest.fixture(scope="module")
def models():
    return hf_and_rizzrun_llamas(V, MAX_LEN)


def _prompts(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


BATCHES = {"batch1": [6], "padded": [7, 3, 5, 1]}


def _inputs(kind, pad=0):
    ids, mask = left_pad(_prompts(BATCHES[kind]), pad)
    return ids, mask


_HF_RUNS: dict = {}  # several tests share the same reference runs


def hf_greedy(hf, ids, mask, n=N, **kw):
    key = (ids.numpy().tobytes(), ids.shape, mask.numpy().tobytes(), n, repr(sorted(kw.items())))
    if key not in _HF_RUNS:
        with torch.no_grad():
            _HF_RUNS[key] = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, **kw)
    return _HF_RUNS[key].clone()


def _new(out, ids):
    return out[:, ids.shape[1]:]


# ---------------------------------------------------------------- the raw model first


def test_model_logits_match_hf_on_padded_batch(models):
    # Left-padded rows: HF numbers positions from the first real token, rizzrun from the left
    # edge; RoPE depends only on differences, so the logits of real tokens agree.
    hf, ours = models
    ids, mask = _inputs("padded")
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask).logits
        mine = ours(ids, key_padding_mask=mask.bool())
    real = mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], atol=1e-4, rtol=0)
    assert theirs.std() > 1.0  # logits well spread: the greedy parity below is meaningful


# ---------------------------------------------------------------- greedy, token for token


@pytest.mark.parametrize("penalty", [1.0, 1.3, 0.7])
@pytest.mark.parametrize("kind", ["batch1", "padded"])
def test_greedy_matches_hf(models, kind, penalty):
    hf, ours = models
    ids, mask = _inputs(kind)
    expected = hf_greedy(hf, ids, mask, repetition_penalty=penalty)
    got = Greedy(max_new_tokens=N, repetition_penalty=penalty).generate(ours, ids, attention_mask=mask)
    assert torch.equal(got, expected)
    assert len(set(_new(got, ids).flatten().tolist())) > 8, "degenerate continuation: tests nothing"
    # a list of unequal prompts, padded by generate itself, is the same call
    assert torch.equal(Greedy(max_new_tokens=N, repetition_penalty=penalty).generate(ours, _prompts(BATCHES[kind])),
                       expected)


def test_penalty_of_padding_would_be_visible(models):
    # The padding id is the token the padded rows would generate first. Were the padding counted
    # by the penalty (transformers' processor without prompt_ignore_length), the output would
    # change: so test_greedy_matches_hf can tell the two conventions apart.
    hf, ours = models
    ids, mask = _inputs("padded")
    first = hf_greedy(hf, ids, mask, n=1)[:, -1]
    ids = torch.where(mask.bool(), ids, first[:, None])
    expected = hf_greedy(hf, ids, mask, repetition_penalty=1.3)
    counting_pads = hf_greedy(hf, ids, mask, logits_processor=hf_lp.LogitsProcessorList(
        [hf_lp.RepetitionPenaltyLogitsProcessor(1.3)]))
    assert not torch.equal(counting_pads, expected)
    got = Greedy(max_new_tokens=N, repetition_penalty=1.3).generate(ours, ids, attention_mask=mask)
    assert torch.equal(got, expected)


def _eos_from_unconstrained_run(hf, ids, mask, steps, **kw):
    """For each (row, step): the token greedy emits there, so that EOS fires by that step."""
    free = _new(hf_greedy(hf, ids, mask, **kw), ids)
    return [int(free[row, step]) for row, step in steps]


@pytest.mark.parametrize("pad_token_id,penalty", [(None, 1.0), (None, 1.3), (60, 1.3)])
@pytest.mark.parametrize("kind,which", [("batch1", "row0"), ("padded", "some"), ("padded", "all")])
def test_greedy_eos_and_finished_rows_match_hf(models, kind, which, pad_token_id, penalty):
    hf, ours = models
    ids, mask = _inputs(kind)
    steps = {"row0": [(0, 5)], "some": [(1, 4)], "all": [(0, 3), (1, 5), (2, 2), (3, 6)]}[which]
    eos = _eos_from_unconstrained_run(hf, ids, mask, steps, repetition_penalty=penalty)
    if pad_token_id in eos:
        pytest.skip("the chosen EOS is the pad id")
    expected = hf_greedy(hf, ids, mask, eos_token_id=eos, pad_token_id=pad_token_id, repetition_penalty=penalty)
    dec = Greedy(max_new_tokens=N, repetition_penalty=penalty)
    got = dec.generate(ours, ids, eos_token_id=eos, attention_mask=mask, pad_token_id=pad_token_id)
    assert torch.equal(got, expected)

    # The cases test what they claim: EOS fired, finished rows were padded, "all" stopped early.
    new = _new(expected, ids)
    pad = eos[0] if pad_token_id is None else pad_token_id
    fired = [next((j for j, t in enumerate(row) if t in eos), None) for row in new.tolist()]
    assert fired[steps[0][0]] is not None and fired[steps[0][0]] <= steps[0][1]
    all_fired = all(f is not None for f in fired)
    assert new.shape[1] == (max(fired) + 1 if all_fired else N)
    assert all_fired == (which != "some")  # "some": finished rows wait for the others
    if kind == "padded":
        assert any(f is not None and f + 1 < new.shape[1] for f in fired), "no finished row to pad"
    for row, f in zip(new.tolist(), fired):
        if f is not None:
            assert row[f + 1:] == [pad] * (len(row) - f - 1)
    # and the same through a list of prompts padded with that pad id
    if kind == "padded":
        listed = dec.generate(ours, _prompts(BATCHES[kind]), eos_token_id=eos, pad_token_id=pad_token_id)
        assert torch.equal(_new(listed, ids), new)
        padding = listed[:, : ids.shape[1]][~mask.bool()]
        assert torch.equal(padding, torch.full_like(padding, pad))


@pytest.mark.parametrize("penalty", [1.0, 1.3])
@pytest.mark.parametrize("kind", ["batch1", "padded"])
def test_min_new_tokens_matches_hf(models, kind, penalty):
    hf, ours = models
    ids, mask = _inputs(kind)
    # EOS ids that fire at step 1 (and 2), well before min_new_tokens = 6
    eos = _eos_from_unconstrained_run(hf, ids, mask, [(0, 1), (ids.shape[0] - 1, 2)], repetition_penalty=penalty)
    without = hf_greedy(hf, ids, mask, eos_token_id=eos, repetition_penalty=penalty)
    expected = hf_greedy(hf, ids, mask, eos_token_id=eos, repetition_penalty=penalty, min_new_tokens=6)
    assert not torch.equal(expected, without), "min_new_tokens had nothing to hold back"
    assert not any(t in eos for t in _new(expected, ids)[:, :6].flatten().tolist())
    got = Greedy(max_new_tokens=N, repetition_penalty=penalty, min_new_tokens=6).generate(
        ours, ids, eos_token_id=eos, attention_mask=mask)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("check_every", [2, 5, 8])
def test_check_every_matches_hf(models, check_every):
    # The accelerator setting (all-finished read every few steps), run here on the CPU.
    hf, ours = models
    ids, mask = _inputs("padded")
    eos = _eos_from_unconstrained_run(hf, ids, mask, [(0, 3), (1, 5), (2, 2), (3, 6)])
    expected = hf_greedy(hf, ids, mask, eos_token_id=eos)
    got = decode_loop(ours, ids, lambda s: s.argmax(-1), N, eos, attention_mask=mask, check_every=check_every)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------- sampling: the processed logits


class ReplaySample(Sample):
    """Sample whose draws are replaced by given tokens; records the logits it would sample from."""

    def __init__(self, tokens, **kwargs):
        super().__init__(**kwargs)
        self.tokens, self.seen = tokens, []

    def _pick(self, scores, generator):
        self.seen.append(scores.clone())
        return self.tokens[:, len(self.seen) - 1]


SAMPLING = [
    dict(temperature=0.7, top_k=12, top_p=0.9, repetition_penalty=1.3, min_new_tokens=4),
    dict(temperature=1.5, top_k=0, top_p=0.6, repetition_penalty=1.0, min_new_tokens=0),
    dict(temperature=1.0, top_k=5, top_p=1.0, repetition_penalty=0.8, min_new_tokens=9),
    dict(temperature=0.9, top_k=0, top_p=0.95, typical_p=0.7, repetition_penalty=1.1, min_new_tokens=2),
]


@pytest.mark.parametrize("settings", SAMPLING, ids=["all", "temp-top_p", "top_k-penalty<1", "typical"])
@pytest.mark.parametrize("kind", ["batch1", "padded"])
def test_sampling_processed_logits_match_hf(models, kind, settings):
    hf, ours = models
    ids, mask = _inputs(kind)

    def hf_sample(**kw):
        torch.manual_seed(3)
        with torch.no_grad():
            return hf.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=N, output_scores=True,
                               output_logits=True, return_dict_in_generate=True, **settings, **kw)

    # EOS ids that fire, but not before min_new_tokens + 4 steps: tokens a run without EOS (same
    # seed) draws only later. Holding EOS back can change earlier draws, so try a few.
    free = _new(hf_sample(eos_token_id=None).sequences, ids)
    late = settings["min_new_tokens"] + 4
    early = set(free[:, :late].flatten().tolist())
    candidates = [[t for t in dict.fromkeys(free[row, late:].tolist()) if t not in early] for row in (0, -1)]
    for first, last in zip(candidates[0][:5], candidates[1][::-1]):
        eos = [first, last]
        res = hf_sample(eos_token_id=eos)
        new = _new(res.sequences, ids)
        steps = new.shape[1]
        if steps > late and any(t in eos for t in new.flatten().tolist()):
            break
    else:
        pytest.fail("found no EOS id that fires after min_new_tokens")

    # 1. Our processors on transformers' raw logits and token history: bit-identical scores.
    hist_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
    warp = Sample(temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
                  typical_p=settings.get("typical_p", 1.0)).warp
    for i in range(steps):
        history = res.sequences[:, : ids.shape[1] + i]
        scores = res.logits[i]
        if settings["repetition_penalty"] != 1.0:
            scores = apply_repetition_penalty(scores, history, settings["repetition_penalty"],
                                              mask=hist_mask[:, : history.shape[1]])
        scores = warp(min_new_tokens_filter(scores, i, settings["min_new_tokens"], eos))
        assert torch.equal(scores, res.scores[i]), f"step {i}"

    # 2. Our decoder, following the tokens transformers drew, feeds its sampler the same scores.
    dec = ReplaySample(new, max_new_tokens=N, **settings)
    out = dec.generate(ours, ids, eos_token_id=eos, attention_mask=mask)
    assert torch.equal(out, res.sequences)
    assert len(dec.seen) == steps
    for i, (mine, theirs) in enumerate(zip(dec.seen, res.scores)):
        filtered = theirs == -torch.inf
        assert torch.equal(mine == -torch.inf, filtered), f"step {i}: different tokens filtered"
        torch.testing.assert_close(mine[~filtered], theirs[~filtered], atol=1e-4, rtol=0, msg=f"step {i}")
    if settings["min_new_tokens"]:
        assert all(bool((dec.seen[i][:, eos] == -torch.inf).all()) for i in range(settings["min_new_tokens"]))
    if settings["top_k"] or settings["top_p"] < 1 or settings.get("typical_p", 1.0) < 1:
        assert any(bool((s == -torch.inf).any()) for s in dec.seen)
