"""Selective attention (Leviathan et al., arXiv 2410.02703): the mixer contract with and without
a pruning budget, F == its triple-loop definition, the output == an fp64 per-query simulation of
pruning (evicted keys masked to -inf), neutral head-0 logits == plain attention, unbounded
budget == no pruning bit for bit, bounded decoding memory, gradients, config rules.
Spec: methods/attention/selective.md."""

import math
from functools import partial

import pytest
import torch

import mixer_checks as mc
from rizzrun.attention.naive import NaiveAttention, naive_attention
from rizzrun.attention.sdpa import sdpa_attention
from rizzrun.attention.selective import (SelectiveAttention, accumulated_f, selection_scores,
                                         selective_attention)
from rizzrun.config import ConfigError, load

SETTINGS = {
    "unbounded": SelectiveAttention,
    "budget-3": partial(SelectiveAttention, budget=3),
    "budget-6-detached-head-2": partial(SelectiveAttention, budget=6, detach_selection=True, selection_head=2),
}


@pytest.mark.parametrize("check", mc.ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SETTINGS)
def test_selective_keeps_the_mixer_contract(name, check):
    check(mc.tiny_llama(SETTINGS[name]))


def reference(q, k, v, mask=None, budget=None, head=0):
    """fp64 loops. F[i, j] = sum_{k < i, k != j, j != bos} ReLU(A_head[k, j]) over real k, j <= k;
    query i appends its key, evicts the kept non-BOS key with the largest F[i, ·] (ties: the
    oldest) while more than `budget` are kept, and attends softmax(A - F) over the kept keys.
    Returns o (B, H, T, D) and F (B, T, T)."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, T, D = q.shape
    group = H // k.shape[1]
    A = torch.einsum("bhid,bhjd->bhij", q, k.repeat_interleave(group, 1)) / math.sqrt(D)
    out = torch.zeros(B, H, T, D, dtype=torch.float64)
    F = torch.zeros(B, T, T, dtype=torch.float64)
    for b in range(B):
        real = [True] * T if mask is None else mask[b].tolist()
        bos = real.index(True)
        for i in range(T):
            for j in range(T):
                F[b, i, j] = sum(max(A[b, head, kk, j].item(), 0.0) for kk in range(i)
                                 if kk != j and j != bos and j <= kk and real[kk] and real[j])
        kept = []
        for i in range(T):
            if real[i]:
                kept.append(i)
            others = [j for j in kept if j != bos]
            if budget is not None and len(others) > budget:
                kept.remove(max(others, key=lambda j: (F[b, i, j].item(), -j)))
            if not kept:
                continue
            for h in range(H):
                w = torch.softmax(torch.stack([A[b, h, i, j] - F[b, i, j] for j in kept]), 0)
                out[b, h, i] = sum(w[m] * v[b, h // group, j] for m, j in enumerate(kept))
    return out, F


def qkv(B=2, H=4, Hkv=2, T=12, D=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, h, T, D, generator=g, dtype=dtype) for h in (H, Hkv, Hkv))


def padded(B=2, T=12, pads=3):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, :pads] = False  # row 0's first real token (its BOS) is position 3
    return mask


def test_f_equals_the_triple_loop_and_output_the_definition():
    q, k, v = qkv(dtype=torch.float64)
    for mask in (None, padded()):
        want_o, want_f = reference(q, k, v, mask)
        real = torch.ones(2, 12, dtype=torch.bool) if mask is None else mask
        A0 = q[:, 0] @ k[:, 0].transpose(-1, -2) / math.sqrt(8)
        visible = torch.ones(12, 12, dtype=torch.bool).tril() & real[:, None, :] & real[:, :, None]
        bos = torch.zeros(2, 1, 12, dtype=torch.bool)
        bos[0, 0, 3 if mask is not None else 0] = True
        bos[1, 0, 0] = True
        s = selection_scores(A0, visible, bos, torch.eye(12, dtype=torch.bool))
        f = accumulated_f(s, torch.zeros(2, 0, dtype=torch.float64))
        torch.testing.assert_close(f, want_f, atol=1e-12, rtol=1e-12)
        assert (f[:, 0] == 0).all() and (f[:, :, 0] == 0).all()  # first row, BOS column
        bos_pos = None if mask is None else torch.tensor([3, 0])
        o, f_last, alive = selective_attention(q, k, v, key_padding_mask=mask, bos_pos=bos_pos)
        torch.testing.assert_close(o, want_o, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(f_last, (f[:, -1] + s[:, -1]))
        assert torch.equal(alive, real)
    assert want_f.abs().sum() > 1  # selection happened


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_pruning_equals_full_attention_with_the_evicted_keys_masked(budget):
    q, k, v = qkv()
    mask, bos_pos = padded(), torch.tensor([3, 0])
    want, _ = reference(q, k, v, mask, budget)
    got, _, alive = selective_attention(q, k, v, key_padding_mask=mask, budget=budget, bos_pos=bos_pos)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert (alive.sum(1) == budget + 1).all()
    unbounded, _ = reference(q, k, v, mask)
    assert (want - unbounded).abs().max() > 1e-3  # keys were evicted


def test_non_positive_selection_logits_give_plain_attention():
    q, k, v = qkv()
    q[:, 0] = q[:, 0].abs()
    k[:, 0] = -k[:, 0].abs()  # head 0 reads kv head 0: every head-0 logit < 0, so F = 0
    o, f, _ = selective_attention(q, k, v)
    assert (f == 0).all()
    torch.testing.assert_close(o, naive_attention(q, k, v), atol=0, rtol=0)
    torch.testing.assert_close(o, sdpa_attention(q, k, v), atol=1e-6, rtol=1e-6)
    # the whole model: head 0's query weights zero -> head-0 logits 0 -> the naive model exactly
    sel, naive = mc.tiny_llama(SelectiveAttention), mc.tiny_llama(NaiveAttention)
    with torch.no_grad():
        for block in sel.blocks:
            block.attn.q.weight[:8] = 0
    naive.load_state_dict(sel.state_dict())
    tokens = mc.ids()
    with torch.no_grad():
        torch.testing.assert_close(sel(tokens), naive(tokens), atol=0, rtol=0)


def test_unbounded_budget_is_bit_identical_to_no_pruning():
    none = mc.tiny_llama(SelectiveAttention)
    big = mc.tiny_llama(partial(SelectiveAttention, budget=13))
    tokens = mc.ids()
    with torch.no_grad():
        torch.testing.assert_close(big(tokens), none(tokens), atol=0, rtol=0)
        for chunks in ([1] * 13, [6, 7]):
            got, _ = mc.decode_in_chunks(big, tokens, chunks)
            want, _ = mc.decode_in_chunks(none, tokens, chunks)
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        pruned = mc.tiny_llama(partial(SelectiveAttention, budget=3))(tokens)
    assert (pruned - none(tokens)).abs().max() > 1e-3


def test_pruned_decoding_memory_is_bounded():
    model = mc.tiny_llama(partial(SelectiveAttention, budget=3))
    tokens = mc.ids(T=20)
    with torch.no_grad():
        got, cache = mc.decode_in_chunks(model, tokens, [1] * 20)
        torch.testing.assert_close(got, model(tokens), atol=1e-5, rtol=1e-5)
    full = mc.tiny_llama(SelectiveAttention).init_cache(2, max_len=20)
    for state in cache.layers:
        assert state.k.shape == (2, 2, 4, 8) and (state.alive.sum(1) == 4).all()
        assert (state.pos[:, :].min(1).values == 0).all()  # BOS kept
    assert cache.nbytes() * 20 == full.nbytes() * 4  # 4 slots instead of 20


def test_gradients_match_finite_differences_and_detach_stops_the_selection_path():
    q, k, v = (t.requires_grad_() for t in qkv(B=1, H=2, Hkv=2, T=8, D=3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: selective_attention(q, k, v)[0], (q, k, v), fast_mode=True)
    with_sel = torch.autograd.grad(selective_attention(q, k, v)[0].sum(), k)[0]
    detached = torch.autograd.grad(selective_attention(q, k, v, detach_selection=True)[0].sum(), k)[0]
    torch.testing.assert_close(selective_attention(q, k, v, detach_selection=True)[0], selective_attention(q, k, v)[0])
    assert (with_sel - detached).abs().max() > 1e-6


def test_bad_arguments_and_config_values_are_named():
    with pytest.raises(ValueError, match=r"budget=0 must be >= 1"):
        SelectiveAttention(32, 4, 2, 8, budget=0)
    with pytest.raises(ValueError, match=r"selection_head=4 must be in \[0, n_head=4\)"):
        SelectiveAttention(32, 4, 2, 8, selection_head=4)
    for overrides, want in [
        (["attention=selective", "attention.budget=0"], "attention.budget=0: out of range; allowed: budget >= 1"),
        (["attention=selective", "attention.selection_head=6"],
         "attention.selection_head=6: the model has n_head=6 heads; allowed: 0 <= attention.selection_head < 6"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(overrides)
        assert info.value.problems == [want]
    assert load(["attention=selective", "attention.budget=16"]).attention.budget == 16
