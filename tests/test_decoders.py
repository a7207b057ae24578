"""Decoders: processors against `transformers`' warpers, the decode loop against from-scratch
recomputation and hand-written scripts, and sampling against hand-derived distributions."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rizzrun.decoders import Greedy, Sample, apply_temperature, decode_loop, top_k_filter, top_p_filter


@pytest.fixture(scope="module")
def hf_lp():
    # Only the parity tests need transformers; the decode-loop tests run without it.
    return pytest.importorskip("transformers.generation.logits_process")


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

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return {"len": 0}

    def step(self, input_ids, cache):
        self.calls.append((tuple(input_ids.shape), self.training, torch.is_inference_mode_enabled()))
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

    def step(self, input_ids, cache):
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
    llama = pytest.importorskip("rizzrun.models.llama")
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
