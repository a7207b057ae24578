"""rizzrun.fp8 (arXiv 2409.12517): spec smooth_swiglu.md section 7 items 1-6, README equivalences 11-13."""

import io

import pytest
import torch
import torch.nn.functional as F

from rizzrun.fp8 import (E4M3, E4M3_MAX, E5M2, E5M2_MAX, AdamWFP8, DelayedScale, SmoothSwiGLU, absorb_smoothing,
                         adamw_fp8, current_scale, fake_quant, grad_fake_quant, saturating_cast, smoothing_scale,
                         unclamped_e4m3_cast)
import rizzrun.fp8.casts as casts
from rizzrun.models.llama import SwiGLU

D, FF, T = 16, 32, 24


def swiglu64(mlp, x):
    """fp64 reference y = W3 (W1 x * silu(W2 x))."""
    x, w1, w2, w3 = (t.double() for t in (x, mlp.up.weight, mlp.gate.weight, mlp.down.weight))
    return ((x @ w1.T) * F.silu(x @ w2.T)) @ w3.T


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---- 1. identity without quantisation (equivalence 11) ---------------------------------------------

@pytest.mark.parametrize("scale_from", ["h", "up"])
def test_smoothing_without_quantisation_is_swiglu(scale_from):
    torch.manual_seed(0)
    mlp = SmoothSwiGLU(D, FF, scale_from=scale_from)
    x = torch.randn(2, T, D)
    ref = swiglu64(mlp, x)
    s_random = torch.exp(3 * torch.randn(FF))  # s spans ~1e-4 .. 1e4
    for s in (None, s_random):
        y = mlp.smooth_forward(x, s, quantize=False)
        torch.testing.assert_close(y.double(), ref, atol=1e-6, rtol=1e-6)
    # fp8=False is SwiGLU itself, with the same state_dict keys both ways.
    plain = SwiGLU(D, FF)
    plain.load_state_dict(mlp.state_dict())
    assert torch.equal(mlp(x), plain(x))
    SmoothSwiGLU(D, FF, fp8=True).load_state_dict(plain.state_dict())


def test_smoothing_scale_is_inverse_channel_max():
    h = torch.tensor([[[1.0, -4.0, 0.0]], [[-2.0, 0.5, 0.0]]])  # (B=2, T=1, F=3)
    s = smoothing_scale(h)
    assert torch.equal(s, torch.tensor([0.5, 0.25, 1e12]))
    assert (h * s).abs().reshape(-1, 3).amax(0)[:2].tolist() == [1.0, 1.0]
    assert not smoothing_scale(h.requires_grad_()).requires_grad


# ---- 2. absorption -------------------------------------------------------------------------------

def test_absorbed_static_scale_equals_runtime_scaling():
    torch.manual_seed(1)
    mlp = SmoothSwiGLU(D, FF)
    x = torch.randn(T, D)
    s = torch.exp(2 * torch.randn(FF))
    runtime = mlp.smooth_forward(x, s, quantize=False)
    folded = SwiGLU(D, FF)
    folded.load_state_dict(mlp.state_dict())
    absorb_smoothing(folded, s)
    torch.testing.assert_close(folded(x), runtime, atol=1e-6, rtol=1e-6)
    # The folded module's product is s * h, so its FP8 input to W3 is the smoothed tensor.
    h = mlp.up(x) * F.silu(mlp.gate(x))
    torch.testing.assert_close(folded.up(x) * F.silu(folded.gate(x)), h * s, atol=1e-6, rtol=1e-6)


# ---- 3. outlier robustness under delayed scaling -------------------------------------------------

def aligned_mlp(smooth, scale_from="h", d=64, f=128, gain=2.0):
    """An FP8 MLP whose W1/W2 rows 3 and 17 are aligned with u (entries +-1): h is quadratic along u."""
    torch.manual_seed(0)
    mlp = SmoothSwiGLU(d, f, fp8=True, smooth=smooth, scale_from=scale_from)
    u = torch.randint(0, 2, (d,)).float() * 2 - 1
    with torch.no_grad():
        for c in (3, 17):
            mlp.gate.weight[c] = mlp.up.weight[c] = gain * u / d ** 0.5
    x = torch.randn(64, d)
    clean = x - (x @ u)[:, None] * u / d  # nothing along u
    outlier = clean.clone()
    outlier[:2] = u  # same element range as the clean batch, aligned with the two channels
    return mlp, clean, outlier


