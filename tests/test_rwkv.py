"""RWKV-4 (arXiv 2305.13048) as `model=rwkv`: RNN mode equals the parallel forward, states carry
across calls, left padding never enters the state, token shift and init follow the paper/code, the
runner trains it, `rizzrun generate` decodes from its run folder and `rizzrun export` refuses it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rizzrun.cli import main
from rizzrun.decoders.greedy import Greedy
from rizzrun.models.rwkv import RWKV, ChannelMix, mix, rwkv_init_vectors, token_shift
from rizzrun.models.rwkv_sizes import RWKV_SIZES, resolve_rwkv_dims
from rizzrun.runner.build import build_model, factories_for

pytestmark = pytest.mark.usefixtures("one_thread")

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
REPO = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-5, rtol=1e-5)
V = 40


def randomized(model: RWKV, seed: int = 0, scale: float = 0.3) -> RWKV:
    """Noise on every parameter: the code init zeroes the output projections, which would make
    the mixers invisible to any comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny(seed: int = 0, **kw) -> RWKV:
    torch.manual_seed(seed)
    return randomized(RWKV(V, d_model=16, n_layer=3, max_seq_len=128, **kw), seed).eval()


def ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- RNN mode == parallel mode -----------------------------------------------------------------------

@torch.no_grad()
def test_rnn_mode_equals_parallel_at_every_position():
    model = tiny()
    x = ids(2, 40)
    full = model(x)
    cache = model.init_cache(2)
    steps = torch.cat([model.step(x[:, t:t + 1], cache) for t in range(40)], 1)
    torch.testing.assert_close(steps, full, **TOL)
    assert cache.pos == 40
    # a prefill of 13 tokens, then one at a time, after reset()
    cache.reset()
    mixed = torch.cat([model.step(x[:, :13], cache)] + [model.step(x[:, t:t + 1], cache) for t in range(13, 40)], 1)
    torch.testing.assert_close(mixed, full, **TOL)


@torch.no_grad()
def test_state_carry_includes_token_shift_inputs():
    """[x1; x2] in one call == x1, then x2 from the carried state: logits and all five state
    vectors of every layer (time-mix x, channel-mix x, a, b, p)."""
    model = tiny(seed=2)
    x = ids(3, 30, seed=3)
    one = model.init_cache(3)
    whole = model.step(x, one)
    two = model.init_cache(3)
    parts = torch.cat([model.step(x[:, :17], two), model.step(x[:, 17:], two)], 1)
    torch.testing.assert_close(parts, whole, **TOL)
    for name in ("att_x", "ffn_x", "a", "b"):
        torch.testing.assert_close(getattr(two, name), getattr(one, name), **TOL)
    torch.testing.assert_close(two.a * two.p.exp(), one.a * one.p.exp(), **TOL)
    # the token-shift state is the last normalised input of each mixer, not zeros
    assert one.att_x.abs().sum() > 0 and one.ffn_x.abs().sum() > 0
    # dropping the token-shift state changes the continuation
    two.att_x.zero_()
    assert not torch.allclose(model.step(x[:, :1], two), model.step(x[:, :1], one), **TOL)


@torch.no_grad()
def test_float64_model_matches_exactly():
    model = tiny(seed=4).double()
    x = ids(2, 21)
    cache = model.init_cache(2)
    assert cache.a.dtype == torch.float64 and cache.att_x.dtype == torch.float64
    steps = torch.cat([model.step(x[:, t:t + 1], cache) for t in range(21)], 1)
    torch.testing.assert_close(steps, model(x), atol=1e-12, rtol=1e-12)


# --- left padding ------------------------------------------------------------------------------------

