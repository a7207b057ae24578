"""WKV (RWKV-4, arXiv 2305.13048): the parallel formula, the plain and the stable recurrences, the
chunked form and the Triton kernels agree (outputs, final states, gradients), the stable forms
survive keys that overflow exp() in float32, and states carry across calls."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rizzrun.kernels.wkv import NEG_INF, initial_state, wkv, wkv_step
from rizzrun.kernels.wkv.chunk import wkv_chunk
from rizzrun.kernels.wkv.naive import wkv_naive, wkv_unstable
from rizzrun.kernels.wkv.recurrent import wkv_recurrent

REPO = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-5, rtol=1e-5)


def inputs(B=2, T=40, C=16, seed=0, dtype=torch.float64, k_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=dtype) * k_scale
    v = torch.randn(B, T, C, generator=g, dtype=dtype)
    time_decay = torch.randn(C, generator=g, dtype=dtype) * 0.5 - 0.5  # w = exp(time_decay) in ~(0.1, 2)
    u = torch.randn(C, generator=g, dtype=dtype) * 0.5
    a = torch.randn(B, C, generator=g, dtype=dtype)
    b = torch.rand(B, C, generator=g, dtype=dtype) + 0.5
    p = torch.randn(B, C, generator=g, dtype=dtype)
    return time_decay, u, k, v, (a, b, p)


def sums(state):
    """The plain sums a e^p, b e^p a state stands for (float64)."""
    a, b, p = (s.double() for s in state)
    return a * p.exp(), b * p.exp()


def lse_reference(w, u, k, v):
    """eq. 16 as a softmax over the logits k_i - (t-1-i) w (i < t), u + k_t (i = t), in float64:
    an independent, overflow-free formulation."""
    w, u, k, v = (x.double() for x in (w, u, k, v))
    T = k.shape[1]
    t = torch.arange(T, dtype=torch.float64)
    gap = t[:, None] - 1 - t[None, :]
    logits = k[:, None] - gap[None, :, :, None] * w
    logits = torch.where((gap == -1)[None, :, :, None], (u + k)[:, None].expand_as(logits), logits)
    logits = logits.masked_fill((gap < -1)[None, :, :, None], -math.inf)
    return (logits.softmax(2) * v[:, None]).sum(2)


# --- forward: every form against the fp64 formula ----------------------------------------------------

@pytest.mark.parametrize("T", [1, 37, 128])
def test_naive_equals_unstable_equals_stable(T):
    td, u, k, v, state = inputs(T=T)
    w = td.exp()
    ref, ref_state = wkv_naive(w, u, k, v, state, output_final_state=True)
    unstable, unstable_state = wkv_unstable(w, u, k, v, state, output_final_state=True)
    torch.testing.assert_close(unstable, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lse_reference(w, u, k, v), wkv_naive(w, u, k, v)[0], atol=1e-12, rtol=1e-12)
    f32 = [x.float() for x in (w, u, k, v)]
    s32 = tuple(s.float() for s in state)
    for impl in ("recurrent", "chunk"):
        out, final = wkv(*f32, state=s32, output_final_state=True, impl=impl)
        assert out.dtype == torch.float32 and all(s.dtype == torch.float32 for s in final)
        torch.testing.assert_close(out.double(), ref, **TOL)
        for got, want in zip(sums(final), sums(unstable_state)):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 40, 64])
def test_chunk_sizes(chunk_size):
    td, u, k, v, state = inputs(T=40)
    w = td.exp()
    ref, ref_state = wkv_naive(w, u, k, v, state, output_final_state=True)
    out, final = wkv_chunk(w, u, k, v, state, output_final_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    for got, want in zip(sums(final), sums(ref_state)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_empty_state_is_no_state():
    td, u, k, v, _ = inputs(T=9)
    w = td.exp()
    empty = tuple(s.double() for s in initial_state(2, 16))
    assert torch.equal(initial_state(2, 16)[2], torch.full((2, 16), NEG_INF)) and not empty[0].any()
    for impl in ("naive", "recurrent", "chunk"):
        torch.testing.assert_close(wkv(w, u, k, v, state=empty, impl=impl)[0], wkv(w, u, k, v, impl=impl)[0])


def test_auto_is_chunk_on_cpu_and_bad_arguments():
    td, u, k, v, _ = inputs(T=9, dtype=torch.float32)
    w = td.exp()
    assert torch.equal(wkv(w, u, k, v)[0], wkv(w, u, k, v, impl="chunk")[0])
    with pytest.raises(ValueError, match="allowed: auto, naive, recurrent, chunk, triton"):
        wkv(w, u, k, v, impl="cuda")
    with pytest.raises(ValueError, match=r"w and u must be \(16,\)"):
        wkv(w[:3], u, k, v)


def test_low_precision_inputs_compute_in_fp32():
    td, u, k, v, _ = inputs(T=20, dtype=torch.float32)
    w = td.exp()
    ref = wkv(w, u, k.bfloat16().float(), v.bfloat16().float(), impl="recurrent")[0]
    for impl in ("recurrent", "chunk"):
        out = wkv(w, u, k.bfloat16(), v.bfloat16(), impl=impl)[0]
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


# --- overflow ---------------------------------------------------------------------------------------

def test_only_the_stable_forms_survive_large_keys():
    td, u, k, v, _ = inputs(B=1, T=24, C=16, seed=3, dtype=torch.float32)
    w = td.exp()
    k_big = 90 + 10 * torch.rand(k.shape, generator=torch.Generator().manual_seed(4))  # k in [90, 100)
    assert not torch.isfinite(wkv_naive(w, u, k_big, v)[0]).all()
    assert not torch.isfinite(wkv_unstable(w, u, k_big, v)[0]).all()
    ref = lse_reference(w, u, k_big, v)
    for impl in ("recurrent", "chunk"):
        out, state = wkv(w, u, k_big, v, output_final_state=True, impl=impl)
        assert all(torch.isfinite(x).all() for x in (out, *state))
        torch.testing.assert_close(out.double(), ref, **TOL)
    # a little lower, the sums stay below float32's 3.4e38 and the plain forms are right again
    k_mid = 78 + 2 * torch.rand(k.shape, generator=torch.Generator().manual_seed(5))
    for plain in (wkv_naive, wkv_unstable):
        torch.testing.assert_close(plain(w, u, k_mid, v)[0].double(), lse_reference(w, u, k_mid, v),
                                   atol=1e-4, rtol=1e-4)


def test_masked_keys_add_nothing():
    """A key of NEG_INF before the real keys (left padding) leaves the real rows unchanged."""
    td, u, k, v, _ = inputs(T=30, dtype=torch.float32)
    w = td.exp()
    k_pad = torch.cat([torch.full((2, 7, 16), NEG_INF), k], 1)
    v_pad = torch.cat([torch.randn(2, 7, 16) * 100, v], 1)
    for impl in ("recurrent", "chunk"):
        out, state = wkv(w, u, k_pad, v_pad, output_final_state=True, impl=impl)
        ref, ref_state = wkv(w, u, k, v, output_final_state=True, impl=impl)
        torch.testing.assert_close(out[:, 7:], ref, **TOL)
        for got, want in zip(sums(state), sums(ref_state)):
            torch.testing.assert_close(got, want, **TOL)


# --- gradients --------------------------------------------------------------------------------------

def _grads(impl, td, u, k, v, state, **kw):
    leaves = [x.detach().clone().requires_grad_() for x in (td, u, k, v, *state)]
    out, final = wkv(leaves[0].exp(), leaves[1], leaves[2], leaves[3], state=tuple(leaves[4:]),
                     output_final_state=True, impl=impl, **kw)
    g = torch.Generator().manual_seed(9)
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    ga, gb = (torch.randn(final[0].shape, generator=g, dtype=torch.float64).to(final[0]) for _ in range(2))
    # the final state enters the loss as the sums it stands for (as the next call uses it)
    loss = (out * gy).sum() + (final[0] * final[2].exp() * ga).sum() + (final[1] * final[2].exp() * gb).sum()
    return out, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_gradients_match_fp64_naive(impl):
    td, u, k, v, state = inputs(T=33)
    _, ref = _grads("naive", td, u, k, v, state)
    _, got = _grads(impl, td, u, k, v, state)
    for name, g, r in zip(("time_decay", "u", "k", "v", "a0", "b0", "p0"), got, ref):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-8, msg=f"d{name}")
    # fp32 chunk against the fp64 naive
    _, got32 = _grads(impl, *(x.float() for x in (td, u, k, v)), tuple(s.float() for s in state))
    for name, g, r in zip(("time_decay", "u", "k", "v", "a0", "b0", "p0"), got32, ref):
        torch.testing.assert_close(g.double(), r, **TOL, msg=f"d{name} fp32")


# --- state carry ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["naive", "recurrent", "chunk"])
def test_state_carry(impl):
    td, u, k, v, state = inputs(T=50, dtype=torch.float32)
    w = td.exp()
    whole, final = wkv(w, u, k, v, state=state, output_final_state=True, impl=impl)
    first, mid = wkv(w, u, k[:, :23], v[:, :23], state=state, output_final_state=True, impl=impl)
    second, final2 = wkv(w, u, k[:, 23:], v[:, 23:], state=mid, output_final_state=True, impl=impl)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, **TOL)
    for got, want in zip(sums(final2), sums(final)):
        torch.testing.assert_close(got, want, **TOL)


def test_step_by_step_equals_recurrent():
    td, u, k, v, state = inputs(T=20, dtype=torch.float32)
    w = td.exp()
    ref, ref_state = wkv_recurrent(w, u, k, v, state, output_final_state=True)
    s, outs = state, []
    for t in range(20):
        o, s = wkv_step(w, u, k[:, t], v[:, t], s)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), ref, atol=0, rtol=0)
    for got, want in zip(s, ref_state):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_chunk_long_sequence():
    """T = 4096 in blocks of 8 (no (T, T, C) tensor): the last rows equal the stable recurrence
    run over the tail from the state the chunked form carried to it."""
    B, T, C = 1, 4096, 8
    k, v = torch.randn(B, T, C), torch.randn(B, T, C)
    out, state = wkv_chunk(torch.ones(C), torch.zeros(C), k, v, output_final_state=True)
    torch.testing.assert_close(out[:, -5:], wkv_recurrent(torch.ones(C), torch.zeros(C), k[:, -40:], v[:, -40:],
                                                          state=_state_at(k, v, T - 40))[0][:, -5:], **TOL)


def _state_at(k, v, t):
    C = k.shape[-1]
    return wkv_chunk(torch.ones(C), torch.zeros(C), k[:, :t], v[:, :t], output_final_state=True)[1]


# --- Triton -----------------------------------------------------------------------------------------

def test_import_does_not_import_triton():
    code = ("import sys; import rizzrun.kernels.wkv; "
            "assert 'triton' not in sys.modules and 'torch' not in sys.modules, 'triton/torch imported'")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def interpreted_triton(monkeypatch):
    """rizzrun.kernels.wkv.triton imported under TRITON_INTERPRET=1 (runs on the CPU)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    saved = sys.modules.pop("rizzrun.kernels.wkv.triton", None)
    try:
        yield importlib.import_module("rizzrun.kernels.wkv.triton")
    finally:
        sys.modules.pop("rizzrun.kernels.wkv.triton", None)
        if saved is not None:
            sys.modules["rizzrun.kernels.wkv.triton"] = saved