def test_outliers_saturate_plain_fp8_but_not_smooth_swiglu():
    errors = {}
    for smooth in (False, True):
        mlp, clean, outlier = aligned_mlp(smooth)
        h = lambda z: mlp.up(z) * F.silu(mlp.gate(z))
        with torch.no_grad():
            assert outlier.abs().max() <= clean.abs().max()  # the cast of x does not saturate
            assert h(outlier).abs().max() > 100 * h(clean).abs().max()  # the product does
            mlp.train()
            y_clean = mlp(clean)  # records the clean amax: the delayed scale of the next call
            y = mlp(outlier)
        ref = swiglu64(mlp, outlier)
        errors[smooth] = rel(y.double(), ref)
        errors[smooth, "clean"] = rel(y_clean.double(), swiglu64(mlp, clean))
        assert torch.isfinite(y).all()
        if not smooth:  # the delayed scale came from the clean batch: the outlier tokens hit +-448
            assert mlp.q_h.amax_history[1] * 100 < h(outlier).abs().max()
    assert errors[False] > 0.5
    # Smooth-SwiGLU: a few %, no worse than FP8 is on the clean batch (E4M3 keeps 3 mantissa bits).
    assert errors[True] < 0.05 and errors[True] <= 1.2 * errors[True, "clean"], errors


def test_with_an_unclamped_cast_plain_fp8_gives_nan_and_smooth_does_not(monkeypatch):
    """Torch < 2.13 (no clamp): the saturated outlier becomes NaN; Smooth-SwiGLU never exceeds the range."""
    clamped = casts.saturating_cast
    monkeypatch.setattr(casts, "saturating_cast",
                        lambda x, dtype: unclamped_e4m3_cast(x) if dtype == E4M3 else clamped(x, dtype))
    for smooth in (False, True):
        mlp, clean, outlier = aligned_mlp(smooth)
        with torch.no_grad():
            mlp.train()
            assert torch.isfinite(mlp(clean)).all()
            y = mlp(outlier)
        assert torch.isnan(y[:2]).all() if not smooth else rel(y.double(), swiglu64(mlp, outlier)) < 0.05


def test_scale_from_up_leaves_the_swish_branch_outlier():
    """Decision check for scale_from: the max of the linear branch does not remove the outlier of
    silu(gate(x)) when W1/W2 align, so the default is the max of h."""
    mlp, clean, outlier = aligned_mlp(True, scale_from="up")
    with torch.no_grad():
        mlp.train()
        mlp(clean)
        y = mlp(outlier)
    assert rel(y.double(), swiglu64(mlp, outlier)) > 0.5


def test_delayed_scale_uses_the_previous_amax():
    q = DelayedScale(E4M3, history=3, algo="max")
    x1, x2 = torch.tensor([2.0, -1.0]), torch.tensor([8.0, 1.0])
    torch.testing.assert_close(q(x1), fake_quant(x1, E4M3, E4M3_MAX / 2))  # first call: its own amax
    torch.testing.assert_close(q(x2), torch.tensor([2.0, 1.0]))  # scale from amax 2: 8 saturates at 2
    q(torch.tensor([1.0])), q(torch.tensor([1.0]))
    assert q.amax().item() == 8.0  # max over the last 3 steps
    q(torch.tensor([1.0]))
    assert q.amax().item() == 1.0  # 8 left the history
    recent = DelayedScale(E4M3, history=3, algo="most_recent")
    recent(torch.tensor([5.0])), recent(torch.tensor([3.0]))
    assert recent.amax().item() == 3.0
    recent.eval()
    recent(torch.tensor([100.0]))
    assert recent.amax().item() == 3.0 and recent.seen == 2  # eval does not record
    assert "amax_history" not in DelayedScale(E4M3, persistent=False).state_dict()


def test_fp8_statistics_are_checkpointed_and_a_swiglu_checkpoint_still_loads():
    """The delayed-scaling histories are in the fp8 module's state_dict, so a run restored from a
    checkpoint scales (and trains) bit-identically; an unquantised SwiGLU's state_dict loads into
    it with an empty history, and an fp8=False module keeps SwiGLU's keys exactly."""
    from rizzrun.models.llama import SwiGLU

    torch.manual_seed(0)
    mlp = SmoothSwiGLU(8, 16, fp8=True)
    mlp.reset_parameters(0.3, 0.3)
    batches = [torch.randn(4, 8) for _ in range(6)]
    for x in batches[:3]:
        mlp(x)
    saved = {k: t.clone() for k, t in mlp.state_dict().items()}
    assert "q_h.amax_history" in saved and int(saved["q_h.seen"]) == 3
    restored = SmoothSwiGLU(8, 16, fp8=True)
    restored.load_state_dict(saved)
    for x in batches[3:]:
        assert torch.equal(restored(x), mlp(x))  # same scales: same history

    plain = SwiGLU(8, 16)
    fresh = SmoothSwiGLU(8, 16, fp8=True)
    fresh.load_state_dict(plain.state_dict())  # no statistics in it: an empty history
    assert int(fresh.q_x.seen) == 0 and torch.equal(fresh.up.weight, plain.up.weight)
    assert set(SmoothSwiGLU(8, 16).state_dict()) == set(plain.state_dict())


