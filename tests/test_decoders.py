"""Decoders: processors against `transformers`' processors and warpers, the decode loop against
from-scratch recomputation and hand-written scripts, and sampling against hand-derived
distributions. Token-for-token parity with `transformers.generate` is in
test_generation_parity.py."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rizzrun.decoders import (
    Greedy,
    Sample,
    apply_repetition_penalty,
    apply_temperature,
    decode_loop,
    left_pad,
    min_new_tokens_filter,
    top_k_filter,
    top_p_filter,
)


@pytest.fixture(scope="module")
def hf_lp():
    from transformers.generation import logits_process  # the `test` extra: installed, never skipped

    return logits_process


def _random_logits(rows=16, vocab=50, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


def _tied_logits(rows=16, vocab=12, seed=1):
    # Few distinct integer values, so most rows have ties at any k / p boundary. vocab <= 16
    # keeps HF's unstable sort stable in practice (see top_p_filter's docstring).
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (rows, vocab), generator=g).float()


# ---------------------------------------------------------------- processors vs transformers


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0, 1.5, 4.0, 100.0])
def test_temperature_matches_hf(t, hf_lp):
    logits = _random_logits()
    expected = hf_lp.TemperatureLogitsWarper(t)(None, logits.clone())
    assert torch.equal(apply_temperature(logits, t), expected)


@pytest.mark.parametrize("make_logits", [_random_logits, _tied_logits])
@pytest.mark.parametrize("k", [1, 2, 5, 11, 12, 49, 50, 51, 1000])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_k_matches_hf(make_logits, k, min_keep, hf_lp):
    logits = make_logits()
    before = logits.clone()
    expected = hf_lp.TopKLogitsWarper(k, min_tokens_to_keep=min_keep)(None, logits.clone())
    assert torch.equal(top_k_filter(logits, k, min_tokens_to_keep=min_keep), expected)
    assert torch.equal(logits, before), "top_k_filter modified its input"


def test_top_k_ties_and_off():
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0]])
    # the 2nd largest is 3.0 (tied with the 1st), so k=2 keeps exactly the two 3.0s; k=3 keeps
    # every entry >= 2.0, which is four entries because of the tie.
    inf = -math.inf
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([[3.0, inf, 3.0, inf, inf]]))
    assert torch.equal(top_k_filter(logits, 3), torch.tensor([[3.0, inf, 3.0, 2.0, 2.0]]))
    assert torch.equal(top_k_filter(logits, 0), logits)  # 0 = off
    assert torch.equal(top_k_filter(logits, 1, min_tokens_to_keep=4), top_k_filter(logits, 4))


@pytest.mark.parametrize("make_logits", [_random_logits, _tied_logits])
@pytest.mark.parametrize("p", [0.01, 0.1, 0.3, 0.5, 0.75, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("min_keep", [1, 2])
def test_top_p_matches_hf(make_logits, p, min_keep, hf_lp):
    logits = make_logits()
    before = logits.clone()
    expected = hf_lp.TopPLogitsWarper(p, min_tokens_to_keep=min_keep)(None, logits.clone())
    assert torch.equal(top_p_filter(logits, p, min_tokens_to_keep=min_keep), expected)
    assert torch.equal(logits, before), "top_p_filter modified its input"


@pytest.mark.parametrize("k,p", [(3, 0.5), (10, 0.9), (40, 0.2)])
def test_chain_with_prefiltered_inf_matches_hf(k, p, hf_lp):
    # top-p after top-k sees -inf entries; the whole chain is what generate(do_sample=True) runs.
    logits = _random_logits(seed=3)
    hf = hf_lp.LogitsProcessorList(
        [hf_lp.TemperatureLogitsWarper(0.8), hf_lp.TopKLogitsWarper(k), hf_lp.TopPLogitsWarper(p)]
    )
    ours = top_p_filter(top_k_filter(apply_temperature(logits, 0.8), k), p)
    assert torch.equal(ours, hf(None, logits.clone()))


def test_top_p_boundary_on_uniform_rows():
    # Uniform over 8 tokens: every probability is exactly 1/8, so the boundary is exact.
    # Smallest set reaching p: p = 0.25 -> 2 tokens; p = 0.26 -> 3; p = 0.125 -> 1.
    # Ties are broken towards the highest vocabulary index (stable ascending order, as HF).
    logits = torch.zeros(2, 8)
    kept = lambda p: (top_p_filter(logits, p) > -math.inf)[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.25) == [6, 7]
    assert kept(0.26) == [5, 6, 7]
    assert kept(0.125) == [7]
    assert kept(0.01) == [7]
    assert kept(1.0) == list(range(8))


def test_top_p_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (hand-derived sets below, away from float boundaries)
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: (top_p_filter(logits, p) > -math.inf)[0].tolist()  # noqa: E731
    assert kept(0.4) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.9) == [True, True, True, False]
    assert kept(0.97) == [True, True, True, True]
    assert (top_p_filter(logits, 0.4, min_tokens_to_keep=3) > -math.inf)[0].tolist() == [True, True, True, False]


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x: apply_temperature(x, 0.0), "temperature=0.0"),
        (lambda x: apply_temperature(x, -1.0), "temperature=-1.0"),
        (lambda x: apply_temperature(x, float("nan")), "temperature=nan"),
        (lambda x: apply_temperature(x, float("inf")), "temperature=inf"),
        (lambda x: top_k_filter(x, -1), "top_k=-1"),
        (lambda x: top_k_filter(x, 2.5), "top_k=2.5"),
        (lambda x: top_k_filter(x, 2, min_tokens_to_keep=0), "min_tokens_to_keep=0"),
        (lambda x: top_p_filter(x, 0.0), "top_p=0.0"),
        (lambda x: top_p_filter(x, 1.5), "top_p=1.5"),
        (lambda x: top_p_filter(x, -0.1), "top_p=-0.1"),
        (lambda x: top_p_filter(x, 0.5, min_tokens_to_keep=0), "min_tokens_to_keep=0"),
    ],
)
def test_processor_argument_errors(call, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        call(torch.zeros(2, 5))

def _ids_with_repeats(rows=16, length=30, high=55, seed=4):
    # high > vocab (50): ids the output layer cannot produce occur too; HF ignores them.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (rows, length), generator=g)


@pytest.mark.parametrize("penalty", [0.5, 0.9, 1.0, 1.2, 3.0])
@pytest.mark.parametrize("ignore", ["none", "int", "per-row"])
def test_repetition_penalty_matches_hf(penalty, ignore, hf_lp):
    logits, ids = _random_logits(), _ids_with_repeats()
    assert all(len(set(r)) < len(r) for r in ids.tolist()) and bool((ids >= 50).any())
    assert bool((logits < 0).any()) and bool((logits > 0).any())
    positions = torch.arange(ids.shape[1])
    if ignore == "none":
        ignore_length, mask = None, None
    elif ignore == "int":
        ignore_length, mask = 7, (positions >= 7).expand_as(ids)
    else:  # what generate passes for left padding: one count per row (0 .. all positions)
        ignore_length = torch.randint(0, ids.shape[1] + 1, (ids.shape[0],), generator=torch.Generator().manual_seed(5))
        ignore_length[:2] = torch.tensor([0, ids.shape[1]])
        mask = positions[None, :] >= ignore_length[:, None]
    before = logits.clone()
    expected = hf_lp.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=ignore_length)(ids, logits.clone())
    got = apply_repetition_penalty(logits, ids, penalty, mask=mask)
    assert torch.equal(got, expected)
    assert torch.equal(logits, before), "apply_repetition_penalty modified its input"
    assert torch.equal(got, logits) == (penalty == 1.0)
    if mask is not None:  # an integer 0/1 mask means the same as a bool one
        assert torch.equal(apply_repetition_penalty(logits, ids, penalty, mask=mask.long()), expected)


def test_repetition_penalty_once_per_token_and_sign_rule():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    ids = torch.tensor([[0, 1, 1, 0, 0], [3, 3, 2, 2, 2]])
    got = apply_repetition_penalty(logits, ids, 2.0)
    # positive logits are divided, negative ones multiplied, however often the id occurs
    assert got.tolist() == [[1.0, -2.0, 0.5, 3.0], [2.0, -1.0, 0.25, 1.5]]
    masked = apply_repetition_penalty(logits, ids, 2.0, mask=torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]))
    assert masked.tolist() == [[1.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]]


@pytest.mark.parametrize("eos", [3, [3, 17, 49], [60, 5]])  # 60 >= vocab: ignored, as in HF
@pytest.mark.parametrize("num_new,min_new", [(0, 0), (0, 4), (3, 4), (4, 4), (9, 4)])
def test_min_new_tokens_matches_hf(eos, num_new, min_new, hf_lp):
    logits, prompt_len = _random_logits(), 6
    ids = torch.zeros(logits.shape[0], prompt_len + num_new, dtype=torch.long)
    before = logits.clone()
    expected = hf_lp.MinNewTokensLengthLogitsProcessor(prompt_len, min_new, eos)(ids, logits.clone())
    got = min_new_tokens_filter(logits, num_new, min_new, eos)
    assert torch.equal(got, expected)
    assert torch.equal(logits, before), "min_new_tokens_filter modified its input"
    in_vocab = [i for i in ([eos] if isinstance(eos, int) else eos) if i < logits.shape[1]]
    suppressed = (got == -math.inf).nonzero()[:, 1].unique().tolist()
    assert suppressed == (sorted(in_vocab) if num_new < min_new else [])


@pytest.mark.parametrize(
    "settings",
    [
        dict(repetition_penalty=1.3, min_new_tokens=3, temperature=0.7, top_k=10, top_p=0.8),
        dict(repetition_penalty=0.8, min_new_tokens=0, temperature=1.6, top_k=0, top_p=0.5),
        dict(repetition_penalty=2.0, min_new_tokens=9, temperature=1.0, top_k=4, top_p=1.0),
    ],
)
def test_full_chain_in_generate_order_matches_hf(settings, hf_lp):
    # The list _get_logits_processor builds for generate(do_sample=True): processors, then warpers.
    logits, ids, eos, prompt_len = _random_logits(seed=6), _ids_with_repeats(high=50, seed=7), [3, 17], 24
    s = settings
    hf = [hf_lp.RepetitionPenaltyLogitsProcessor(s["repetition_penalty"])]
    if s["min_new_tokens"]:
        hf.append(hf_lp.MinNewTokensLengthLogitsProcessor(prompt_len, s["min_new_tokens"], eos))
    if s["temperature"] != 1.0:
        hf.append(hf_lp.TemperatureLogitsWarper(s["temperature"]))
    if s["top_k"]:
        hf.append(hf_lp.TopKLogitsWarper(s["top_k"]))
    if s["top_p"] < 1.0:
        hf.append(hf_lp.TopPLogitsWarper(s["top_p"]))
    expected = hf_lp.LogitsProcessorList(hf)(ids, logits.clone())
    processed = min_new_tokens_filter(
        apply_repetition_penalty(logits, ids, s["repetition_penalty"]),
        ids.shape[1] - prompt_len,
        s["min_new_tokens"],
        eos,
    )
    sample = Sample(temperature=s["temperature"], top_k=s["top_k"], top_p=s["top_p"])
    assert torch.equal(sample.warp(processed), expected)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x, i: apply_repetition_penalty(x, i, 0.0), "repetition_penalty=0.0"),
        (lambda x, i: apply_repetition_penalty(x, i, -1.2), "repetition_penalty=-1.2"),
        (lambda x, i: apply_repetition_penalty(x, i, float("nan")), "repetition_penalty=nan"),
        (lambda x, i: apply_repetition_penalty(x, i, float("inf")), "repetition_penalty=inf"),
        (lambda x, i: apply_repetition_penalty(x, i, True), "repetition_penalty=True"),
        (lambda x, i: apply_repetition_penalty(x, i.float(), 1.2), "input_ids must be an integer tensor"),
        (lambda x, i: apply_repetition_penalty(x, i[:1], 1.2), "of shape (B, L) with B = 2"),
        (lambda x, i: apply_repetition_penalty(x, i - 5, 1.2), "negative ids"),
        (lambda x, i: apply_repetition_penalty(x, i, 1.2, mask=i[:, :2]), "the shape of input_ids (2, 3)"),
        (lambda x, i: apply_repetition_penalty(x[0], i, 1.2), "logits must be a floating-point tensor of shape (B, V)"),
        (lambda x, i: min_new_tokens_filter(x, 0, -1, 2), "min_new_tokens=-1"),
        (lambda x, i: min_new_tokens_filter(x, 0, 2.5, 2), "min_new_tokens=2.5"),
        (lambda x, i: min_new_tokens_filter(x, -1, 2, 2), "num_new_tokens=-1"),
        (lambda x, i: min_new_tokens_filter(x, 0, 2, [-2]), "eos_token_id=[-2]"),
        (lambda x, i: min_new_tokens_filter(x, 0, 2, []), "eos_token_id=[]"),
    ],
)
def test_new_processor_argument_errors(call, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        call(torch.zeros(2, 5), torch.tensor([[1, 2, 2], [0, 4, 4]]))



# ---------------------------------------------------------------- toy causal LMs


class CausalMeanLM(nn.Module):
    """logits_t = tanh(mean(E[x_0..x_t]) + P[t]) @ H.

    forward is the parallel form (cumsum / positions); step keeps the running sum and length
    in the cache, the incremental form of the same computation. float64, so the two forms
    agree far below any argmax margin.
    """

    def __init__(self, vocab=11, dim=16, max_seq_len=40, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.pos = nn.Parameter(torch.randn(max_seq_len, dim, generator=g, dtype=torch.float64))
        self.head = nn.Parameter(torch.randn(dim, vocab, generator=g, dtype=torch.float64) * 2)
        self.config = SimpleNamespace(max_seq_len=max_seq_len, vocab_size=vocab)
        self.calls = []

    def _readout(self, mean, positions):
        return torch.tanh(mean + self.pos[positions]) @ self.head

    def forward(self, input_ids):
        t = input_ids.shape[1]
        mean = self.emb[input_ids].cumsum(1) / torch.arange(1, t + 1, dtype=torch.float64)[:, None]
        return self._readout(mean, torch.arange(t))

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        max_len = self.config.max_seq_len if max_len is None else max_len
        running_sum = torch.zeros(batch_size, self.emb.shape[1], dtype=torch.float64)
        return {"sum": running_sum, "len": 0, "max_len": max_len}

    def step(self, input_ids, cache):
        self.calls.append((tuple(input_ids.shape), self.training, torch.is_inference_mode_enabled()))
        start, t = cache["len"], input_ids.shape[1]
        if start + t > cache["max_len"]:
            raise RuntimeError(f"cache overflow: {start} + {t} > {cache['max_len']}")
        running = cache["sum"][:, None] + self.emb[input_ids].cumsum(1)
        positions = torch.arange(start, start + t)
        cache["sum"], cache["len"] = running[:, -1], start + t
        return self._readout(running / (positions + 1).to(torch.float64)[:, None], positions)


class ScriptedLM(nn.Module):
    """Predicts script[b, j] as the j-th generated token of row b, whatever the input."""

    def __init__(self, script, prompt_len, vocab=12, max_seq_len=64):
        super().__init__()
        self.script, self.prompt_len, self.vocab = torch.as_tensor(script), prompt_len, vocab
        self.config = SimpleNamespace(max_seq_len=max_seq_len)
        self.calls = []
        self.inputs = []  # (input_ids, key_padding_mask) of every step

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return {"len": 0}

    def step(self, input_ids, cache, key_padding_mask=None):
        self.calls.append((tuple(input_ids.shape), self.training, torch.is_inference_mode_enabled()))
        self.inputs.append((input_ids.clone(), None if key_padding_mask is None else key_padding_mask.clone()))
        b, t = input_ids.shape
        # -inf elsewhere makes the scripted token certain for Sample too
        logits = torch.zeros(b, t, self.vocab)
        for i in range(t):
            j = cache["len"] + i + 1 - self.prompt_len  # index of the token these logits predict
            if 0 <= j < self.script.shape[1]:
                logits[:, i] = -math.inf
                logits[torch.arange(b), i, self.script[:, j]] = 0.0
        cache["len"] += t
        return logits


class ConstantLM(nn.Module):
    """The same next-token logits at every position of every row."""

    def __init__(self, logits, max_seq_len=64):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.config = SimpleNamespace(max_seq_len=max_seq_len)

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return None

    def step(self, input_ids, cache, key_padding_mask=None):
        return self.logits.expand(*input_ids.shape, -1)


def greedy_reference(model, prompt, n):
    """Recompute the full forward from scratch at every step and take the argmax."""
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(n):
            nxt = model(seq)[:, -1].float().argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], 1)
    return seq


def _prompt(batch=4, length=5, vocab=11, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- decode loop


def test_toy_step_mode_matches_parallel_mode():
    # The reference below is only meaningful if the toy's cache path is its parallel path.
    model, ids = CausalMeanLM(), _prompt(length=9)
    cache = model.init_cache(4)
    pieces = [model.step(ids[:, :4], cache)] + [model.step(ids[:, i : i + 1], cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(pieces, 1), model(ids), rtol=0, atol=1e-12)


@pytest.mark.parametrize("length,n", [(1, 20), (5, 12), (7, 33)])
def test_greedy_matches_recompute_reference(length, n):
    model, prompt = CausalMeanLM(), _prompt(batch=6, length=length)
    out = Greedy(max_new_tokens=n).generate(model, prompt)
    assert out.shape == (6, length + n) and out.dtype == prompt.dtype
    assert torch.equal(out, greedy_reference(model, prompt, n))
    assert len(set(out[:, length:].flatten().tolist())) > 2, "toy too degenerate to test anything"
    # prefill once with the whole prompt, then one token per step, none after the last token
    assert [c[0] for c in model.calls] == [(6, length)] + [(6, 1)] * (n - 1)


SCRIPT = [[4, 2, 5, 6, 7], [3, 3, 3, 3, 3], [1, 9, 2, 8, 8]]


@pytest.mark.parametrize(
    "eos,expected",
    [
        (None, SCRIPT),
        (2, [[4, 2, 2, 2, 2], [3, 3, 3, 3, 3], [1, 9, 2, 2, 2]]),
        # a list: any id stops the row; padding uses the first id
        ([9, 2], [[4, 2, 9, 9, 9], [3, 3, 3, 3, 3], [1, 9, 9, 9, 9]]),
        # every row stops by step 3, so generation ends there
        ([2, 3], [[4, 2, 2], [3, 2, 2], [1, 9, 2]]),
        (3, [[4, 2, 5, 6, 7], [3, 3, 3, 3, 3], [1, 9, 2, 8, 8]]),
    ],
)
@pytest.mark.parametrize("decoder", [Greedy(max_new_tokens=5), Sample(max_new_tokens=5, seed=0)])
def test_eos_stops_and_pads_rows(decoder, eos, expected):
    prompt = torch.tensor([[0, 1], [1, 0], [0, 0]])
    model = ScriptedLM(SCRIPT, prompt_len=2)
    out = decoder.generate(model, prompt, eos_token_id=eos)
    assert out.tolist() == [p + e for p, e in zip(prompt.tolist(), expected)]
    assert len(model.calls) == len(expected[0])  # 1 prefill + (n - 1) single-token steps


def test_eos_matches_reference_on_causal_lm():
    # Second formulation: decode without EOS, then cut each row at its first EOS in Python.
    model, prompt = CausalMeanLM(seed=2), _prompt(batch=8, length=3, seed=2)
    full = Greedy(max_new_tokens=15).generate(model, prompt)
    eos_ids = [full[0, 5].item(), full[3, 9].item()]
    rows, stops = [], []
    for row in full.tolist():
        new = row[3:]
        stop = next((i for i, tok in enumerate(new) if tok in eos_ids), None)
        stops.append(15 if stop is None else stop + 1)
        rows.append(row[:3] + (new if stop is None else new[: stop + 1] + [eos_ids[0]] * (14 - stop)))
    expected = torch.tensor(rows)[:, : 3 + max(stops)]
    assert torch.equal(Greedy(max_new_tokens=15).generate(model, prompt, eos_token_id=eos_ids), expected)


def test_max_new_tokens_override_default_and_zero():
    prompt = torch.tensor([[0, 1], [1, 0], [0, 0]])
    model = ScriptedLM(SCRIPT, prompt_len=2)
    two = Greedy(max_new_tokens=5).generate(model, prompt, max_new_tokens=2)
    assert two[:, 2:].tolist() == [[4, 2], [3, 3], [1, 9]]
    assert Greedy(max_new_tokens=3).generate(model, prompt)[:, 2:].tolist() == [[4, 2, 5], [3, 3, 3], [1, 9, 2]]
    assert torch.equal(Greedy().generate(model, prompt, max_new_tokens=0), prompt)


def test_length_limit_names_both_numbers():
    model = CausalMeanLM(max_seq_len=10)
    Greedy(max_new_tokens=6).generate(model, _prompt(length=4))  # exactly at the limit: fine
    with pytest.raises(ValueError, match=r"4.*max_new_tokens 7.*max_seq_len=10"):
        Greedy(max_new_tokens=7).generate(model, _prompt(length=4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eos_token_id=-1), "eos_token_id=-1"),
        (dict(eos_token_id=[]), r"eos_token_id=\[\]"),
        (dict(eos_token_id="2"), "eos_token_id='2'"),
        (dict(max_new_tokens=-1), "max_new_tokens=-1"),
    ],
)
def test_generate_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Greedy().generate(CausalMeanLM(), _prompt(), **kwargs)


def test_prompt_errors():
    with pytest.raises(ValueError, match="prompt_ids"):
        Greedy().generate(CausalMeanLM(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="prompt_ids"):
        Greedy().generate(CausalMeanLM(), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("training", [True, False])
def test_eval_and_inference_mode_then_mode_restored(training):
    model = CausalMeanLM()
    model.train(training)
    out = Greedy(max_new_tokens=4).generate(model, _prompt())
    assert model.training is training
    assert all(not was_training and inference for _, was_training, inference in model.calls)
    out[0, 0] = 3  # an ordinary tensor, not an inference tensor

    class Exploding(CausalMeanLM):
        def step(self, input_ids, cache):
            raise RuntimeError("boom")

    broken = Exploding().train(training)
    with pytest.raises(RuntimeError, match="boom"):
        Greedy(max_new_tokens=4).generate(broken, _prompt())
    assert broken.training is training


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
def test_sample_top_k_1_equals_greedy(temperature):
    model, prompt = CausalMeanLM(seed=1), _prompt(batch=5, length=3, seed=1)
    greedy = Greedy(max_new_tokens=20).generate(model, prompt)
    sampled = Sample(max_new_tokens=20, top_k=1, temperature=temperature, seed=123).generate(model, prompt)
    assert torch.equal(sampled, greedy)


def test_sample_seed_reproducible_and_global_rng_untouched():
    model, prompt = CausalMeanLM(), _prompt(batch=4, length=3)
    dec = Sample(max_new_tokens=30, temperature=2.0, seed=7)
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    a = dec.generate(model, prompt)
    assert torch.equal(torch.get_rng_state(), rng_before), "Sample consumed the global RNG"
    torch.manual_seed(1)  # a different global seed must not matter
    b = dec.generate(model, prompt)
    c = Sample(max_new_tokens=30, temperature=2.0, seed=8).generate(model, prompt)
    unseeded = Sample(max_new_tokens=30, temperature=2.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "the seed has no effect"
    assert not torch.equal(unseeded.generate(model, prompt), unseeded.generate(model, prompt)), (
        "seed=None reused a fixed seed"
    )
    assert not torch.equal(a, Greedy(max_new_tokens=30).generate(model, prompt)), "not sampling at all"


P = [0.4, 0.3, 0.15, 0.1, 0.05]
_SQ = [math.sqrt(x) for x in P]


@pytest.mark.parametrize(
    "settings,expected",
    [
        (dict(), P),
        # temperature 0.5 squares the probabilities, 2.0 takes their square root
        (dict(temperature=0.5), [x / 0.285 for x in (0.16, 0.09, 0.0225, 0.01, 0.0025)]),
        (dict(temperature=2.0), [x / sum(_SQ) for x in _SQ]),
        (dict(top_k=3), [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0]),
        # cumulative 0.4, 0.7: two tokens reach p = 0.6
        (dict(top_p=0.6), [4 / 7, 3 / 7, 0, 0, 0]),
        # after temperature 0.5: cumulative 0.561, 0.877 -> two tokens reach 0.7
        (dict(temperature=0.5, top_p=0.7), [0.64, 0.36, 0, 0, 0]),
        # after temperature 2: cumulative 0.300, 0.560, 0.744, 0.894 -> four tokens reach 0.75;
        # top-p before temperature would keep three (0.4, 0.7, 0.85): checks the order
        (dict(temperature=2.0, top_p=0.75), [x / sum(_SQ[:4]) for x in _SQ[:4]] + [0]),
        (dict(temperature=2.0, top_k=2, top_p=0.9), [x / (_SQ[0] + _SQ[1]) for x in _SQ[:2]] + [0, 0, 0]),
    ],
)
def test_sample_frequencies_match_processed_softmax(settings, expected):
    rows, steps = 4000, 5
    model = ConstantLM(torch.tensor(P).log())
    out = Sample(max_new_tokens=steps, seed=0, **settings).generate(model, torch.zeros(rows, 1, dtype=torch.long))
    counts = torch.bincount(out[:, 1:].flatten(), minlength=len(P)).double()
    n = rows * steps
    freq = counts / n
    for tok, p in enumerate(expected):
        if p == 0:
            assert counts[tok] == 0, f"filtered token {tok} was sampled {int(counts[tok])} times"
        else:
            # 5 standard errors: a fixed seed makes this deterministic; a wrong distribution
            # (e.g. no temperature, or filters in the wrong order) is off by >= 0.07.
            assert abs(freq[tok].item() - p) < 5 * math.sqrt(p * (1 - p) / n), (tok, freq.tolist(), expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(top_k=-2), "top_k=-2"),
        (dict(top_p=0.0), "top_p=0.0"),
        (dict(top_p=1.01), "top_p=1.01"),
        (dict(seed=-1), "seed=-1"),
        (dict(seed=1.5), "seed=1.5"),
        (dict(max_new_tokens=-3), "max_new_tokens=-3"),
    ],
)
def test_sample_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sample(**kwargs)


def test_decode_loop_is_shared_with_custom_choice():
    # decode_loop with "always token 3" must produce exactly that, with EOS=3 stopping at once.
    model, prompt = CausalMeanLM(), _prompt(batch=2, length=2)
    three = lambda logits: torch.full((logits.shape[0],), 3, dtype=torch.long)  # noqa: E731
    assert decode_loop(model, prompt, three, 4)[:, 2:].tolist() == [[3] * 4] * 2
    assert decode_loop(model, prompt, three, 4, eos_token_id=3)[:, 2:].tolist() == [[3], [3]]


# ---------------------------------------------------------------- the real model


def test_greedy_on_tiny_llama_matches_recompute_reference():
    from rizzrun.models import llama
    torch.manual_seed(0)
    # init_std large enough that logits are well separated (no argmax near-ties in fp32)
    model = llama.Llama(
        vocab_size=37, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64, max_seq_len=32, init_std=0.3
    )
    prompt = torch.randint(0, 37, (3, 4), generator=torch.Generator().manual_seed(0))
    out = Greedy(max_new_tokens=16).generate(model, prompt)
    assert model.training  # restored
    assert torch.equal(out, greedy_reference(model, prompt, 16))
    assert len(set(out[:, 4:].flatten().tolist())) > 2


# ---------------------------------------------------------------- repetition penalty, min_new_tokens,
# ---------------------------------------------------------------- left padding in the decode loop


@pytest.mark.parametrize(
    "penalty,prompt,expected",
    [
        (1.0, [3], [0, 0, 0, 0, 0]),
        # 0 is penalized to 2.0/1.1 = 1.818 after its first use: 1 (1.9) wins once, then 0 (1.818)
        # beats the unpenalized 2 (1.8) and, penalized once only, keeps winning
        (1.1, [3], [0, 1, 0, 0, 0]),
        # 1.2: 0 -> 1.667, 1 -> 1.583, so 2 (1.8) gets its turn; then all are penalized: 0 again
        (1.2, [3], [0, 1, 2, 0, 0]),
        # the prompt counts: 0 is penalized from the first step
        (1.2, [0], [1, 2, 0, 0, 0]),
        # < 1 rewards tokens seen: 1 (1.9 / 0.5 = 3.8) from the prompt wins forever
        (0.5, [1], [1, 1, 1, 1, 1]),
    ],
)
def test_repetition_penalty_in_the_loop_hand_derived(penalty, prompt, expected):
    model = ConstantLM([2.0, 1.9, 1.8, -0.5])
    out = Greedy(max_new_tokens=5, repetition_penalty=penalty).generate(model, torch.tensor([prompt] * 2))
    assert out[:, 1:].tolist() == [expected] * 2


def test_repetition_penalty_ignores_left_padding():
    # Row 0 is left-padded with id 0, the model's favourite: were padding penalized, row 0 would
    # start with 1 instead of 0. Both rows then follow the same hand-derived path as above.
    model = ConstantLM([2.0, 1.9, 1.8, -0.5])
    dec = Greedy(max_new_tokens=4, repetition_penalty=1.2)
    out = dec.generate(model, [[3], [3, 3, 3]], pad_token_id=0)
    assert out.tolist() == [[0, 0, 3, 0, 1, 2, 0], [3, 3, 3, 0, 1, 2, 0]]
    mask = torch.tensor([[0, 0, 1], [1, 1, 1]])
    assert torch.equal(dec.generate(model, out[:, :3], attention_mask=mask), out)
    # the same row as real tokens (no mask) is penalized
    assert dec.generate(model, out[:1, :3])[0, 3:].tolist() == [1, 2, 0, 0]


@pytest.mark.parametrize(
    "eos,min_new,expected",
    [
        (0, 0, [0]),
        (0, 3, [1, 1, 1, 0]),
        ([1, 0], 2, [2, 2, 0]),  # every EOS id is held back, then the best one ends the row
        (None, 3, [0] * 6),  # no EOS: nothing to hold back
        (0, 6, [1] * 6),  # never reached within max_new_tokens
    ],
)
def test_min_new_tokens_holds_eos_back(eos, min_new, expected):
    model = ConstantLM([3.0, 2.0, 1.0, 0.0])
    for dec in (Greedy(max_new_tokens=6, min_new_tokens=min_new),
                Sample(max_new_tokens=6, top_k=1, min_new_tokens=min_new)):
        out = dec.generate(model, torch.zeros(2, 1, dtype=torch.long), eos_token_id=eos)
        assert out[:, 1:].tolist() == [expected] * 2, dec


def test_list_prompts_are_left_padded_with_the_pad_id():
    script = [[4, 2, 5], [3, 3, 3]]
    for kwargs, pad in [(dict(eos_token_id=[9, 2]), 9), (dict(eos_token_id=2, pad_token_id=7), 7), ({}, 0)]:
        model = ScriptedLM(script, prompt_len=3)
        out = Greedy(max_new_tokens=3).generate(model, [[5], torch.tensor([6, 8, 8])], **kwargs)
        eos = kwargs.get("eos_token_id")
        tail = [4, 2, pad] if eos is not None else [4, 2, 5]
        assert out.tolist() == [[pad, pad, 5] + tail, [6, 8, 8, 3, 3, 3]]
        prefill_ids, prefill_mask = model.inputs[0]
        assert prefill_ids.tolist() == [[pad, pad, 5], [6, 8, 8]]
        assert prefill_mask.tolist() == [[False, False, True], [True, True, True]]
        assert all(m is None for _, m in model.inputs[1:])  # the cache keeps the mask
    assert torch.equal(left_pad([[5], [6, 8, 8]], 4)[0], torch.tensor([[4, 4, 5], [6, 8, 8]]))
    assert torch.equal(left_pad([[5], [6, 8, 8]], 4)[1], torch.tensor([[0, 0, 1], [1, 1, 1]]))


def test_no_padding_no_mask_passed():
    # Unpadded prompts (a tensor without mask, an all-ones mask, equal-length lists) keep the
    # model's mask-free fast path.
    prompt = torch.tensor([[0, 1], [1, 0]])
    for kwargs in (dict(), dict(attention_mask=torch.ones(2, 2, dtype=torch.long))):
        model = ScriptedLM(SCRIPT[:2], prompt_len=2)
        Greedy(max_new_tokens=3).generate(model, prompt, **kwargs)
        assert [m for _, m in model.inputs] == [None] * 3
    model = ScriptedLM(SCRIPT[:2], prompt_len=2)
    dec = Greedy(max_new_tokens=3)
    assert torch.equal(dec.generate(model, prompt.tolist()), dec.generate(model, prompt))


@pytest.mark.parametrize("check_every", [1, 2, 3, 4, 8])
@pytest.mark.parametrize(
    "eos,expected",
    [
        (None, SCRIPT),
        ([9, 2], [[4, 2, 9, 9, 9], [3, 3, 3, 3, 3], [1, 9, 9, 9, 9]]),
        ([2, 3], [[4, 2, 2], [3, 2, 2], [1, 9, 2]]),
        ([4, 3, 1], [[4], [3], [1]]),
    ],
)
def test_check_every_does_not_change_the_output(check_every, eos, expected):
    # Reading "all finished?" every few steps runs a few padding steps more, never changes tokens
    # or length.
    prompt = torch.tensor([[0, 1], [1, 0], [0, 0]])
    model = ScriptedLM(SCRIPT, prompt_len=2)
    out = decode_loop(model, prompt, lambda s: s.argmax(-1), 5, eos, check_every=check_every)
    assert out[:, 2:].tolist() == expected
    if check_every == 1:
        assert len(model.calls) == len(expected[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]])), r"row 0 is \[1, 1, 0\]: not left padding"),
        (dict(attention_mask=torch.tensor([[0, 1, 0], [1, 1, 1]])), r"attention_mask row 0 is \[0, 1, 0\]"),
        (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])), r"attention_mask row 1 is \[0, 0, 0\]"),
        (dict(attention_mask=torch.tensor([[0, 2, 1], [1, 1, 1]])), "values other than 0 and 1"),
        (dict(attention_mask=torch.ones(2, 2)), r"attention_mask must be a tensor of the shape of prompt_ids \(2, 3\)"),
        (dict(attention_mask=[[1, 1, 1], [1, 1, 1]]), "attention_mask must be a tensor"),
        (dict(pad_token_id=-1), "pad_token_id=-1"),
        (dict(pad_token_id=1.0), "pad_token_id=1.0"),
    ],
)
def test_padding_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Greedy().generate(CausalMeanLM(), torch.tensor([[1, 2, 3], [4, 5, 6]]), **kwargs)


@pytest.mark.parametrize(
    "prompts,kwargs,match",
    [
        ([[1, 2], [3]], dict(attention_mask=torch.ones(2, 2)), "a list of prompts is left-padded by generate itself"),
        ([[1, 2], []], {}, "non-empty list of non-empty lists of ints"),
        ([], {}, "non-empty list of non-empty lists of ints"),
        ([[1.5, 2]], {}, "non-empty list of non-empty lists of ints"),
        ("abc", {}, "non-empty list of non-empty lists of ints"),
        ([[1, -2]], {}, r"negative ids \(min -2\)"),
    ],
)
def test_list_prompt_errors(prompts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Greedy().generate(CausalMeanLM(), prompts, **kwargs)


def test_loop_argument_errors():
    model, prompt = ConstantLM([1.0, 0.0]), torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="check_every=0"):
        decode_loop(model, prompt, lambda s: s.argmax(-1), 3, check_every=0)
    with pytest.raises(ValueError, match=r"pad_token_id=5 is not allowed: it must be < the model's 2 output logits"):
        Greedy(max_new_tokens=3).generate(model, prompt, eos_token_id=0, pad_token_id=5)
    with pytest.raises(ValueError, match=r"prompt_ids holds ids >= the model's 2 output logits"):
        Greedy(max_new_tokens=3, repetition_penalty=1.5).generate(model, torch.tensor([[2]]))
    with pytest.raises(ValueError, match="left_pad needs an integer"):
        left_pad([[1]], None)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (Greedy, dict(repetition_penalty=0), "repetition_penalty=0"),
        (Greedy, dict(repetition_penalty=-1.0), "repetition_penalty=-1.0"),
        (Greedy, dict(repetition_penalty="1.2"), "repetition_penalty='1.2'"),
        (Greedy, dict(min_new_tokens=-1), "min_new_tokens=-1"),
        (Greedy, dict(min_new_tokens=1.5), "min_new_tokens=1.5"),
        (Sample, dict(repetition_penalty=float("inf")), "repetition_penalty=inf"),
        (Sample, dict(min_new_tokens=True), "min_new_tokens=True"),
    ],
)
def test_new_knob_errors(cls, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        cls(**kwargs)
