"""Shared prompt prefill (`num_return_sequences`): each prompt prefilled once, its cache repeated G
times (`DecodingCache.repeat_interleave`, `ModelStepper.expand`), must give exactly the tokens of
decoding the G-times repeated prompts (the old path, which is the independent reference here), for
every cache type the models have and every decoder; steppers and caches that cannot repeat their
rows fall back to prefilling every copy (checked by the rows each prefill was given).
"""

from __future__ import annotations

import functools
from functools import partial

import pytest
import torch
from torch import nn

from rizzrun.attention.fam import FAMAttention
from rizzrun.attention.hybrid import hybrid
from rizzrun.attention.lightning import LightningAttention
from rizzrun.attention.naive import NaiveAttention
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.attention.selective import SelectiveAttention
from rizzrun.attention.softmax import KVState
from rizzrun.attention.ssmax import SSMaxAttention
from rizzrun.attention.think import ThinKAttention
from rizzrun.decoders import DynamicTemperature, Greedy, PMPD, PrincipleGuided, Sample, ThinK, Typical, left_pad
from rizzrun.decoders.compiled import CompiledStepper
from rizzrun.decoders.loop import ModelStepper, cache_repeats
from rizzrun.models.llama import Llama
from rizzrun.models.rwkv import RWKV
from rizzrun.rollouts import sample_rollout

pytestmark = pytest.mark.usefixtures("one_thread")

V, G, N, EOS = 37, 3, 6, 2
PROMPTS = [[5, 9, 11, 4, 20, 7], [8, 3], [30, 12, 6, 17]]  # left-padded to 6: rows 1 and 2 padded


class UnrepeatableState(KVState):
    repeat_interleave = None  # a cache type that cannot repeat its rows


class Unrepeatable(SDPAttention):
    def init_state(self, batch_size, max_len, device=None, dtype=None):
        return UnrepeatableState(batch_size, self.n_kv_head, max_len, self.head_dim, device=device, dtype=dtype)


MIXERS = {
    "sdpa": SDPAttention,
    "naive": NaiveAttention,
    "ssmax": SSMaxAttention,
    "lightning": partial(LightningAttention, chunk_size=4),
    "hybrid": partial(hybrid, softmax_every=2, softmax=SDPAttention, other=partial(LightningAttention, chunk_size=4)),
    "fam": partial(FAMAttention, block_size=3, memory_blocks=1, fam_len=2),
    "selective": partial(SelectiveAttention, budget=3),
    "think": partial(ThinKAttention, ratio=0.5, obs_window=2, recent_size=2),
}


def llama(attention=None, seed=0):
    torch.manual_seed(seed)
    return Llama(V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=32, attention=attention,
                 init_std=0.2).eval()


def rwkv(seed=0):
    torch.manual_seed(seed)
    return RWKV(V, d_model=32, n_layer=2, max_seq_len=32).eval()


def spy(model):
    """Record the batch size of every prefill (a `step` of more than one token)."""
    rows, step = [], model.step

    def recording(ids, cache, *args, **kwargs):
        if ids.shape[1] > 1:
            rows.append(ids.shape[0])
        return step(ids, cache, *args, **kwargs)

    model.step = recording
    return rows


def both(decoder, model, prompts=PROMPTS, **kw):
    """(old: the repeated prompts decoded, new: num_return_sequences=G, prefill rows of the new path)."""
    ids, mask = left_pad(prompts, 0)
    seeds = list(range(100, 100 + len(prompts) * G))
    decoder.row_seeds = seeds if decoder.do_sample else None
    old = decoder.generate(model, ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0), **kw)
    rows = spy(model)
    new = decoder.generate(model, ids, attention_mask=mask, num_return_sequences=G, **kw)
    del model.step
    return old, new, rows


def decoders():
    return [Greedy(max_new_tokens=N), Sample(max_new_tokens=N, temperature=1.3, seed=4),
            Greedy(max_new_tokens=N, repetition_penalty=1.4, min_new_tokens=2),
            Typical(max_new_tokens=N, typical_p=0.7, top_k=9, seed=1)]