# ---- 4. cast helpers (equivalence 12) --------------------------------------------------------------

@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_representable_values_round_trip(dtype):
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    finite = codes[torch.isfinite(codes)]
    assert saturating_cast(finite, dtype).float().equal(finite)
    for scale in (1.0, 2.0 ** -5, 2.0 ** 7):
        assert fake_quant(finite / scale, dtype, scale).equal(finite / scale)
    assert torch.isnan(saturating_cast(torch.tensor([float("nan")]), dtype).float()).all()


def test_e4m3_overflow_saturates():
    x = torch.tensor([449.0, 464.0, 465.0, 1e6, float("inf"), -500.0, -float("inf"), float("nan")])
    expect = [448.0, 448.0, 448.0, 448.0, 448.0, -448.0, -448.0]
    clamped = saturating_cast(x, E4M3).float()
    assert clamped[:-1].tolist() == expect and clamped[-1].isnan()  # every torch version
    if torch.__version__.startswith("2.13"):  # pinned release: the raw cast saturates too
        raw = x.to(E4M3).float()
        assert raw[:-1].tolist() == expect and raw[-1].isnan()
    old = unclamped_e4m3_cast(x).float()  # releases before 2.13: NaN past 464
    assert old[:2].tolist() == [448.0, 448.0] and old[2:].isnan().all()


def test_e5m2_overflow_is_inf_without_clamp():
    x = torch.tensor([61439.0, 61440.0, 1e6, -70000.0])
    assert x.to(E5M2).float().tolist() == [E5M2_MAX, float("inf"), float("inf"), -float("inf")]
    assert saturating_cast(x, E5M2).float().tolist() == [E5M2_MAX, E5M2_MAX, E5M2_MAX, -E5M2_MAX]


def test_current_scale():
    assert current_scale(torch.tensor(2.0), E4M3).item() == 224.0
    assert current_scale(torch.tensor(4.0), E5M2, margin=1).item() == E5M2_MAX / 8
    assert current_scale(torch.tensor(0.0), E4M3).item() == 1.0
    assert current_scale(torch.tensor(float("inf")), E4M3).item() == 1.0


# ---- 6. straight-through gradient ------------------------------------------------------------------

def test_ste_gradient_equals_unquantised_gradient_where_not_clipped():
    torch.manual_seed(2)
    x = (3 * torch.randn(50)).requires_grad_()
    c = torch.randn(50)
    scale = E4M3_MAX / 4.0  # |x| > 4 saturates
    (fake_quant(x, E4M3, scale) * c).sum().backward()
    inside = x.detach().abs() <= 4.0
    assert inside.any() and (~inside).any()
    assert x.grad[inside].equal(c[inside])  # d/dx of (x * c).sum()
    assert (x.grad[~inside] == 0).all()


def test_gradients_are_e5m2_fake_quantised():
    x = torch.zeros(4, requires_grad=True)
    g = torch.tensor([1.0, 1.1, -3e-3, 2.0])
    grad_fake_quant(x, E5M2).backward(g)
    scale = current_scale(g.abs().amax(), E5M2)
    assert x.grad.equal(saturating_cast(g * scale, E5M2).float() / scale)
    assert x.grad[1] != g[1]  # 1.1 is not an E5M2 value at this scale


def test_fp8_mlp_gradients_follow_fp32():
    torch.manual_seed(3)
    mlp = SmoothSwiGLU(D, FF, fp8=True)
    ref = SwiGLU(D, FF)
    ref.load_state_dict({k: t for k, t in mlp.state_dict().items() if "amax" not in k and "seen" not in k})
    x = torch.randn(T, D)
    w = torch.randn(T, D)
    (mlp(x) * w).sum().backward()
    (ref(x) * w).sum().backward()
    for name, p in ref.named_parameters():
        q = dict(mlp.named_parameters())[name].grad
        assert F.cosine_similarity(q.flatten(), p.grad.flatten(), dim=0) > 0.98, name


