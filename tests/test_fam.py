"""TransformerFAM (arXiv 2404.09173; spec /methods/attention/fam.md section 8): the mixer contract,
neutral settings == causal attention, BSWA == one banded-mask attention, the block-by-block mixer ==
an explicit per-query reference loop written here (fp64, own RoPE), decoding == the forward, the
memory carries information past BSWA's receptive field, the mask table, the config rules."""

from functools import partial

import pytest
import torch

import mixer_checks as mc
from rizzrun.attention.fam import FAMAttention, fam_block_mask
from rizzrun.attention.fam_spec import check_with_model
from rizzrun.attention.mixer import Positions
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.config import ConfigError, load

THETA = 10000.0
CONFIGS = {
    "bswa-M1": dict(block_size=4, memory_blocks=1, fam_len=0),
    "fam-M1": dict(block_size=4, memory_blocks=1, fam_len=2),
    "fam-unbounded": dict(block_size=3, memory_blocks=None, fam_len=3),
    "bswa-unbounded": dict(block_size=4, memory_blocks=None, fam_len=0),
}


@pytest.mark.parametrize("check", mc.ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", CONFIGS)
def test_fam_keeps_the_mixer_contract(name, check):
    check(mc.tiny_llama(partial(FAMAttention, **CONFIGS[name])))


@pytest.mark.parametrize("pads", [4, 5])
def test_left_padding_aligns_blocks_to_the_first_real_token(pads):
    # pads a multiple of L and not: the padded row still gives the unpadded row's outputs.
    mc.check_left_padding(mc.tiny_llama(partial(FAMAttention, block_size=4, memory_blocks=0, fam_len=2)), pads=pads)


# --- mixer-level equalities in fp64 --------------------------------------------------------------

def rope(x, pos):
    """x (..., D) rotated to position pos: channel pairs (j, j + D/2) by pos * THETA^(-2j/D)."""
    D = x.shape[-1]
    angle = pos * THETA ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    cos, sin = torch.cat((angle, angle)).cos(), torch.cat((angle, angle)).sin()
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def positions(T, start=0, mask=None):
    pos = torch.arange(start, start + T, dtype=torch.float64)
    D = 4
    angle = torch.outer(pos, THETA ** (-torch.arange(0, D, 2, dtype=torch.float64) / D))
    angle = torch.cat((angle, angle), dim=-1)
    return Positions(start, angle.cos(), angle.sin(), mask)


def mixer(seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    m = FAMAttention(d_model=16, n_head=4, n_kv_head=2, head_dim=4, **kw).to(dtype)
    m.reset_parameters(0.3, 0.3)
    return m


def xs(B=2, T=22, seed=1, dtype=torch.float64):
    return torch.randn(B, T, 16, generator=torch.Generator().manual_seed(seed)).to(dtype)


def softmax_read(q, keys, values, group):
    """q (H, D), keys/values (K, Hkv, D) -> (H, D): each head's softmax over all the given keys."""
    k, v = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)  # (K, H, D)
    w = (torch.einsum("hd,khd->hk", q, k) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return torch.einsum("hk,khd->hd", w, v)


@torch.no_grad()
def reference(m, x):
    """One row x (T, C): block by block, query by query, keys listed by the rules of the paper
    (spec sections 1-2) and the positions of fam.py's docstring: FAM_{tau-1} keys at block tau's
    first position, the memory queries at its last."""
    L, M, F, H, Hkv, D = m.block_size, m.memory_blocks, m.fam_len, m.n_head, m.n_kv_head, m.head_dim
    T, g = x.shape[0], H // Hkv
    q = torch.stack([rope(r, t) for t, r in enumerate(m.q(x).view(T, H, D))])
    k = torch.stack([rope(r, t) for t, r in enumerate(m.k(x).view(T, Hkv, D))])
    v = m.v(x).view(T, Hkv, D)
    fam = m.fam_init if F else None
    out = torch.zeros(T, H, D, dtype=x.dtype)
    for s in range(0, T, L):
        if F:
            h = fam / fam.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
            fk, fv = rope(m.k(h).view(F, Hkv, D), s), m.v(h).view(F, Hkv, D)
            fq = rope(m.q(h).view(F, H, D), s + L - 1)
        first = 0 if M is None else max(s - M * L, 0)
        for t in range(s, min(s + L, T)):
            keys, values = [k[first:t + 1]], [v[first:t + 1]]  # memory segment + own block, causal
            if F:
                keys.append(fk), values.append(fv)
            out[t] = softmax_read(q[t], torch.cat(keys), torch.cat(values), g)
        if F and s + L <= T:  # a complete block: the memory reads it and itself, never the memory segment
            read = torch.stack([softmax_read(fq[i], torch.cat((k[s:s + L], fk)), torch.cat((v[s:s + L], fv)), g)
                                for i in range(F)])
            fam = fam + m.out(read.reshape(F, H * D))
    return m.out(out.reshape(T, H * D))


@pytest.mark.parametrize("kw", [dict(block_size=4, memory_blocks=1, fam_len=2),
                                dict(block_size=3, memory_blocks=None, fam_len=3),
                                dict(block_size=5, memory_blocks=0, fam_len=1),
                                dict(block_size=4, memory_blocks=2, fam_len=0)], ids=str)
def test_block_by_block_and_decoding_equal_the_reference_loop(kw):
    m, x = mixer(**kw), xs()
    want = torch.stack([reference(m, row) for row in x])
    with torch.no_grad():
        torch.testing.assert_close(m(x, positions(x.shape[1])), want, atol=1e-10, rtol=1e-10)
        state = m.init_state(2, x.shape[1], dtype=torch.float64)
        got, start = [], 0
        for n in [5, 1, 1, 7, 2, 6]:  # prefill, single tokens, chunks across block boundaries
            got.append(m(x[:, start:start + n], positions(n, start), state))
            start += n
    torch.testing.assert_close(torch.cat(got, 1), want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("memory_blocks", [None, 6])
def test_no_memory_tokens_and_all_blocks_is_causal_attention(memory_blocks):
    fam = mixer(dtype=torch.float32, block_size=4, memory_blocks=memory_blocks, fam_len=0)
    sdpa = SDPAttention(d_model=16, n_head=4, n_kv_head=2, head_dim=4)
    sdpa.load_state_dict(fam.state_dict())  # F = 0: no parameter beyond q, k, v, out
    x, pos = xs(T=22, dtype=torch.float32), positions(22)
    pos = Positions(0, pos.cos.float(), pos.sin.float())
    with torch.no_grad():
        torch.testing.assert_close(fam(x, pos), sdpa(x, pos), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory_blocks", [0, 1, 2])
def test_bswa_is_one_attention_with_the_block_banded_mask(memory_blocks):
    L, T = 4, 22
    m, x = mixer(block_size=L, memory_blocks=memory_blocks, fam_len=0), xs(T=T)
    pos = positions(T)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    band = (j <= i) & (j // L >= i // L - memory_blocks)  # own block causally + M whole blocks before
    with torch.no_grad():
        q, k, v = m.project(x, pos)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~band, float("-inf"))
        want = m.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, T, 16))
        torch.testing.assert_close(m(x, pos), want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fam_len", [0, 2])
def test_memory_carries_information_past_the_receptive_field_only_with_fam(fam_len):
    # One layer, L = 4, M = 1: without FAM, block tau sees blocks tau-1 and tau only.
    model = mc.tiny_llama(partial(FAMAttention, block_size=4, memory_blocks=1, fam_len=fam_len), n_layer=1)
    tokens = mc.ids(T=32)
    changed = tokens.clone()
    changed[:, 1] = (changed[:, 1] + 1) % mc.V  # block 0
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert (a[:, 4:8] - b[:, 4:8]).abs().max() > 1e-4  # block 1 reads block 0 directly
    far = (a[:, 8:] - b[:, 8:]).abs().amax(dim=(0, 2))  # blocks 2..7 (tau up to 7 >> M + 1)
    if fam_len:
        assert (far.view(6, 4).amax(1) > 1e-6).all()
    else:
        assert far.max() == 0


def test_mask_builder_is_the_table():
    # keys: memory m0 m1 | FAM f | block b0 b1; queries: block b0 b1 | FAM f.
    want = torch.tensor([[1, 1, 1, 1, 0],    # b0: memory, FAM, itself
                         [1, 1, 1, 1, 1],    # b1: memory, FAM, b0, itself
                         [0, 0, 1, 1, 1]],   # f: not the memory segment; FAM and the whole block
                        dtype=torch.bool)
    assert torch.equal(fam_block_mask(2, 1, 2), want)
    assert torch.equal(fam_block_mask(2, 0, 0), torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
    assert torch.equal(fam_block_mask(1, 2, 1), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]],
                                                             dtype=torch.bool))


def test_decoding_memory_is_flat_in_length():
    fam = mc.tiny_llama(partial(FAMAttention, block_size=4, memory_blocks=1, fam_len=2))
    sizes = [fam.init_cache(2, max_len=n).nbytes() for n in (8, 40)]
    assert sizes[0] == sizes[1]
    unbounded = mc.tiny_llama(partial(FAMAttention, block_size=4, memory_blocks=None, fam_len=2))
    assert unbounded.init_cache(2, max_len=8).nbytes() < unbounded.init_cache(2, max_len=40).nbytes()


def test_bad_arguments_are_named():
    for kw, text in ((dict(block_size=0), r"block_size=0 must be an integer >= 1"),
                     (dict(memory_blocks=-1), r"memory_blocks=-1 must be an integer >= 0 or None"),
                     (dict(fam_len=1.5), r"fam_len=1.5 must be an integer >= 0")):
        with pytest.raises(ValueError, match=text):
            FAMAttention(d_model=16, n_head=4, n_kv_head=2, head_dim=4, **kw)


def test_config_rules():
    assert check_with_model({"block_size": 256}, "attention", {"max_seq_len": 256}) == []
    assert check_with_model({"block_size": 257}, "attention", {"max_seq_len": 256}) == [
        "attention.block_size=257: a block is longer than the model's max_seq_len=256, so no block ever "
        "completes and the memory is never written; allowed: attention.block_size <= 256"]
    load(["attention=fam", "attention.memory_blocks=null", "attention.fam_len=0"])
    with pytest.raises(ConfigError) as info:
        load(["attention=fam", "attention.block_size=300", "attention.fam_len=-1"])
    assert any("attention.fam_len=-1: out of range; allowed: fam_len >= 0" in p for p in info.value.problems)
    assert any("attention.block_size=300: a block is longer" in p for p in info.value.problems)
