"""Smooth-SwiGLU and FP8 Adam moments at CPU scale: the mechanism of Fishman et al., arXiv 2409.12517.

The paper's instability needs ~10^11 tokens (W1/W2 rows align under weight decay); here the
alignment is made by hand (spec smooth_swiglu.md section 9b), on a byte-level 2-layer Llama
(d_model 64) trained on Python standard-library source:
1. pretrain in fp32 with AdamW (and, from the same init, with AdamWFP8: part 3);
2. align one W1/W2 row pair of layer 0 with a direction that only a rare byte ('~', the "trigger")
   produces at the MLP input, so h is ~200x its usual max on trigger tokens and nowhere else;
3. evaluate and then continue training with every MLP in emulated FP8 (E4M3, delayed per-tensor
   scaling, amax history 16, algo max; attention and the LM head stay fp32): plain FP8 SwiGLU vs
   Smooth-SwiGLU vs fp32, on clean batches and on batches with a few triggers inserted; plain FP8 also
   with the unclamped E4M3 cast of torch < 2.13 (NaN past 464). Delayed scaling has no headroom
   (margin 0): with that cast any amax rise of > 3.6% over the history's max is NaN, which in training
   happens on the second step already (one-entry history), outliers or not.
Prints markdown tables. Run: PYTHONPATH=. python repro/smooth_swiglu.py  (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import rizzrun.fp8.casts as casts
from rizzrun.fp8 import AdamWFP8, SmoothSwiGLU
from rizzrun.models.llama import Llama

MODULES = ["argparse", "inspect", "typing", "dataclasses", "functools", "collections", "pathlib", "json.decoder",
           "textwrap", "string", "shutil", "logging"]
TRIGGER = ord("~")
B, T = 16, 64


def corpus() -> torch.Tensor:
    text = "".join(inspect.getsource(importlib.import_module(m)) for m in MODULES).encode()
    return torch.tensor(list(text), dtype=torch.long)


def batch(data: torch.Tensor, gen: torch.Generator, triggers: int = 0) -> torch.Tensor:
    """(B, T + 1) byte windows; `triggers` of them get a '~' at a random position."""
    starts = torch.randint(0, len(data) - T - 1, (B,), generator=gen)
    rows = torch.stack([data[s:s + T + 1] for s in starts.tolist()])
    for i in range(triggers):
        rows[i % B, torch.randint(1, T, (1,), generator=gen)] = TRIGGER
    return rows


def lm_loss(model, rows, mask=None) -> torch.Tensor:
    logits = model(rows[:, :-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), reduction="none")
    return losses.mean() if mask is None else losses[mask.reshape(-1)].mean()


@contextlib.contextmanager
def legacy_e4m3_cast():
    """Casts to E4M3 as torch < 2.13 did without the clamp (casts.unclamped_e4m3_cast: NaN past 464)."""
    clamped = casts.saturating_cast
    casts.saturating_cast = lambda x, dtype: casts.unclamped_e4m3_cast(x) if dtype == casts.E4M3 else clamped(x, dtype)
    try:
        yield
    finally:
        casts.saturating_cast = clamped


def new_model(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(256, d_model=64, n_layer=2, n_head=4, n_kv_head=4, d_ff=128, max_seq_len=T, tie_embeddings=False)


def train(model, opt, data, steps, seed, trigger_every=0, log=None):
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for step in range(steps):
        rows = batch(data, gen, triggers=4 if trigger_every and step % trigger_every == trigger_every - 1 else 0)
        opt.zero_grad()
        loss = lm_loss(model, rows)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def val_loss(model, data, seed=123, n=8):
    gen = torch.Generator().manual_seed(seed)
    return sum(lm_loss(model, batch(data, gen)).item() for _ in range(n)) / n


def with_mlps(model: Llama, **kw) -> Llama:
    """A copy whose MLPs are SmoothSwiGLU(**kw) holding the same weights."""
    out = copy.deepcopy(model)
    for block in out.blocks:
        mlp = SmoothSwiGLU(block.mlp.up.in_features, block.mlp.up.out_features, **kw)
        mlp.load_state_dict(block.mlp.state_dict())
        block.mlp = mlp
    return out


@torch.no_grad()
def mlp0_inputs(model, rows):
    """Post-norm inputs of layer 0's MLP, (B, T, C)."""
    seen = {}
    handle = model.blocks[0].mlp.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    model(rows[:, :-1])
    handle.remove()
    return seen["x"]


