"""Lightning Attention-2 (arXiv 2401.04658), `rizzrun.kernels.lightning`: the naive, recurrent,
chunked and Triton forms against each other and an fp64 reference (spec lightning.md section 7,
methods README equivalences 1-5), the decay tables against hand-derived numbers, and the op
against flash-linear-attention's simple-GLA references (lightning = simple GLA, g = log lambda)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rizzrun.kernels.lightning import lightning_attn, lightning_decay, lightning_step
from rizzrun.kernels.lightning.decay import alibi_slopes

REPO = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-5, rtol=1e-5)
B, T, H, D, E = 2, 200, 3, 32, 32  # T divisible by none of 3, 16, 64
# lambda = 1 (head 0, the unbounded running sum), a slow and a fast decay.
LOG_DECAY = torch.tensor([0.0, -0.05, -1.0], dtype=torch.float64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The chunk and recurrent forms run hundreds of tiny matmuls; on a busy 2-core machine each
    multi-threaded one waited ~10 ms in OpenMP barriers (seconds per test), on one thread ~10 us."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(t=T, b=B, h=H, d=D, e=E, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, t, h, d, generator=g, dtype=torch.float64) * 0.1 for _ in range(2))
    v = torch.randn(b, t, h, e, generator=g, dtype=torch.float64) * 0.1
    s0 = torch.randn(b, h, d, e, generator=g, dtype=torch.float64) * 0.1
    return [x.to(dtype) for x in (q, k, v, s0)]


@pytest.fixture(scope="module")
def reference():
    """fp64 naive-form outputs, final state and gradients (autograd) of a fixed weighted loss."""
    q, k, v, s0 = (x.requires_grad_() for x in _inputs())
    o, final = lightning_attn(q, k, v, LOG_DECAY, scale=0.5, initial_state=s0, output_final_state=True,
                              impl="naive")
    g = torch.Generator().manual_seed(1)
    w_o, w_s = torch.randn(o.shape, generator=g, dtype=o.dtype), torch.randn(final.shape, generator=g, dtype=o.dtype)
    grads = torch.autograd.grad((o * w_o).sum() + (final * w_s).sum(), (q, k, v, s0))
    return {"o": o.detach(), "final": final.detach(), "grads": grads, "w_o": w_o, "w_s": w_s}


def _run(impl, dtype, chunk_size=64, grads=False, ref=None):
    q, k, v, s0 = (x.requires_grad_(grads) for x in _inputs(dtype=dtype))
    o, final = lightning_attn(q, k, v, LOG_DECAY.to(dtype), scale=0.5, initial_state=s0,
                              output_final_state=True, chunk_size=chunk_size, impl=impl)
    if not grads:
        return o, final, None
    loss = (o.double() * ref["w_o"]).sum() + (final.double() * ref["w_s"]).sum()
    return o, final, torch.autograd.grad(loss, (q, k, v, s0))


# --- 1. naive == recurrent == chunk ----------------------------------------------------------

@pytest.mark.parametrize("impl,chunk_size", [("recurrent", 64)] + [("chunk", c) for c in (1, 3, 16, 64, T)])
def test_forms_match_fp64_naive(reference, impl, chunk_size):
    o, final, _ = _run(impl, torch.float32, chunk_size)
    assert o.dtype == torch.float32 and final.dtype == torch.float32
    torch.testing.assert_close(o.double(), reference["o"], **TOL)
    torch.testing.assert_close(final.double(), reference["final"], **TOL)


def test_fp64_forms_agree_to_rounding(reference):
    for impl, c in (("recurrent", 64), ("chunk", 3), ("chunk", 64)):
        o, final, _ = _run(impl, torch.float64, c)
        torch.testing.assert_close(o, reference["o"], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(final, reference["final"], atol=1e-12, rtol=1e-12)


# --- 2. custom backward (Algorithm 2) == autograd through the naive form ----------------------

@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64, T])
def test_chunk_backward_matches_naive_autograd(reference, chunk_size):
    """dq, dk, dv and d initial_state, with gradient flowing into both o and the final state."""
    _, _, grads = _run("chunk", torch.float32, chunk_size, grads=True, ref=reference)
    for name, got, want in zip(("dq", "dk", "dv", "d_initial_state"), grads, reference["grads"]):
        torch.testing.assert_close(got.double(), want, **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_chunk_backward_fp64_exact(reference):
    _, _, grads = _run("chunk", torch.float64, 16, grads=True, ref=reference)
    for got, want in zip(grads, reference["grads"]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_log_decay_gradient_naive_equals_recurrent():
    """d(decay) by autograd through two formulations; chunk/triton refuse a learnable lambda."""
    q, k, v, s0 = _inputs(t=20, h=3, d=4, e=5)
    grads = []
    for impl in ("naive", "recurrent"):
        g = LOG_DECAY.clone().requires_grad_()
        o, final = lightning_attn(q, k, v, g, initial_state=s0, output_final_state=True, impl=impl)
        grads.append(torch.autograd.grad(o.sum() + final.sum(), g)[0])
    assert grads[0].abs().min() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="no gradient"):
        lightning_attn(q, k, v, LOG_DECAY.clone().requires_grad_(), impl="chunk")


# --- 3. streaming and 4. decode --------------------------------------------------------------

@pytest.mark.parametrize("impl", ["chunk", "naive", "recurrent"])
def test_streaming_equals_full_sequence(impl):
    q, k, v, s0 = _inputs(t=100, dtype=torch.float32)
    kw = dict(scale=0.5, output_final_state=True, chunk_size=16, impl=impl)
    o, final = lightning_attn(q, k, v, LOG_DECAY.float(), initial_state=s0, **kw)
    m = 37  # not a multiple of the chunk size
    o1, s1 = lightning_attn(q[:, :m], k[:, :m], v[:, :m], LOG_DECAY.float(), initial_state=s0, **kw)
    o2, s2 = lightning_attn(q[:, m:], k[:, m:], v[:, m:], LOG_DECAY.float(), initial_state=s1, **kw)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o, **TOL)
    torch.testing.assert_close(s2, final, **TOL)


def test_decode_steps_equal_prefill_at_every_position():
    q, k, v, _ = _inputs(t=50, dtype=torch.float32)
    g = LOG_DECAY.float()
    prefill, final = lightning_attn(q, k, v, g, scale=0.5, output_final_state=True, chunk_size=16, impl="chunk")
    state = None
    for t in range(q.shape[1]):
        before = None if state is None else state.clone()
        o_t, new = lightning_step(q[:, t], k[:, t], v[:, t], g, state, scale=0.5)
        if state is not None:
            assert torch.equal(state, before), "lightning_step modified its input state"
        assert new.dtype == torch.float32 and new.shape == (B, H, D, E)
        torch.testing.assert_close(o_t, prefill[:, t], **TOL)
        state = new
    torch.testing.assert_close(state, final, **TOL)


# --- 5. degenerate decays --------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["naive", "recurrent", "chunk"])
def test_lambda_one_is_cumsum_linear_attention(impl):
    q, k, v, _ = _inputs(t=40)
    o, _ = lightning_attn(q, k, v, torch.zeros(H, dtype=torch.float64), chunk_size=16, impl=impl)
    states = torch.cumsum(k[..., :, None] * v[..., None, :], dim=1)  # (B, T, H, D, E)
    torch.testing.assert_close(o, torch.einsum("bthd,bthde->bthe", q, states), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("log_lambda", [-math.inf, -60.0])
@pytest.mark.parametrize("impl", ["naive", "recurrent", "chunk"])
def test_lambda_zero_keeps_only_the_current_token(impl, log_lambda):
    q, k, v, s0 = _inputs(t=40)
    o, final = lightning_attn(q, k, v, torch.full((H,), log_lambda, dtype=torch.float64), initial_state=s0,
                              output_final_state=True, chunk_size=16, impl=impl)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, (q * k).sum(-1, keepdim=True) * v, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, k[:, -1, :, :, None] * v[:, -1, :, None, :], atol=1e-12, rtol=1e-12)


# --- fla's simple-GLA references ---------------------------------------------------------------

def _fla_naive():
    """fla's `fla/ops/simple_gla/naive.py` (torch + einops only). Loaded from its file: `import fla`
    first builds every Triton op module of the package (~10 s on two cores)."""
    path = importlib.metadata.distribution("fla-core").locate_file("fla/ops/simple_gla/naive.py")
    spec = importlib.util.spec_from_file_location("fla_simple_gla_naive", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matches_fla_simple_gla_naive_forms():
    """fla computes in fp32, layout (B, T, H, *), gate g (B, T, H) per token, scale default D^-0.5."""
    fla = _fla_naive()
    q, k, v, s0 = _inputs(t=45, d=16, e=8, dtype=torch.float32)
    log_decay = LOG_DECAY.float()
    gate = log_decay.expand(q.shape[0], q.shape[1], H).contiguous()
    o, final = lightning_attn(q, k, v, log_decay, scale=0.3, initial_state=s0, output_final_state=True,
                              chunk_size=16, impl="chunk")
    o_rec, s_rec = fla.naive_recurrent_simple_gla(q, k, v, gate, initial_state=s0.clone(), output_final_state=True,
                                                  scale=0.3)
    o_chk, s_chk = fla.naive_chunk_simple_gla(q, k, v, gate, initial_state=s0.clone(), output_final_state=True,
                                              chunk_size=16, scale=0.3)
    for got, want in ((o, o_rec), (final, s_rec), (o, o_chk), (final, s_chk)):
        torch.testing.assert_close(got, want, **TOL)
    # fla's default scale is D^-0.5 (ours is 1); its parallel form has no initial state.
    o_par, _ = fla.naive_parallel_simple_gla(q, k, v, gate)
    o0, _ = lightning_attn(q, k, v, log_decay, scale=q.shape[-1] ** -0.5, impl="chunk")
    torch.testing.assert_close(o0, o_par, **TOL)


# --- 6. decay tables -------------------------------------------------------------------------

def test_decay_table_golden_values():
    slopes = [2.0 ** -i for i in range(1, 9)]  # H = 8: 2^-1 ... 2^-8
    assert alibi_slopes(8) == slopes
    bottom, top = lightning_decay(8, 0, 12), lightning_decay(8, 11, 12)
    assert bottom == pytest.approx([-s * (1 + 1e-5) for s in slopes], rel=1e-12)
    assert top == pytest.approx([-s * 1e-5 for s in slopes], rel=1e-9)  # top layer factor 1e-5
    assert lightning_decay(8, 4, 9) == pytest.approx([-s * (0.5 + 1e-5) for s in slopes], rel=1e-12)
    # ALiBi interleave, H = 6: slopes of 4 heads, then every other slope of 8 heads.
    assert alibi_slopes(6) == pytest.approx([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3], rel=1e-12)
    assert alibi_slopes(12)[8:] == pytest.approx([2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5], rel=1e-12)
    # fla_literal: -(8/H)(1 - l/L) h, h = 0..H-1; head 0 never decays.
    assert lightning_decay(4, 1, 4, "fla_literal") == pytest.approx([0.0, -1.5, -3.0, -4.5], abs=1e-12)
    # One layer: the lowest layer's rates (the official factor would divide by zero).
    assert lightning_decay(8, 0, 1) == bottom
    with pytest.raises(ValueError, match="layer_idx"):
        lightning_decay(8, 3, 3)
    with pytest.raises(ValueError, match="schedule"):
        lightning_decay(8, 0, 3, "retnet")


def test_imports_decay_without_torch_and_package_without_triton():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(REPO / 'kernels/lightning/decay.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.lightning_decay(4, 0, 2) and 'torch' not in sys.modules, 'decay.py imported torch'\n"
        "import rizzrun.kernels.lightning as L\n"
        "out = L.lightning_attn(*[L.torch.zeros(1, 3, 1, 2)] * 3, L.torch.zeros(1))[0]\n"
        "assert 'triton' not in sys.modules, 'importing and running on CPU imported triton'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


# --- dispatch and contract -------------------------------------------------------------------

def test_auto_is_chunk_on_cpu_and_dtypes():
    q, k, v, s0 = _inputs(t=30, dtype=torch.bfloat16)
    g = LOG_DECAY.float()
    auto = lightning_attn(q, k, v, g, initial_state=s0, output_final_state=True)
    chunk = lightning_attn(q, k, v, g, initial_state=s0, output_final_state=True, impl="chunk")
    assert torch.equal(auto[0], chunk[0]) and torch.equal(auto[1], chunk[1])
    assert auto[0].dtype == torch.bfloat16 and auto[1].dtype == torch.float32
    assert lightning_attn(q, k, v, g)[1] is None


def test_bad_arguments_are_refused(monkeypatch):
    q, k, v, _ = _inputs(t=8, dtype=torch.float32)
    g = LOG_DECAY.float()
    with pytest.raises(ValueError, match=r"expected \(B, T, H, E\)"):
        lightning_attn(q, k, v[:, :4], g)
    with pytest.raises(ValueError, match=r"shape \(H,\)"):
        lightning_attn(q, k, v, g[:2])
    with pytest.raises(ValueError, match="<= 0"):
        lightning_attn(q, k, v, -g)
    with pytest.raises(ValueError, match="initial_state"):
        lightning_attn(q, k, v, g, initial_state=torch.zeros(B, H, D, D + 1))
    with pytest.raises(ValueError, match="impl="):
        lightning_attn(q, k, v, g, impl="flash")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA"):
        lightning_attn(q, k, v, g, impl="triton")


# --- Triton kernels, on a CPU under TRITON_INTERPRET=1 ----------------------------------------

_TRITON_SCRIPT = r"""
import json, torch
from rizzrun.kernels.lightning import lightning_attn
torch.manual_seed(0)
errors = {}
for name, (b, t, h, d, e, with_state) in {"state": (1, 40, 2, 16, 16, True),
                                          "ragged": (2, 37, 2, 12, 20, False)}.items():
    q, k = (torch.randn(b, t, h, d) * 0.5 for _ in range(2))
    v, s0 = torch.randn(b, t, h, e) * 0.5, torch.randn(b, h, d, e) * 0.5
    g = torch.tensor([-0.1, -1.0])
    w_o, w_s = torch.randn(b, t, h, e), torch.randn(b, h, d, e)
    def run(impl):
        ins = [x.clone().requires_grad_() for x in ((q, k, v, s0) if with_state else (q, k, v))]
        o, s = lightning_attn(*ins[:3], g, scale=0.7, initial_state=ins[3] if with_state else None,
                              output_final_state=True, chunk_size=16, impl=impl)
        return [o, s, *torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), ins)]
    errors[name] = [(x - y).abs().max().item() / (1 + y.abs().max().item()) for x, y in zip(run("triton"), run("chunk"))]
