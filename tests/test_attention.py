"""The softmax kernels: sdpa_attention against naive_attention (outputs and gradients), and
naive_attention against numbers worked out by hand. The mixers around them: tests/test_mixers.py."""

import math

import pytest
import torch

from rizzrun.attention.naive import naive_attention
from rizzrun.attention.sdpa import sdpa_attention

B, D = 2, 8


def _inputs(H, Hkv, Tq, Tk, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g, requires_grad=True)
    k = torch.randn(B, Hkv, Tk, D, generator=g, requires_grad=True)
    v = torch.randn(B, Hkv, Tk, D, generator=g, requires_grad=True)
    return q, k, v, torch.randn(B, H, Tq, D, generator=g)


def _left_padding(Tk, pads=(0, 3)):
    """(B, Tk) bool: row b starts with pads[b] padding keys."""
    return torch.arange(Tk)[None, :] >= torch.tensor(pads)[:, None]


def _out_and_grads(kernel, q, k, v, upstream, mask):
    o = kernel(q, k, v, key_padding_mask=mask)
    grads = torch.autograd.grad((o * upstream).sum(), (q, k, v))
    return o, grads


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("Tq,Tk", [(6, 6), (3, 7), (1, 6)], ids=["parallel", "offset", "decode"])
@pytest.mark.parametrize("padded", [False, True], ids=["nomask", "leftpad"])
def test_sdpa_matches_naive(H, Hkv, Tq, Tk, padded):
    q, k, v, upstream = _inputs(H, Hkv, Tq, Tk)
    mask = _left_padding(Tk) if padded else None
    o_ref, g_ref = _out_and_grads(naive_attention, q, k, v, upstream, mask)
    o, g = _out_and_grads(sdpa_attention, q, k, v, upstream, mask)

    assert o.shape == (B, H, Tq, D)
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip("qkv", g, g_ref):
        assert torch.isfinite(a).all(), f"d{name} has non-finite entries"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"d{name} differs")


def test_fully_masked_queries_give_zeros_and_finite_grads():
    """Row 1 has 3 padding keys, so its first 3 queries (Tq == Tk) see nothing at all."""
    q, k, v, upstream = _inputs(4, 2, 6, 6)
    mask = _left_padding(6)
    for kernel in (naive_attention, sdpa_attention):
        o, grads = _out_and_grads(kernel, q, k, v, upstream, mask)
        assert (o[1, :, :3] == 0).all()
        assert (o[1, :, 3:].abs() > 0).any() and (o[0].abs() > 0).any()
        assert all(torch.isfinite(g).all() for g in grads)
        # Padding keys get no gradient: nobody may attend to them.
        assert (grads[1][1, :, :3] == 0).all() and (grads[2][1, :, :3] == 0).all()


def test_naive_by_hand():
    """Two tokens, one head, D = 4 so the 1/sqrt(D) scale is 1/2.

    q1 . k0 / 2 = 0 and q1 . k1 / 2 = ln 3, so query 1 weighs keys 0, 1 by 1/4, 3/4:
    o1 = v0 / 4 + 3 v1 / 4 = [1 + 6, 0 + 3, ...]. Query 0 sees only key 0: o0 = v0.
    """
    q = torch.tensor([[5.0, -1.0, 2.0, 0.0], [2 * math.log(3), 0.0, 0.0, 0.0]]).view(1, 1, 2, 4)
    k = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]).view(1, 1, 2, 4)
    v = torch.tensor([[4.0, 0.0, 8.0, -4.0], [8.0, 4.0, 0.0, 4.0]]).view(1, 1, 2, 4)
    kernel = naive_attention

    o = kernel(q, k, v)[0, 0]
    torch.testing.assert_close(o[0], torch.tensor([4.0, 0.0, 8.0, -4.0]))
    torch.testing.assert_close(o[1], torch.tensor([7.0, 3.0, 2.0, 2.0]))

    # Padding key 0 away: query 0 sees nothing (zeros), query 1 sees only key 1 (o1 = v1).
    o = kernel(q, k, v, key_padding_mask=torch.tensor([[False, True]]))[0, 0]
    torch.testing.assert_close(o[0], torch.zeros(4))
    torch.testing.assert_close(o[1], torch.tensor([8.0, 4.0, 0.0, 4.0]))

    # Decoding query 1 alone (Tq = 1 < Tk = 2) gives the same row.
    o = kernel(q[:, :, 1:], k, v)[0, 0]
    torch.testing.assert_close(o[0], torch.tensor([7.0, 3.0, 2.0, 2.0]))


@pytest.mark.parametrize("kernel", [naive_attention, sdpa_attention])
@pytest.mark.parametrize("Tq", [6, 3])
def test_causal(kernel, Tq):
    """Changing the last key/value changes only the last query's output."""
    q, k, v, _ = _inputs(4, 2, Tq, 6)
    with torch.no_grad():
        o = kernel(q, k, v)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, -1] += 1.0
        v2[:, :, -1] -= 2.0
        o2 = kernel(q, k2, v2)
    torch.testing.assert_close(o2[:, :, :-1], o[:, :, :-1], atol=0, rtol=0)
    assert (o2[:, :, -1] - o[:, :, -1]).abs().max() > 1e-2


@pytest.mark.parametrize("kernel", [naive_attention, sdpa_attention])
def test_bad_arguments(kernel):
    q, k, v, _ = _inputs(4, 2, 5, 3)
    with pytest.raises(ValueError, match=r"Tk=3 < queries Tq=5"):
        kernel(q, k, v)
    q, k, v, _ = _inputs(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"q has 4 heads, k and v 3: the key/value heads must divide"):
        kernel(q, k, v)
    with pytest.raises(ValueError, match=r"k, v have shapes .* expected \(B, n_kv_head, Tk, head_dim\)"):
        kernel(q, k, v[:, :, :2])
    q, k, v, _ = _inputs(4, 2, 3, 3)
    with pytest.raises(ValueError, match=r"key_padding_mask"):
        kernel(q, k, v, key_padding_mask=torch.ones(B, 3))  # float, not bool


def test_naive_keeps_input_dtype():
    q, k, v, _ = _inputs(2, 1, 3, 3)
    o = naive_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert o.dtype == torch.bfloat16