@torch.no_grad()
def plant_outlier(model, data, ratio=200.0, channel=0):
    """Align W1/W2 row `channel` of layer 0 with the trigger's MLP input, and make that input a
    direction clean tokens barely use: h on trigger tokens ~ `ratio` x the clean max of h."""
    gen = torch.Generator().manual_seed(7)
    clean = torch.cat([mlp0_inputs(model, batch(data, gen)).reshape(-1, 64) for _ in range(4)])
    # Least-variance direction of the clean MLP inputs; the trigger's embedding is made to point there.
    u = torch.linalg.eigh(clean.T @ clean)[1][:, 0]
    block = model.blocks[0]
    model.embed.weight[TRIGGER] = 20 * u / block.mlp_norm.weight
    trig_rows = batch(data, gen, triggers=B)
    x_trig = mlp0_inputs(model, trig_rows)[trig_rows[:, :-1] == TRIGGER]
    u = F.normalize(x_trig.mean(0), dim=0)
    mlp = block.mlp
    h = lambda x: mlp.up(x) * F.silu(mlp.gate(x))
    clean_max = h(clean).abs().max()
    z = math.sqrt(ratio * clean_max.item())  # h ~ z^2 sigmoid(z) ~ z^2 for the trigger
    gain = z / (x_trig @ u).mean().item()
    mlp.gate.weight[channel] = mlp.up.weight[channel] = gain * u
    return {"trigger/clean max |h|": (h(x_trig).abs().max() / h(clean).abs().max()).item(),
            "cos(W1_c, W2_c)": F.cosine_similarity(mlp.gate.weight[channel], mlp.up.weight[channel], dim=0).item()}


