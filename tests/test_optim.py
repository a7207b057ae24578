"""AdamW parameter groups and the warmup schedules, against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rizzrun.optim import adamw, constant, warmup_cosine


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)  # weight decays, bias does not
        self.norm = nn.LayerNorm(4)  # weight and bias: no decay
        self.gain = nn.Parameter(torch.ones(4))  # an RMSNorm-style gain
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: must appear once
        self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)


def _ids(params):
    return {id(p) for p in params}


def test_param_groups_membership():
    m = Tiny()
    opt = adamw(m, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == _ids([m.emb.weight, m.proj.weight])
    assert _ids(no_decay["params"]) == _ids([m.proj.bias, m.norm.weight, m.norm.bias, m.gain])
    assert len(decay["params"]) == 2  # the tied matrix once; the frozen one not at all
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8


def test_betas_from_a_config_list():
    import omegaconf
    opt = adamw(Tiny(), betas=omegaconf.OmegaConf.create([0.8, 0.99]))
    assert opt.defaults["betas"] == (0.8, 0.99)


def test_decay_applied_only_to_matrices():
    # With zero gradients Adam's step is 0, so one update just multiplies decayed parameters by
    # (1 - lr * wd) = 1 - 0.5 * 0.2 = 0.9 (decoupled decay) and leaves the others untouched.
    m = Tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(2.0)
    opt = adamw(m, lr=0.5, weight_decay=0.2)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(m.proj.weight, torch.full((4, 4), 1.8))
    assert torch.allclose(m.emb.weight, torch.full((10, 4), 1.8))
    for p in (m.proj.bias, m.norm.weight, m.norm.bias, m.gain):
        assert torch.equal(p, torch.full((4,), 2.0))


def test_iterable_of_params_and_empty_group():
    w, b = nn.Parameter(torch.zeros(3, 2)), nn.Parameter(torch.zeros(2))
    opt = adamw(iter([w, b, w]), lr=1e-3)
    assert _ids(opt.param_groups[0]["params"]) == {id(w)} and _ids(opt.param_groups[1]["params"]) == {id(b)}
    only_vectors = adamw([b])
    assert len(only_vectors.param_groups) == 2 and only_vectors.param_groups[0]["params"] == []


def _lrs(make_sched, steps, base_lr=0.01):
    opt = adamw([nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))], lr=base_lr)
    sched = make_sched(opt)
    out = {}
    for k in range(1, steps + 1):  # k-th optimizer update
        lrs = {g["lr"] for g in opt.param_groups}
        assert len(lrs) == 1, "both groups must follow the schedule"
        out[k] = lrs.pop() / base_lr
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_hand_computed():
    # W=4, N=12, m=0.1: warmup k/4, then 0.1 + 0.45 * (1 + cos(pi * (k - 4) / 8)).
    f = _lrs(lambda o: warmup_cosine(o, warmup_steps=4, total_steps=12, min_lr_ratio=0.1), 20)
    expected = {
        1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0,
        5: 0.9657457896,   # cos(pi/8) = 0.9238795325
        6: 0.8681980515,   # cos(pi/4) = 0.7071067812
        8: 0.55,           # cos(pi/2) = 0
        10: 0.2318019485,  # cos(3pi/4)
        11: 0.1342542104,  # cos(7pi/8)
        12: 0.1, 13: 0.1, 20: 0.1,
    }
    for k, v in expected.items():
        assert f[k] == pytest.approx(v, abs=1e-9), k


def test_warmup_cosine_edges():
    # no warmup, decay to 0 over 4 updates: 0.5 * (1 + cos(pi * k / 4))
    f = _lrs(lambda o: warmup_cosine(o, warmup_steps=0, total_steps=4, min_lr_ratio=0.0), 6)
    assert [round(f[k], 9) for k in range(1, 7)] == [0.853553391, 0.5, 0.146446609, 0.0, 0.0, 0.0]
    # warmup only (W == N): rises to the peak at update N, then the floor
    f = _lrs(lambda o: warmup_cosine(o, warmup_steps=3, total_steps=3, min_lr_ratio=0.2), 5)
    assert [round(f[k], 9) for k in range(1, 6)] == [0.333333333, 0.666666667, 1.0, 0.2, 0.2]


def test_default_warmup_adapts_to_a_short_run():
    # warmup_steps=None: W = min(50, N // 8). N=20 -> W=2, m=0.1: f = k/2 up to k=2, then
    # 0.1 + 0.45 * (1 + cos(pi * (k - 2) / 18)).
    f = _lrs(lambda o: warmup_cosine(o, total_steps=20, min_lr_ratio=0.1), 22)
    expected = {1: 0.5, 2: 1.0,
                8: 0.775,   # cos(pi/3) = 0.5
                11: 0.55,   # cos(pi/2) = 0
                14: 0.325,  # cos(2pi/3) = -0.5
                20: 0.1, 22: 0.1}
    for k, v in expected.items():
        assert f[k] == pytest.approx(v, abs=1e-9), k
    # From N=400 on the cap, 50 steps, is the warmup (the demo's schedule is the old default's).
    f = _lrs(lambda o: warmup_cosine(o, total_steps=400, min_lr_ratio=0.1), 51)
    assert (f[1], f[25], f[50]) == pytest.approx((1 / 50, 0.5, 1.0), abs=1e-12) and f[51] < 1.0
    # N < 8: no warmup at all; the first update already decays: 0.5 * (1 + cos(pi / 7)), m=0.
    f = _lrs(lambda o: warmup_cosine(o, total_steps=7, min_lr_ratio=0.0), 1)
    assert f[1] == pytest.approx(0.5 * (1 + 0.9009688679), abs=1e-9)


def test_config_default_warmup_reaches_the_schedule():
    # The shipped cosine option leaves warmup_steps null: trainer.max_steps=20 gives W=2.
    from hydra.utils import instantiate

    from rizzrun.config import load

    cfg = load(["+recipe=tiny", "trainer.max_steps=20"])
    assert cfg.scheduler.warmup_steps is None and cfg.scheduler.total_steps == 20
    f = _lrs(lambda o: instantiate(cfg.scheduler)(o), 11)
    assert (f[1], f[2], f[11]) == pytest.approx((0.5, 1.0, 0.55), abs=1e-9)


def test_constant_schedule():
    f = _lrs(lambda o: constant(o, warmup_steps=3), 6)
    assert [round(f[k], 9) for k in range(1, 7)] == [0.333333333, 0.666666667, 1.0, 1.0, 1.0, 1.0]
    f = _lrs(lambda o: constant(o), 3)
    assert list(f.values()) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=0.0), "lr=0.0"),
        (dict(lr=-1e-3), "lr=-0.001"),
        (dict(lr=float("nan")), "lr=nan"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1"),
        (dict(betas=(0.9, 1.0)), r"betas=\(0.9, 1.0\)"),
        (dict(betas=(0.9,)), r"betas=\(0.9,\)"),
        (dict(betas=0.9), "betas=0.9"),
        (dict(eps=0.0), "eps=0.0"),
    ],
)
def test_adamw_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adamw(Tiny(), **kwargs)


def test_adamw_needs_trainable_params():
    with pytest.raises(ValueError, match="requires_grad"):
        adamw([nn.Parameter(torch.zeros(2), requires_grad=False)])
    with pytest.raises(ValueError, match="model_or_params"):
        adamw(3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(warmup_steps=-1), "warmup_steps=-1"),
        (dict(warmup_steps=2.5), "warmup_steps=2.5"),
        (dict(total_steps=0), "total_steps=0"),
        (dict(warmup_steps=11, total_steps=10), "warmup_steps=11.*total_steps=10"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio=1.5"),
        (dict(min_lr_ratio=-0.1), "min_lr_ratio=-0.1"),
    ],
)
def test_schedule_argument_errors(kwargs, match):
    opt = adamw(Tiny())
    with pytest.raises(ValueError, match=match):
        warmup_cosine(opt, **kwargs)
    if set(kwargs) == {"warmup_steps"}:
        with pytest.raises(ValueError, match=match):
            constant(opt, **kwargs)