@torch.no_grad()
def test_left_padding_matches_the_unpadded_prompt():
    model = tiny(seed=5)
    rows = [ids(1, 11, seed=6)[0], ids(1, 4, seed=7)[0], ids(1, 8, seed=8)[0]]
    width = 11
    padded = torch.stack([torch.cat([torch.full((width - len(r),), 3), r]) for r in rows])
    mask = torch.stack([torch.arange(width) >= width - len(r) for r in rows])
    par = model(padded, key_padding_mask=mask)
    cache = model.init_cache(3)
    pre = model.step(padded, cache, key_padding_mask=mask)
    nxt = torch.tensor([[5], [6], [7]])
    after = model.step(nxt, cache)
    for b, r in enumerate(rows):
        alone = model(torch.cat([r, nxt[b]])[None])
        torch.testing.assert_close(par[b, width - len(r):], alone[0, :-1], **TOL)
        torch.testing.assert_close(pre[b, width - len(r):], alone[0, :-1], **TOL)
        torch.testing.assert_close(after[b, 0], alone[0, -1], **TOL)
    # a different pad id gives the same real logits: padding never enters the state
    other = padded.masked_fill(~mask, 17)
    torch.testing.assert_close(model(other, key_padding_mask=mask)[mask], par[mask], **TOL)
    # the shared decoders left-pad prompts of unequal lengths; each row decodes as if alone
    out = Greedy(max_new_tokens=5).generate(model, [r.tolist() for r in rows])
    for b, r in enumerate(rows):
        alone = Greedy(max_new_tokens=5).generate(model, r[None])
        assert out[b, -5:].tolist() == alone[0, -5:].tolist()


# --- token shift and init ------------------------------------------------------------------------------

def test_token_shift_is_zero_at_the_start_and_mu_one_disables_it():
    x = torch.randn(2, 5, 4)
    shifted = token_shift(x, torch.zeros(2, 4))
    assert torch.equal(shifted[:, 0], torch.zeros(2, 4)) and torch.equal(shifted[:, 1:], x[:, :-1])
    assert torch.equal(mix(x, shifted, torch.ones(4)), x)
    # channel mix with mu = 1 treats every token alone (its output does not see the previous one)
    torch.manual_seed(0)
    cm = ChannelMix(4, 16)
    with torch.no_grad():
        for p in cm.parameters():
            p.copy_(torch.randn_like(p))
        cm.time_mix_k.fill_(1.0)
        cm.time_mix_r.fill_(1.0)
    prev = torch.randn(2, 4)
    alone = torch.cat([cm(x[:, t:t + 1], torch.randn(2, 4))[0] for t in range(5)], 1)
    torch.testing.assert_close(cm(x, prev)[0], alone, **TOL)
    # with mu != 1 the first token does see prev
    with torch.no_grad():
        cm.time_mix_k.fill_(0.5)
    assert not torch.allclose(cm(x, prev)[0][:, 0], cm(x, torch.zeros(2, 4))[0][:, 0])


def _hand_init(L: int, C: int, init: str) -> dict[str, list[list[float]]]:
    """Spec sec. 5, written out with math for each (l, i)."""
    out = {k: [[0.0] * C for _ in range(L)] for k in ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
                                                        "att.time_decay", "att.time_first",
                                                        "ffn.time_mix_k", "ffn.time_mix_r")}
    for l in range(L):
        r01, r10 = l / (L - 1), 1 - l / L
        for i in range(C):
            out["att.time_mix_k"][l][i] = (i / C) ** r10
            out["att.time_mix_v"][l][i] = (i / C) ** r10 + 0.3 * r01
            out["att.time_mix_r"][l][i] = (i / C) ** (0.5 * r10) if init == "code" else 0.5 * (i / C) ** r10
            out["att.time_decay"][l][i] = -5 + 8 * (i / (C - 1)) ** (0.7 + 1.3 * r01)
            out["att.time_first"][l][i] = math.log(0.3) + 0.5 * (((i + 1) % 3) - 1)
            out["ffn.time_mix_k"][l][i] = (i / C) ** r10
            out["ffn.time_mix_r"][l][i] = (i / C) ** r10
    return out