@torch.no_grad()
def outlier_eval(model, data, variants):
    """16 clean batches (fill the amax histories), one batch with 4 triggers, then one clean batch."""
    gen = torch.Generator().manual_seed(99)
    warm = [batch(data, gen) for _ in range(16)]
    spike, after = batch(data, gen, triggers=4), batch(data, gen)
    at_trigger = spike[:, :-1] == TRIGGER
    rows = []
    for name, (m, legacy) in variants.items():
        with legacy_e4m3_cast() if legacy else contextlib.nullcontext():
            m.train()  # record amax histories (Llama has no dropout)
            for w in warm:
                m(w[:, :-1])
            clean = lm_loss(m, warm[-1])
            outs = {}
            handle = m.blocks[0].mlp.register_forward_hook(lambda mod, args, out: outs.setdefault("y", out))
            logp = F.log_softmax(m(spike[:, :-1]), -1)
            handle.remove()
            loss_spike, loss_trig = lm_loss(m, spike), lm_loss(m, spike, at_trigger)
            loss_after = lm_loss(m, after)
        if name == "fp32":
            ref_out, ref_logp = outs["y"], logp
        err = ((outs["y"] - ref_out).norm() / ref_out.norm()).item()
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # KL(fp32 || variant) per position
        rows.append((name, clean.item(), loss_spike.item(), loss_trig.item(), kl[at_trigger].mean().item(),
                     kl[~at_trigger].mean().item(), loss_after.item(), err))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", type=int, default=300)
    parser.add_argument("--continue-steps", type=int, default=100)
    args = parser.parse_args()
    # One thread: these tensors are tiny, and on a shared 2-core machine more threads only contend.
    torch.set_num_threads(1)
    t0 = time.time()
    data = corpus()
    hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

    # Part 3 first (it also gives the fp32 checkpoint): AdamW vs AdamWFP8 from the same init and data.
    curves = {}
    for name, cls in (("AdamW (fp32 moments)", torch.optim.AdamW), ("AdamWFP8 (m E4M3, sqrt v E5M2)", AdamWFP8)):
        model = new_model()
        curves[name] = (train(model, cls(model.parameters(), **hp), data, args.pretrain, seed=1), val_loss(model, data))
        if cls is torch.optim.AdamW:
            base = model

    planted = plant_outlier(base, data)
    kinds = {"fp32": (dict(), False),
             "FP8 SwiGLU (plain)": (dict(fp8=True, smooth=False), False),
             "FP8 SwiGLU (plain), torch<2.13 unclamped cast": (dict(fp8=True, smooth=False), True),
             "FP8 Smooth-SwiGLU": (dict(fp8=True, smooth=True), False)}
    evals = outlier_eval(base, data, {name: (with_mlps(base, **kw), legacy) for name, (kw, legacy) in kinds.items()})

    cont = {}
    for name, (kw, legacy) in kinds.items():
        model = with_mlps(base, **kw)
        opt = torch.optim.AdamW(model.parameters(), **hp)
        with legacy_e4m3_cast() if legacy else contextlib.nullcontext():
            losses = train(model, opt, data, args.continue_steps, seed=2, trigger_every=10)
            cont[name] = (losses, val_loss(model, data))

    print(f"\nplanted outlier (layer 0, channel 0): max|h| on trigger tokens / clean max|h| = "
          f"{planted['trigger/clean max |h|']:.0f}; cos(W1_0, W2_0) = {planted['cos(W1_c, W2_c)']:.3f}\n")
    print("Outlier batch after 16 clean batches (delayed scaling, amax history 16, algo max; losses in nats/byte):\n")
    print("| MLPs | clean batch loss | outlier batch loss | loss at trigger tokens | KL(fp32‖·) at triggers "
          "| KL(fp32‖·) elsewhere | next clean batch loss | layer-0 MLP output rel. err. (outlier batch) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, clean, spike, trig, kl_t, kl_o, after, err in evals:
        print(f"| {name} | {clean:.4f} | {spike:.4f} | {trig:.3f} | {kl_t:.2e} | {kl_o:.2e} | {after:.4f} | {err:.3f} |")
    n = args.continue_steps
    print(f"\nContinued training from the planted checkpoint, {n} steps, AdamW, 4 triggers in every 10th batch:\n")
    print("| MLPs | mean train loss, clean steps | mean train loss, trigger steps | max finite train loss | first NaN step "
          "| val loss |")
    print("|---|---|---|---|---|---|")
    for name, (losses, val) in cont.items():
        trig = [l for i, l in enumerate(losses) if i % 10 == 9]
        clean = [l for i, l in enumerate(losses) if i % 10 != 9]
        nan = next((i + 1 for i, l in enumerate(losses) if math.isnan(l)), "-")
        top = max(l for l in losses if math.isfinite(l))
        print(f"| {name} | {sum(clean) / len(clean):.4f} | {sum(trig) / len(trig):.4f} | {top:.4f} | {nan} "
              f"| {val:.4f} |")
    print(f"\nAdamW vs AdamW with FP8 moments, same init and batches, {args.pretrain} steps from scratch "
          "(lr 3e-3, betas 0.9/0.95, wd 0.1):\n")
    marks = [s for s in (10, 50, 100, 200, args.pretrain) if s <= args.pretrain]
    print("| optimizer | " + " | ".join(f"train loss @{s}" for s in marks) + " | val loss |")
    print("|---|" + "---|" * (len(marks) + 1))
    for name, (losses, val) in curves.items():
        avg = lambda s: sum(losses[max(0, s - 10):s]) / len(losses[max(0, s - 10):s])
        print(f"| {name} | " + " | ".join(f"{avg(s):.4f}" for s in marks) + f" | {val:.4f} |")
    print(f"\n(train loss @s: mean of steps s-9..s; {time.time() - t0:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import record

    with record(Path(__file__).resolve().parents[1] / "docs" / "results.md", "fp8",
                "## Smooth-SwiGLU and FP8 training (Fishman et al., arXiv 2409.12517)\n\n"
                "Paper: Llama-2 7B trained on 2T tokens in FP8 diverges late with SwiGLU (aligned W1/W2 "
                "columns make rare outliers that saturate the FP8 cast) and matches BF16 with Smooth-SwiGLU; "
                "FP8 Adam moments (m E4M3, v E5M2) track fp32. The outliers need ~10^11 tokens to appear, so "
                "here the mechanism is planted: `make repro-fp8` (`python repro/smooth_swiglu.py`)."):
        main()