@pytest.mark.parametrize("mixer", [*MIXERS, "rwkv"])
def test_every_cache_type_repeats_rows_and_gives_the_same_tokens(mixer):
    model = rwkv() if mixer == "rwkv" else llama(MIXERS[mixer])
    for decoder in decoders():
        old, new, rows = both(decoder, model, eos_token_id=EOS, pad_token_id=0)
        assert torch.equal(old, new), (mixer, decoder)
        assert rows == [len(PROMPTS)], (mixer, decoder, rows)  # each prompt prefilled once
        assert old.shape[0] == len(PROMPTS) * G


def test_an_unrepeatable_cache_keeps_the_old_path():
    model = llama(Unrepeatable)
    assert not cache_repeats(model.init_cache(2, max_len=4))
    assert cache_repeats(llama().init_cache(2, max_len=4)) and cache_repeats(rwkv().init_cache(2, max_len=4))
    for decoder in decoders():
        old, new, rows = both(decoder, model, eos_token_id=EOS)
        assert torch.equal(old, new)
        assert rows == [len(PROMPTS) * G]  # every copy prefilled


def test_repeated_cache_is_a_copy_of_each_row():
    model = llama(MIXERS["fam"])
    cache = model.init_cache(2, max_len=8)
    ids, mask = left_pad([[3, 4, 5], [6]], 0)
    with torch.inference_mode():
        model.step(ids, cache, key_padding_mask=mask.bool())
    big = cache.repeat_interleave(3)
    assert big.batch_size == 6 and big.pos == cache.pos == 3 and big.has_padding and cache.batch_size == 2
    assert torch.equal(big.mask, cache.mask.repeat_interleave(3, 0))
    for small, large in zip(cache.layers, big.layers):
        for name, t in vars(small).items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(getattr(large, name), t.repeat_interleave(3, 0)), name
                assert getattr(large, name).data_ptr() != t.data_ptr()
    state = rwkv().init_cache(2, max_len=4)
    state.a.normal_()
    assert torch.equal(state.repeat_interleave(3).a, state.a.repeat_interleave(3, 1))


class Head(nn.Module):
    """A stand-in diversity head: hidden states (..., C) -> d (...,) in [0, 1]."""

    def forward(self, h):
        return torch.sigmoid(h.float().sum(-1))


def _fallback_decoders():
    return {
        "pmpd": PMPD(precisions=[4, 3], max_new_tokens=N),
        "pmpd sampled": PMPD(precisions=[4, 3], max_new_tokens=N, do_sample=True, seed=2),
        "dds token": DynamicTemperature(granularity="token", head=Head(), max_new_tokens=N, t_min=0.5, t_max=1.5),
        "dds sequence": DynamicTemperature(granularity="sequence", head=Head(), max_new_tokens=N),
        "opad": PrincipleGuided(principle=[7, 8, 9], beta=0.5, max_new_tokens=N),
        "opad code": PrincipleGuided(principle=[7, 8], window_mode="code", do_sample=True, seed=1, max_new_tokens=N),
    }


@pytest.mark.parametrize("name", list(_fallback_decoders()))
def test_decoders_with_per_row_state_fall_back_to_prefilling_every_copy(name):
    decoder = _fallback_decoders()[name]
    model = llama()
    old, new, rows = both(decoder, model, eos_token_id=EOS)
    assert torch.equal(old, new)
    copies = len(PROMPTS) * G
    assert rows == ([copies, copies] if name.startswith("opad") else [copies])  # OPAD: two caches
    if name.startswith("dds"):
        assert decoder.last_temperatures.shape[0] == copies


@pytest.mark.parametrize("name", ["think", "dds without head", "compiled step"])
def test_decoders_on_the_model_stepper_expand(name):
    model = llama()
    if name == "think":
        decoder = ThinK(ratio=0.5, obs_window=2, recent_size=2, do_sample=True, seed=3, max_new_tokens=N)
    elif name == "dds without head":
        decoder = DynamicTemperature(score=0.3, max_new_tokens=N, top_p=0.9)
    else:  # compile=true's stepper, its step function run uncompiled (test_decode_fast compiles it)
        decoder = Sample(max_new_tokens=N, seed=5)
        decoder.stepper = lambda m, b, n, d: CompiledStepper(m, b, n, d, backend=None)
    old, new, rows = both(decoder, model, eos_token_id=EOS)
    assert torch.equal(old, new)
    assert rows == [len(PROMPTS)]


