"""The compiled decode step (`decoder.compile=true`, rizzrun.decoders.compiled): the same tokens
as the eager step and as `transformers.generate`, one compiled graph for all steps and calls of
one shape, and a clear error for models it cannot compile.

Compiling costs seconds, so every compiled run shares one module-scoped fixture with one shape
(a left-padded batch of 4, cache length 64): one graph for the whole file. The step's math is
also checked uncompiled (backend=None) at batch 1, which costs nothing.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from rizzrun.attention.naive import NaiveAttention
from rizzrun.attention.ssmax import SSMaxAttention
from rizzrun.decoders import Greedy, Sample, left_pad
from rizzrun.decoders.compiled import CompiledStepper, check_compilable, compiled_cache_len
from rizzrun.decoders.typical import Typical
from rizzrun.models.llama import Llama

from llama_twins import hf_and_rizzrun_llamas, llama_dims

pytestmark = pytest.mark.usefixtures("one_thread")

V, MAX_LEN, N = 61, 64, 20
DIMS = llama_dims(MAX_LEN)
PADDED = [7, 3, 5, 1]


@pytest.fixture(scope="module")
def models():
    return hf_and_rizzrun_llamas(V, MAX_LEN)


def _prompts(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


def _stepper(backend):
    def make(model, batch_size, max_len, device):
        return CompiledStepper(model, batch_size, max_len, device, backend=backend)
    return make


def _runs(model, make_stepper=None):
    """The decoders every comparison runs; with make_stepper, through that stepper."""
    ids, mask = left_pad(_prompts(PADDED), 0)
    eos = 5
    decoders = {
        "greedy": (Greedy(max_new_tokens=N), {}),
        "greedy again": (Greedy(max_new_tokens=N), {}),
        "penalty": (Greedy(max_new_tokens=N, repetition_penalty=1.3), {}),
        "eos": (Greedy(max_new_tokens=N, min_new_tokens=2), {"eos_token_id": eos, "pad_token_id": 0}),
        "sample": (Sample(max_new_tokens=N, temperature=0.9, top_k=20, seed=7), {}),
        "typical": (Typical(max_new_tokens=N, typical_p=0.8, repetition_penalty=1.2, seed=3), {}),
    }
    out = {}
    for name, (decoder, kwargs) in decoders.items():
        if make_stepper is not None:
            decoder.stepper = make_stepper
        out[name] = decoder.generate(model, ids, attention_mask=mask, **kwargs)
    return out


@pytest.fixture(scope="module")
def compiled(models):
    """Every compiled run of the file, and the dynamo graphs they made (one expected)."""
    _, ours = models
    torch._dynamo.reset()
    counters.clear()
    runs = _runs(ours, _stepper("inductor"))
    first_graphs = counters["stats"]["unique_graphs"]
    # The knob itself, on the same shape: a second call must reuse the graph.
    ids, mask = left_pad(_prompts(PADDED), 0)
    runs["knob"] = Greedy(max_new_tokens=N, compile=True).generate(ours, ids, attention_mask=mask)
    return runs, first_graphs, counters["stats"]["unique_graphs"], dict(counters["recompiles"])


@pytest.fixture(scope="module")
def eager(models):
    return _runs(models[1])


def test_compiled_tokens_equal_eager(compiled, eager):
    runs, _, _, _ = compiled
    for name, expected in eager.items():
        assert torch.equal(runs[name], expected), name
    assert torch.equal(runs["knob"], eager["greedy"])
    # The EOS run stopped early somewhere and padded the finished rows: the stop was exercised.
    assert (eager["eos"] == 5).any() and eager["eos"].shape[1] <= eager["greedy"].shape[1]


def test_compiled_greedy_equals_transformers(compiled, models):
    hf, _ = models
    ids, mask = left_pad(_prompts(PADDED), 0)
    with torch.inference_mode():
        theirs = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=N, min_new_tokens=N,
                             eos_token_id=None, pad_token_id=0)
    assert torch.equal(compiled[0]["greedy"], theirs)


def test_one_graph_no_recompiles(compiled):
    _, first, total, recompiles = compiled
    # one graph for every step of six generate calls and the knob's call (same batch and cache length)
    assert (first, total) == (1, 1)
    assert recompiles == {}


def test_uncompiled_step_batch1_equals_eager(models):
    _, ours = models
    ids = torch.tensor([_prompts([6])[0]])
    for decoder in (Greedy(max_new_tokens=N, repetition_penalty=1.2), Sample(max_new_tokens=N, top_p=0.9, seed=1)):
        expected = decoder.generate(ours, ids)
        decoder.stepper = _stepper(None)
        assert torch.equal(decoder.generate(ours, ids), expected)


def test_weights_follow_in_place_updates(models):
    _, ours = models
    model = Llama(V, **DIMS)
    model.load_state_dict(ours.state_dict())
    ids = torch.tensor([_prompts([4])[0]])
    fast = Greedy(max_new_tokens=8)
    fast.stepper = _stepper(None)
    before = fast.generate(model, ids)
    with torch.no_grad():
        model.blocks[0].attn.q.weight.mul_(-1.5)  # what an optimizer step does: in place
        model.blocks[1].mlp.up.weight.add_(0.2)
    after = fast.generate(model, ids)
    assert torch.equal(after, Greedy(max_new_tokens=8).generate(model, ids))
    assert not torch.equal(after, before)


def test_cache_length_buckets():
    assert [compiled_cache_len(n, 512) for n in (1, 40, 64, 65, 200, 300)] == [64, 64, 64, 128, 256, 512]
    assert compiled_cache_len(100, 80) == 100 and compiled_cache_len(70, 80) == 80


def test_unsupported_models_raise(models):
    from rizzrun.models.rwkv import RWKV

    check_compilable(Llama(V, **DIMS, attention=NaiveAttention))  # the written-out softmax is fine
    rwkv = RWKV(V, d_model=16, n_layer=1, max_seq_len=MAX_LEN)
    with pytest.raises(ValueError, match=r"needs a rizzrun Llama with softmax attention, got RWKV"):
        Greedy(max_new_tokens=2, compile=True).generate(rwkv, torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"layer 0's token mixer is SSMaxAttention: use compile=false"):
        Greedy(max_new_tokens=2, compile=True).generate(Llama(V, **DIMS, attention=SSMaxAttention),
                                                         torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"takes no decoding state options, got key_pruning"):
        CompiledStepper(models[1], 1, 8, backend=None, key_pruning=0.5)
    with pytest.raises(ValueError, match=r"compile='yes' is not allowed: it must be true or false"):
        Greedy(compile="yes")


def test_knob_in_configs():
    from omegaconf import OmegaConf

    from rizzrun.paths import conf_dir

    for name, cls in (("greedy", Greedy), ("sample", Sample), ("typical", Typical)):
        node = OmegaConf.load(conf_dir() / "decoder" / f"{name}.yaml")
        assert node.compile is False and cls().compile is False
        assert cls(compile=True).settings()["compile"] is True