print(json.dumps(errors))
"""


def test_triton_kernels_match_chunk_under_interpreter():
    """Forward, final state and every gradient; in a subprocess because TRITON_INTERPRET is read
    when `triton.jit` decorates the kernels (at import)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(errors["state"]) == 6 and len(errors["ragged"]) == 5
    for name, errs in errors.items():
        assert max(errs) < 1e-5, f"{name}: relative max errors (o, state, dq, dk, dv[, ds0]) {errs}"


def _rms_ratio(x, y):
    return ((x.float() - y.float()).norm() / y.float().norm()).item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels need a CUDA GPU")
def test_triton_cuda_bf16_rms_ratio_and_fp32():
    """Spec section 7.7: bf16 Triton vs the fp64 chunk form on the same (bf16-rounded) inputs, fla's
    metric ||x - y|| / ||y|| <= 5e-3 for o, final state and every gradient; then fp32 Triton within
    1e-5 of fp64 on a small problem (inputs ~0.1)."""
    names = ("o", "state", "dq", "dk", "dv", "d_initial_state")

    def run(impl, inputs, dtype, g):
        ins = [x.to(dtype).requires_grad_() for x in inputs]
        o, s = lightning_attn(*ins[:3], g, initial_state=ins[3], output_final_state=True, impl=impl)
        w = torch.Generator(device="cuda").manual_seed(1)
        w_o = torch.randn(o.shape, generator=w, device="cuda", dtype=torch.float64)
        return [o, s, *torch.autograd.grad((o.double() * w_o).sum() + s.double().sum(), ins)]

    torch.manual_seed(0)
    b, t, h, d, e = 2, 1000, 4, 64, 64
    g = torch.tensor(lightning_decay(h, 0, 2), device="cuda")
    inputs = [torch.randn(*shape, device="cuda").bfloat16() * 0.5
              for shape in ((b, t, h, d), (b, t, h, d), (b, t, h, e), (b, h, d, e))]
    got, ref = run("triton", inputs, torch.bfloat16, g), run("chunk", inputs, torch.float64, g)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    for name, x, y in zip(names, got, ref):
        assert _rms_ratio(x, y) <= 5e-3, f"{name}: rms ratio {_rms_ratio(x, y):.2e}"

    b, t, h, d, e = 2, 200, 3, 32, 32
    g = LOG_DECAY.float().cuda()
    inputs = [x.cuda() for x in _inputs(dtype=torch.float32)]
    for name, x, y in zip(names, run("triton", inputs, torch.float32, g), run("chunk", inputs, torch.float64, g)):
        torch.testing.assert_close(x.double(), y, **TOL, msg=lambda m, n=name: f"{n}: {m}")
