"""SSMax attention (Nakanishi, arXiv 2501.19399): the mixer contract, fused == row-wise reference
(fp64 loops), neutral factor == SDPA, decoding's n = cache length, the fading property against
its closed form, gradients to s and b, config rules. Spec: methods/attention/ssmax.md."""

import math
from functools import partial

import pytest
import torch

import mixer_checks as mc
from rizzrun.attention.naive import naive_attention
from rizzrun.attention.sdpa import SDPAttention, sdpa_attention
from rizzrun.attention.ssmax import SSMaxAttention, ssmax, ssmax_attention
from rizzrun.config import ConfigError, load

SETTINGS = {
    "default": partial(SSMaxAttention, train_len=16),
    "bias": partial(SSMaxAttention, s_init=0.6, bias=True),
    "fixed": partial(SSMaxAttention, s_init=0.4, learnable=False),
}


@pytest.mark.parametrize("check", mc.ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SETTINGS)
def test_ssmax_keeps_the_mixer_contract(name, check):
    check(mc.tiny_llama(SETTINGS[name]))


def rowwise_reference(q, k, v, s, b, mask=None):
    """softmax((s_h log n_i + b_h) q_i K^T / sqrt(D)) V over the keys query i sees, one row at a
    time in fp64; n_i = number of real keys up to i."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Tq, D = q.shape
    Tk, group = k.shape[2], H // k.shape[1]
    out = torch.zeros(B, H, Tq, D, dtype=torch.float64)
    for b_ in range(B):
        for h in range(H):
            for i in range(Tq):
                p = Tk - Tq + i
                keys = [j for j in range(p + 1) if mask is None or mask[b_, j]]
                if not keys:
                    continue
                n = len(keys)
                z = torch.stack([q[b_, h, i] @ k[b_, h // group, j] for j in keys]) / math.sqrt(D)
                w = torch.softmax((float(s[h]) * math.log(n) + float(b[h])) * z, 0)
                out[b_, h, i] = sum(w[m] * v[b_, h // group, j] for m, j in enumerate(keys))
    return out


def qkv(B=2, H=4, Hkv=2, Tq=9, Tk=9, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Tq, D, generator=g), torch.randn(B, Hkv, Tk, D, generator=g),
            torch.randn(B, Hkv, Tk, D, generator=g))


def test_fused_scale_q_then_sdpa_equals_rowwise_ssmax():
    q, k, v = qkv()
    s, b = torch.tensor([0.3, 0.5, 0.9, 1.4]), torch.tensor([0.0, 0.2, -0.1, 0.5])
    torch.testing.assert_close(ssmax_attention(q, k, v, s, b).double(), rowwise_reference(q, k, v, s, b),
                               atol=1e-5, rtol=1e-5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False  # left padding: n counts only the real keys
    got = ssmax_attention(q, k, v, s, b, mask)
    torch.testing.assert_close(got.double(), rowwise_reference(q, k, v, s, b, mask), atol=1e-5, rtol=1e-5)
    assert (got[0, :, :3] == 0).all()  # padding queries see nothing
    # decoding: the last query of a longer cache uses n = cache length
    q1, k1, v1 = qkv(Tq=3, Tk=11)
    torch.testing.assert_close(ssmax_attention(q1, k1, v1, s, b).double(), rowwise_reference(q1, k1, v1, s, b),
                               atol=1e-5, rtol=1e-5)


def test_factor_one_per_row_is_plain_softmax():
    """s = 1 / log n_i per row makes the factor 1: plain causal attention (row n = 1 excluded
    from the factor, where log 1 = 0; its output is v_0 either way)."""
    q, k, v = qkv()
    n = torch.arange(1, 10, dtype=torch.float64)
    s = torch.where(n >= 2, 1 / n.clamp(min=2).log(), torch.ones_like(n)).expand(2, 4, 9)
    torch.testing.assert_close(ssmax_attention(q, k, v, s), sdpa_attention(q, k, v), atol=1e-6, rtol=1e-6)
    # the default init is that factor at the training length: the last row equals plain attention
    mixer = SSMaxAttention(32, 4, 2, 8, train_len=9)
    torch.testing.assert_close(mixer.attend(q, k, v)[:, :, -1], sdpa_attention(q, k, v)[:, :, -1],
                               atol=1e-6, rtol=1e-6)
    assert not torch.allclose(mixer.attend(q, k, v)[:, :, 2], sdpa_attention(q, k, v)[:, :, 2], atol=1e-3)


def test_fading_property_numerics():
    """One logit above n - 1 equal others by a gap: max softmax -> 0 as n grows, while
    max SSMax = n^{s gap} / (n^{s gap} + n - 1), which -> 1 for s gap > 1 and stays 1/2 at s gap = 1."""
    gap = 2.0
    for n in (10, 1_000, 100_000):
        z = torch.zeros(n, dtype=torch.float64)
        z[0] = gap
        plain = torch.softmax(z, 0)[0].item()
        assert plain == pytest.approx(math.exp(gap) / (math.exp(gap) + n - 1), rel=1e-12)
        for s in (0.5, 0.8):  # s gap = 1, 1.6
            want = n ** (s * gap) / (n ** (s * gap) + n - 1)
            assert ssmax(z, s)[0].item() == pytest.approx(want, rel=1e-12)
    assert torch.softmax(torch.tensor([gap] + [0.0] * 99_999, dtype=torch.float64), 0)[0] < 1e-4
    big = torch.zeros(100_000, dtype=torch.float64)
    big[0] = gap
    assert ssmax(big, 0.8)[0] > 0.9 and ssmax(big, 0.5)[0] == pytest.approx(0.5, abs=1e-4)


def test_gradients_reach_s_and_b_and_match_finite_differences():
    q, k, v = (t.double() for t in qkv(B=1, H=2, Hkv=1, Tq=5, Tk=5, D=4))
    s = torch.tensor([0.4, 0.7], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, b: ssmax_attention(q, k, v, s, b), (s, b))
    model = mc.tiny_llama(partial(SSMaxAttention, s_init=0.5, bias=True)).train()
    tokens = mc.ids()
    model(tokens).square().mean().backward()
    for block in model.blocks:
        assert block.attn.s.grad.abs().min() > 0 and block.attn.b.grad.abs().min() > 0


def test_parameters_buffers_reset_and_scales():
    model = mc.tiny_llama(partial(SSMaxAttention, s_init=0.25, bias=True))
    attn = model.blocks[0].attn
    assert dict(attn.named_parameters()).keys() >= {"s", "b"} and attn.s.shape == (4,)
    with torch.no_grad():
        attn.s.add_(1.0)
    attn.reset_parameters(0.02, 0.02)
    assert attn.scales() == {"s": [0.25] * 4, "b": [0.0] * 4}
    fixed = SSMaxAttention(32, 4, 2, 8, s_init=0.3, learnable=False)
    assert "s" not in dict(fixed.named_parameters()) and "s" in fixed.state_dict()
    assert SSMaxAttention(32, 4, 2, 8, train_len=100).scales()["s"] == pytest.approx([1 / math.log(100)] * 4)
    with pytest.raises(ValueError, match=r"s_init=-1 must be > 0"):
        SSMaxAttention(32, 4, 2, 8, s_init=-1)


def test_ssmax_mixer_with_unit_factor_weights_is_sdpa_on_its_row():
    """Same weights in one-layer SDPA and SSMax models; s = 1 / log T makes the last position's
    factor 1, so its logits are the SDPA model's; earlier positions differ."""
    sdpa = mc.tiny_llama(SDPAttention, n_layer=1)
    ss = mc.tiny_llama(partial(SSMaxAttention, train_len=13), n_layer=1)
    ss.load_state_dict(sdpa.state_dict(), strict=False)
    tokens = mc.ids()
    with torch.no_grad():
        torch.testing.assert_close(ss(tokens)[:, -1], sdpa(tokens)[:, -1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ss(tokens)[:, 3], sdpa(tokens)[:, 3], atol=1e-4)


def test_naive_reference_agrees_with_rowwise():  # the reference itself, at s log n = 1
    q, k, v = qkv(B=1)
    s = torch.full((4,), 0.0)
    b = torch.ones(4)
    torch.testing.assert_close(rowwise_reference(q, k, v, s, b).float(), naive_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_validator_rejects_bad_values_in_one_line():
    for overrides, want in [
        (["attention=ssmax", "attention.s_init=-1"], "attention.s_init=-1: out of range; allowed: s_init > 0"),
        (["attention=ssmax", "attention.train_len=1"], "attention.train_len=1: out of range; allowed: train_len >= 2"),
        (["attention=ssmax", "attention.train_len=1000"],
         "attention.train_len=1000: longer than the model's max_seq_len=256; allowed: attention.train_len <= 256 "
         "(the training length), or set attention.s_init"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(overrides)
        assert info.value.problems == [want]
    cfg = load(["attention=ssmax", "attention.train_len=1000", "attention.s_init=0.3"])
    assert cfg.attention.s_init == 0.3
    assert load(["attention=ssmax"]).attention.train_len == 128  # data.seq_len