def test_a_stepper_subclass_with_its_own_prefill_does_not_inherit_expand():
    class Scaled(ModelStepper):
        def prefill(self, ids, padding):
            return super().prefill(ids, padding) * 2

    class Expanding(Scaled):
        def expand(self, repeats):
            super().expand(repeats)

    model = llama()
    assert ModelStepper(model, 2, 8).can_expand()
    assert not Scaled(model, 2, 8).can_expand()
    assert Expanding(model, 2, 8).can_expand()
    assert not ModelStepper(llama(Unrepeatable), 2, 8).can_expand()


def test_arguments_and_edges():
    model = llama()
    dec = Greedy(max_new_tokens=N)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="num_return_sequences"):
            dec.generate(model, [[1, 2]], num_return_sequences=bad)
    ids = torch.tensor([[1, 2], [3, 4]])
    assert dec.generate(model, ids, max_new_tokens=0, num_return_sequences=3).tolist() == \
        ids.repeat_interleave(3, 0).tolist()
    # a list of prompts of unequal lengths (left-padded by generate) and no EOS
    old = dec.generate(model, [p for p in PROMPTS for _ in range(G)])
    assert torch.equal(old, dec.generate(model, PROMPTS, num_return_sequences=G))
    # num_return_sequences=1 is the plain call
    assert torch.equal(dec.generate(model, PROMPTS), dec.generate(model, PROMPTS, num_return_sequences=1))


def _batch():
    ids, mask = left_pad(PROMPTS, 0)
    return {"prompt_ids": ids, "prompt_mask": mask.bool(), "row": torch.arange(len(PROMPTS))}


class OldPath(Sample):
    """A decoder whose generate does not name num_return_sequences: sample_rollout repeats the prompts."""

    def generate(self, model, prompt_ids, **kw):
        return super().generate(model, prompt_ids, **kw)


@pytest.mark.parametrize("make", [llama, rwkv], ids=["llama", "rwkv"])
def test_sample_rollout_prefills_each_prompt_once_with_the_same_rollout(make):
    model = make()
    seeds = list(range(7, 7 + len(PROMPTS) * G))
    old = sample_rollout(model, OldPath(max_new_tokens=N, seed=1), _batch(), G, eos_id=EOS, row_seeds=seeds)
    rows = spy(model)
    new = sample_rollout(model, Sample(max_new_tokens=N, seed=1), _batch(), G, eos_id=EOS, row_seeds=seeds)
    assert rows == [len(PROMPTS)]
    assert old.keys() == new.keys()
    for key in old:
        assert torch.equal(old[key], new[key]), key
    # without row_seeds (one generator for the batch) too: the same draws on the same B * G rows
    del model.step
    a = sample_rollout(model, OldPath(max_new_tokens=N, seed=3), _batch(), G, eos_id=EOS)
    b = sample_rollout(model, Sample(max_new_tokens=N, seed=3), _batch(), G, eos_id=EOS)
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_sample_rollout_reads_the_parameter_through_a_signature_keeping_wrapper():
    model = llama()
    seeds = list(range(len(PROMPTS) * G))
    wrapped, bare = Sample(max_new_tokens=N), Sample(max_new_tokens=N)
    method = wrapped.generate
    wrapped.generate = functools.wraps(method)(lambda *a, **k: method(*a, **k))  # a timer, say
    rows = spy(model)
    a = sample_rollout(model, wrapped, _batch(), G, eos_id=EOS, row_seeds=seeds)
    assert rows == [len(PROMPTS)]
    bare.generate = lambda *a, **k: Sample.generate(bare, *a, **k)  # hides the parameter: the old path
    b = sample_rollout(model, bare, _batch(), G, eos_id=EOS, row_seeds=seeds)
    assert rows == [len(PROMPTS), len(PROMPTS) * G]
    assert torch.equal(a["input_ids"], b["input_ids"])