@pytest.mark.parametrize("init", ["code", "paper"])
def test_init_golden_values(init):
    L, C = 4, 8
    torch.manual_seed(0)
    model = RWKV(300, d_model=C, n_layer=L, init=init)
    hand = _hand_init(L, C, init)
    for name, rows in hand.items():
        owner, attr = name.split(".")
        got = torch.stack([getattr(getattr(b, owner), attr).detach() for b in model.blocks])
        torch.testing.assert_close(got, torch.tensor(rows, dtype=torch.float32), atol=1e-7, rtol=1e-6, msg=name)
        torch.testing.assert_close(rwkv_init_vectors(L, C, init)[name], got, atol=0, rtol=0)
    blocks = model.blocks
    # a few numbers by hand
    assert blocks[0].att.time_decay[7].item() == pytest.approx(3.0)  # -5 + 8 * 1
    assert blocks[3].att.time_decay[1].item() == pytest.approx(-5 + 8 / 49)  # (1/7)^2
    assert [round(blocks[2].att.time_first[i].item(), 6) for i in range(3)] == [-1.203973, -0.703973, -1.703973]
    assert blocks[2].att.time_mix_k[2].item() == pytest.approx(0.5)  # (2/8)^(1/2)
    assert blocks[3].att.time_mix_v[0].item() == pytest.approx(0.3)
    assert blocks[0].att.time_mix_r[2].item() == pytest.approx(0.5 if init == "code" else 0.125)
    # matrices
    eye = torch.eye(C)
    gram = lambda w: w.detach().T @ w.detach()  # noqa: E731
    torch.testing.assert_close(gram(model.head.weight), (0.5 ** 2 * 300 / C) * eye, atol=1e-4, rtol=1e-4)
    for b in blocks:
        torch.testing.assert_close(gram(b.att.value.weight), eye, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gram(b.ffn.key.weight), 4 * eye, atol=1e-5, rtol=1e-5)  # gain sqrt(4C/C)
        for lin in (b.att.key, b.att.receptance, b.ffn.receptance):
            assert not lin.weight.any()
        for lin in (b.att.output, b.ffn.value):
            assert (not lin.weight.any()) if init == "code" else lin.weight.std() > 0.1
        for ln in (b.ln1, b.ln2):
            assert torch.equal(ln.weight, torch.ones(C)) and not ln.bias.any()
    if init == "code":
        torch.testing.assert_close(gram(model.embed.weight), (1e-4 ** 2 * 300) * eye, atol=1e-10, rtol=1e-4)
    else:
        assert model.embed.weight.abs().max() <= 1e-4 and model.embed.weight.abs().max() > 5e-5


def test_meta_device_build_and_reset_parameters():
    torch.manual_seed(0)
    ref = RWKV(V, d_model=16, n_layer=2)
    torch.manual_seed(1)
    ref.reset_parameters()
    with torch.device("meta"):
        meta = RWKV(V, d_model=16, n_layer=2)
    assert all(p.is_meta for p in meta.parameters())
    meta.to_empty(device="cpu")
    torch.manual_seed(1)
    meta.reset_parameters()
    for (name, a), b in zip(ref.state_dict().items(), meta.state_dict().values()):
        assert torch.equal(a, b), name