# ---- 5. AdamW with FP8 moments (equivalence 13) ---------------------------------------------------

def regression(opt_cls, steps, **kw):
    torch.manual_seed(0)
    X = torch.randn(256, 16) * torch.logspace(-1, 1, 16)  # feature scales 0.1 .. 10
    Y = X @ torch.randn(16, 4) + 0.1 * torch.randn(256, 4)
    torch.manual_seed(1)
    model = torch.nn.Linear(16, 4)
    opt = opt_cls(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, **kw)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, opt, torch.tensor(losses)


def test_fp8_adamw_tracks_fp32_adamw():
    ref, _, l32 = regression(torch.optim.AdamW, 1000)
    model, opt, l8 = regression(AdamWFP8, 1000)
    assert l32[-1] < 1e-3 * l32[0]  # it did converge (to the noise floor ~0.01)
    # FP8 rounding of m and sqrt(v) costs a few steps mid-run (the curves cross later), so the FP8 loss
    # at step k must be no worse than the fp32 loss at step k - (5 + 5% of k), and equal at the end
    # (fp32: 11.1 at step 200, FP8: 12.8 = fp32 about 4 steps earlier).
    k = torch.arange(len(l32))
    behind = l32[(k - (5 + k // 20)).clamp_min(0)]
    assert (l8 <= 1.01 * behind).all(), (l8 - behind).max()  # 1%: jitter at the noise floor
    assert abs(l8[-1] - l32[-1]) <= 0.01 * l32[-1]
    assert ((l8 - l32).abs()[:50] <= 0.02 * l32[:50]).all()
    torch.testing.assert_close(model.weight, ref.weight, rtol=0, atol=1e-2 * ref.weight.abs().max().item())
    state = opt.state[model.weight]
    assert state["exp_avg"].dtype == torch.float8_e4m3fn and state["exp_avg_sq_sqrt"].dtype == torch.float8_e5m2
    assert state["exp_avg"].element_size() == 1 and state["exp_avg_sq_sqrt"].shape == model.weight.shape


def test_fp8_adamw_state_dict_resume_is_bit_identical():
    model, opt, _ = regression(AdamWFP8, 20)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    def more(m, o):
        torch.manual_seed(5)
        X, Y = torch.randn(64, 16), torch.randn(64, 4)
        for _ in range(10):
            o.zero_grad()
            ((m(X) - Y) ** 2).mean().backward()
            o.step()

    resumed = torch.nn.Linear(16, 4)
    resumed.load_state_dict(saved["model"])
    ropt = AdamWFP8(resumed.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    ropt.load_state_dict(saved["opt"])
    state = ropt.state[resumed.weight]
    assert state["exp_avg"].dtype == E4M3 and state["exp_avg_sq_sqrt"].dtype == E5M2
    assert state["exp_avg_scale"].dtype == torch.float32
    more(model, opt)
    more(resumed, ropt)
    assert torch.equal(model.weight, resumed.weight) and torch.equal(model.bias, resumed.bias)


@pytest.mark.parametrize("store_sqrt_v", [True, False])
def test_second_moment_underflow(store_sqrt_v):
    """g = [1, 2^-17] then [1, 0]: storing v, v_2 (2^-34 of the max) flushes to 0 while m_2 survives in
    E4M3, so the next update is m / eps; storing sqrt(v) (2^-17 of its max) keeps it."""
    p = torch.zeros(2, requires_grad=True)
    lr = 1e-3
    opt = AdamWFP8([p], lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, store_sqrt_v=store_sqrt_v)
    for g in ([1.0, 2.0 ** -17], [1.0, 0.0]):
        p.grad = torch.tensor(g)
        before = p.detach().clone()
        opt.step()
    step2 = (p.detach() - before).abs()
    assert opt.state[p]["exp_avg"].float()[1] != 0
    if store_sqrt_v:
        assert step2[1] < 2 * lr
    else:
        assert step2[1] > 100 * lr


def test_adamw_fp8_factory_groups_like_rizzrun_adamw():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("conf/optimizer/adamw_fp8.yaml")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = instantiate(cfg)(model)
    assert isinstance(opt, AdamWFP8)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.weight_decay, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["lr"] == cfg.lr
    with pytest.raises(ValueError, match="lr"):
        adamw_fp8(model, lr=-1.0)