def test_triton_interpreted_matches_chunk(interpreted_triton):
    td, u, k, v, state = inputs(B=2, T=24, C=12, seed=5, dtype=torch.float32)
    ref_out, ref = _grads("chunk", td, u, k, v, state)
    out, got = _grads("triton", td, u, k, v, state)
    torch.testing.assert_close(out, ref_out, **TOL)
    for name, g, r in zip(("time_decay", "u", "k", "v", "a0", "b0", "p0"), got, ref):
        torch.testing.assert_close(g, r, **TOL, msg=f"d{name}")
    # no state in, large keys: still finite and equal to the overflow-free reference
    w = td.exp()
    out, _ = wkv(w, u, k + 95, v, impl="triton")
    torch.testing.assert_close(out.double(), lse_reference(w, u, k + 95, v), **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_cuda_matches_recurrent():
    td, u, k, v, state = (x.cuda() if torch.is_tensor(x) else tuple(s.cuda() for s in x)
                          for x in inputs(B=3, T=300, C=200, seed=6, dtype=torch.float32))
    ref_out, ref = _grads("recurrent", td, u, k, v, state)
    out, got = _grads("triton", td, u, k, v, state)
    torch.testing.assert_close(out, ref_out, **TOL)
    for name, g, r in zip(("time_decay", "u", "k", "v", "a0", "b0", "p0"), got, ref):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4, msg=f"d{name}")
    # bf16 inputs: compared with the RMS-ratio metric of the attention README
    w = td.exp()
    lo = wkv(w, u, k.bfloat16(), v.bfloat16(), impl="triton")[0].float()
    hi = wkv(w, u, k.bfloat16().float(), v.bfloat16().float(), impl="recurrent")[0]
    assert ((lo - hi).norm() / hi.norm()).item() <= 5e-3
    try:
        from fla.ops.rwkv4 import fused_recurrent_rwkv4
    except ImportError:
        return
    # fla takes the log-decay time_decay (it applies w = -exp(w)) and a packed state (B, 3, 1, C)
    with torch.no_grad():
        fla_out, _ = fused_recurrent_rwkv4(td, u, k, v, torch.stack(state, 1).unsqueeze(2).contiguous())
    torch.testing.assert_close(fla_out, ref_out, atol=1e-4, rtol=1e-4)