def test_sizes_config_and_gradients():
    assert resolve_rwkv_dims("tiny") == dict(d_model=192, n_layer=4, d_ff=768, max_seq_len=256)
    assert resolve_rwkv_dims("small", d_model=64)["d_ff"] == 256 and "169m" in RWKV_SIZES
    model = RWKV(259)
    assert model.config.max_seq_len == 256 and model.num_params() == sum(p.numel() for p in model.parameters())
    assert len(model.blocks) == 4
    with pytest.raises(ValueError, match="allowed: code, paper"):
        RWKV(V, init="gpt")
    with pytest.raises(ValueError, match="not an RWKV size"):
        RWKV(V, size="huge")
    # every parameter gets a finite gradient from the default (code) init
    model = RWKV(V, d_model=16, n_layer=2)
    x = ids(2, 20)
    loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_cuda_triton_model_matches_cpu():
    model = tiny(seed=9)
    x = ids(2, 64)
    ref = model(x)
    cuda = model.cuda()
    assert cuda.blocks[0].att.wkv_impl == "auto"
    torch.testing.assert_close(cuda(x.cuda()).cpu(), ref, atol=1e-4, rtol=1e-4)
    cache = cuda.init_cache(2)
    steps = torch.cat([cuda.step(x[:, t:t + 1].cuda(), cache) for t in range(64)], 1)
    torch.testing.assert_close(steps.cpu(), ref, atol=1e-4, rtol=1e-4)


# --- the runner -----------------------------------------------------------------------------------------

def test_build_passes_attention_only_to_models_that_take_it():
    llama = OmegaConf.create({"model": {"_target_": "rizzrun.models.llama.Llama"},
                              "attention": {"_target_": "rizzrun.attention.sdpa.SDPAttention", "_partial_": True},
                              "mlp": {"_target_": "rizzrun.models.llama.SwiGLU", "_partial_": True}})
    assert set(factories_for(llama)) == {"attention", "mlp"}
    cfg = OmegaConf.create({
        "model": {"_target_": "rizzrun.models.rwkv.RWKV", "size": "tiny", "vocab_size": None, "d_model": 16,
                  "n_layer": 1},
        "attention": {"_target_": "no.such.Kernel"},  # never built for RWKV
        "mlp": {"_target_": "no.such.MLP"},
    })
    assert factories_for(cfg) == {}
    model = build_model(cfg, type("Tok", (), {"vocab_size": 50})())
    assert isinstance(model, RWKV) and model.config.vocab_size == 50


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_validate(capsys):
    assert cli(capsys, "validate", "model=rwkv")[0] == 0
    code, _, err = cli(capsys, "validate", "model=rwkv", "+model.attention=x", "model.wkv_impl=cuda")
    assert code != 0
    assert "model.attention='x': rizzrun.models.rwkv.RWKV has no parameter 'attention'" in err
    assert "model.wkv_impl='cuda': not an RWKV wkv_impl" in err


def test_cli_trains_generates_and_export_refuses(tmp_path, capsys):
    run_dir, data = tmp_path / "run", tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x + {i}\n" * 4}) + "\n" for i in range(20)))
    env = {**os.environ, "RIZZRUN_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
    done = subprocess.run(
        [RIZZRUN, "model=rwkv", "model.n_layer=1", "model.d_model=32", "data=text", f"data.train_files={data}",
         "data.val_fraction=0.2", "data.seq_len=16", "data.batch_size=2", "trainer.max_steps=3",
         "trainer.log_every=1", "trainer.checkpoint_every=3", "trainer.val_every=3", "trainer.val_batches=1",
         "trainer.samples_per_val=1", "decoder.max_new_tokens=4", "scheduler=constant", "logger=none",
         "trainer.num_threads=1", f"hydra.run.dir={run_dir}"],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 3
    assert math.isfinite(summary["train_loss"]) and math.isfinite(summary["val_loss"])
    assert OmegaConf.load(run_dir / "config.yaml").model._target_ == "rizzrun.models.rwkv.RWKV"
    code, out, err = cli(capsys, "generate", str(run_dir), "--prompt", "def f", "decoder=greedy",
                         "decoder.max_new_tokens=6")
    assert code == 0, err
    assert out.startswith("def f") and len(out.rstrip("\n")) > len("def f")
    code, out, err = cli(capsys, "export", str(run_dir), str(tmp_path / "hf"))
    assert code != 0 and not (tmp_path / "hf").exists()
    assert err.strip().count("\n") == 0
    assert "rizzrun.models.rwkv.RWKV" in err and "supports Llama runs only" in err
