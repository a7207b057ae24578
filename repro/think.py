"""ThinK at CPU scale: key-cache memory vs decoding loss with a thin key cache.

Xu et al. (arXiv 2407.21018): pruning the key channels that matter least to the last prompt
queries saves > 20% of the KV cache at near-equal quality. Here a tiny Llama (2 layers, d_model
64, 4 heads of dim 16, 2 KV heads, RoPE, SDPAttention) learns to copy: a row is BOS, a random
sequence S of L symbols, SEP, then S again; the loss is on the copy (an induction-head task: each
copied token is found by attending back into S). Evaluation is teacher-forced decoding on held-out
rows: the prompt (S, SEP and the copy's first 16 tokens, so the observation window holds copying
queries) is prefilled into a `rizzrun.attention.think.ThinKAttention` cache (obs_window 32,
recent_size 32) with the trained weights, then the rest is decoded with the thin cache. Reported
for ratio 0, 0.25, 0.4, 0.5, 0.75: copy loss and accuracy of the decoded part and key-cache bytes
(thin + full-width keys, all layers, cache of T positions) against the unpruned cache, for ThinK's
query-driven channel scores and, at the same ratio, two baselines the spec names: key-norm scores
(||K_j|| only) and random channels.

The decoder path (`decoder=think`, `rizzrun.decoders.think.ThinK`) on the same SDPA-trained models,
no ThinKAttention model built: the continuation is fed token by token through the decoder's own
stepper (`ThinK.stepper`, the model's cache made with `key_pruning`), which gives the
teacher-forced loss, and `ThinK.generate` decodes the copy greedily (free-running accuracy).
Then the same on text: a tiny Llama (4 layers, d_model 128, 4 heads of dim 32, 2 KV heads) trained
on the built-in pydoc corpus (stdlib docstrings, bytes), validated on held-out documents: a
192-byte prompt, then the next 64 bytes teacher-forced through the thin cache (nats/byte).

    python repro/think.py [--steps 400 --seeds 0 1 2 --text-steps 250]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rizzrun.attention.think as think  # noqa: E402
from rizzrun.attention.sdpa import SDPAttention  # noqa: E402
from rizzrun.attention.think import ThinKAttention  # noqa: E402
from rizzrun.decoders.think import ThinK  # noqa: E402
from rizzrun.models.llama import Llama  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402

N_SYMBOLS, L = 32, 48
BOS, SEP = N_SYMBOLS, N_SYMBOLS + 1
VOCAB = N_SYMBOLS + 2
T = 2 + 2 * L  # BOS, S, SEP, S again: 98 tokens
PROMPT = 2 + L + 16  # S, SEP and the copy's first 16 tokens; the thin keys are the first 34 (most of S)
RATIOS = (0.0, 0.25, 0.4, 0.5, 0.75)


def batch(B: int, rng: random.Random):
    """(B, T) rows BOS S SEP S and (B, T) labels: the second copy (-100 elsewhere)."""
    s = torch.tensor([[rng.randrange(N_SYMBOLS) for _ in range(L)] for _ in range(B)])
    x = torch.cat([torch.full((B, 1), BOS), s, torch.full((B, 1), SEP), s], 1)
    labels = torch.full((B, T), -100)
    labels[:, L + 1:T - 1] = s  # the token after SEP predicts S[0], ...
    return x, labels


def model_for(attention, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(VOCAB, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=T,
                 attention=attention, init_std=0.02)


def train(model, steps: int, seed: int, lr: float = 1e-2, B: int = 32) -> float:
    rng = random.Random(1000 + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        x, labels = batch(B, rng)
        loss = F.cross_entropy(model(x).flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return loss.item()


@contextmanager
def scored_by(kind: str, seed: int):
    """Swap ThinK's channel score for a baseline's (repro only)."""
    original = think.channel_scores
    if kind == "key-norm":
        think.channel_scores = lambda q, k, qm=None, km=None: original(torch.ones_like(q), k, qm, km)
    elif kind == "random":
        g = torch.Generator().manual_seed(seed)
        think.channel_scores = lambda q, k, qm=None, km=None: torch.rand(*k.shape[:2], k.shape[3], generator=g)
    try:
        yield
    finally:
        think.channel_scores = original


@torch.no_grad()
def evaluate(trained, x, labels, ratio: float, kind: str, seed: int):
    """(copy loss, accuracy) of the decoded part, key-cache bytes."""
    model = model_for(partial(ThinKAttention, ratio=ratio, obs_window=32, recent_size=32))
    model.load_state_dict(trained.state_dict())
    model.eval()
    cache = model.init_cache(x.shape[0], max_len=T)
    with scored_by(kind, seed):
        model.step(x[:, :PROMPT], cache)
        logits = model.step(x[:, PROMPT:], cache)  # any chunking after the prefill gives the same
    lab = labels[:, PROMPT:]
    loss = F.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=-100).item()
    answer = lab != -100
    acc = (logits.argmax(-1)[answer] == lab[answer]).float().mean().item()
    return loss, acc, key_bytes(cache)


def key_bytes(cache) -> int:
    """Bytes of the stored keys, all layers (thin + full width, or the plain cache's k)."""
    return sum(s.key_nbytes() if hasattr(s, "key_nbytes") else s.k.nbytes for s in cache.layers)


@torch.no_grad()
def decoder_loss(model, x, labels, prompt: int, ratio: float, kind: str = "ThinK", seed: int = 0):
    """Teacher-forced loss of positions prompt.. through `ThinK(ratio).stepper` (the decoder's
    path: prefill, then one token per step), and the cache's key bytes."""
    stepper = ThinK(ratio, obs_window=32, recent_size=32).stepper(model, x.shape[0], x.shape[1], x.device)
    with scored_by(kind, seed):
        stepper.prefill(x[:, :prompt], None)
        logits = torch.stack([stepper.step(x[:, t:t + 1]) for t in range(prompt, x.shape[1])], 1)
    lab = labels[:, prompt:]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), lab.flatten(), ignore_index=-100).item()
    return loss, key_bytes(stepper.cache)


def decoder_copy_accuracy(model, x, ratio: float) -> float:
    """Free-running greedy copy through `ThinK(ratio).generate`: share of the T - PROMPT generated
    tokens equal to the copy."""
    out = ThinK(ratio, obs_window=32, recent_size=32, max_new_tokens=T - PROMPT).generate(model, x[:, :PROMPT])
    return (out[:, PROMPT:] == x[:, PROMPT:]).float().mean().item()


TEXT_T, TEXT_PROMPT, EOS = 256, 192, 256  # bytes 0..255, EOS 256


def text_data(n_val: int = 64):
    """Training stream (1-D long: the training documents' bytes, EOS-joined) and (n_val, 256)
    validation rows: the first 256 bytes of held-out documents at least that long."""
    from rizzrun.data.pydoc import PyDocCorpus

    docs = PyDocCorpus().documents()
    stream = []
    for text in docs["train"][0]:
        stream += list(text.encode("utf-8")) + [EOS]
    val = [list(t.encode("utf-8"))[:TEXT_T] for t in docs["val"][0] if len(t.encode("utf-8")) >= TEXT_T]
    return torch.tensor(stream), torch.tensor(val[:n_val])


def train_text(stream, steps: int, seed: int, lr: float = 3e-3, B: int = 16) -> Llama:
    torch.manual_seed(seed)
    model = Llama(EOS + 1, d_model=128, n_layer=4, n_head=4, n_kv_head=2, d_ff=352, max_seq_len=TEXT_T,
                  init_std=0.02)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - TEXT_T - 1, (B,), generator=g)
        rows = torch.stack([stream[i:i + TEXT_T + 1] for i in starts.tolist()])
        loss = F.cross_entropy(model(rows[:, :-1]).flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def decoder_tables(models, held_out, args, start: float) -> None:
    x, labels = held_out
    rows = {}
    for model in models:
        for ratio in RATIOS:
            loss, kb = decoder_loss(model, x, labels, PROMPT, ratio)
            rows.setdefault(ratio, []).append((loss, decoder_copy_accuracy(model, x, ratio), kb))
    full = rows[0.0][0][2]
    print(f"\nDecoder path (`decoder=think`, `ThinK(ratio, obs_window=32, recent_size=32)`) on the same "
          f"{len(models)} SDPA-trained models: copy loss teacher-forced through `ThinK.stepper`, copy accuracy "
          f"of `ThinK.generate` (greedy, free-running, {T - PROMPT} tokens), {time.time() - start:.0f}s so far\n")
    print("| ratio λ | key-cache bytes (saved) | copy loss, teacher-forced | copy accuracy, greedy |")
    print("|---|---|---|---|")
    for ratio, found in rows.items():
        kb = found[0][2]
        print(f"| {ratio} | {kb} ({1 - kb / full:.0%} saved) | {mean_sd([r[0] for r in found], '.4f')} | "
              f"{mean_sd([r[1] for r in found], '.4f')} |")
    if args.text_steps <= 0:
        return
    stream, val = text_data()
    model = train_text(stream, args.text_steps, 0)
    labels = torch.cat([val[:, 1:], torch.full((val.shape[0], 1), -100)], 1)  # the last byte predicts nothing
    text = {}
    for ratio in RATIOS:
        for kind in ("ThinK", "key-norm", "random"):
            if ratio or kind == "ThinK":
                text[(ratio, kind)] = decoder_loss(model, val, labels, TEXT_PROMPT, ratio, kind)
    full = text[(0.0, "ThinK")][1]
    print(f"\nText: tiny Llama (4 × 128, head_dim 32, SDPA) trained {args.text_steps} steps of 16 × {TEXT_T} "
          f"bytes of the pydoc corpus (seed 0); {val.shape[0]} held-out documents, prompt {TEXT_PROMPT} bytes (thin: "
          f"the first {TEXT_PROMPT - 32}), the next {TEXT_T - TEXT_PROMPT - 1} bytes' loss teacher-forced through "
          f"`ThinK.stepper`; {time.time() - start:.0f}s in all\n")
    print("| ratio λ | channels kept | channel choice | key-cache bytes (saved) | validation loss (nats/byte) |")
    print("|---|---|---|---|---|")
    for (ratio, kind), (loss, kb) in text.items():
        print(f"| {ratio} | {32 - int(ratio * 32)}/32 | {kind if ratio else 'none'} | {kb} ({1 - kb / full:.0%} saved) "
              f"| {loss:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=1)  # 2 oversubscribes shared cores
    parser.add_argument("--text-steps", type=int, default=250)  # 0: no pydoc model
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    held_out = batch(256, random.Random(99))
    start = time.time()
    results, models = {}, []
    for seed in args.seeds:
        model = model_for(SDPAttention, seed)
        loss = train(model, args.steps, seed, lr=args.lr)
        models.append(model)
        print(f"seed {seed}: final train loss {loss:.3f} ({time.time() - start:.0f}s)", file=sys.stderr, flush=True)
        for ratio in RATIOS:
            for kind in ("ThinK", "key-norm", "random"):
                if ratio or kind == "ThinK":
                    results.setdefault((ratio, kind), []).append(evaluate(model, *held_out, ratio, kind, seed))


    full = results[(0.0, "ThinK")][0][2]
    cmd = "python repro/think.py " + " ".join(sys.argv[1:])
    print(f"\n`{cmd}` — {len(args.seeds)} seeds (mean ± sd), {args.steps} steps, rows of {T} tokens, "
          f"prompt {PROMPT} (thin: the first {PROMPT - 32}), head_dim 16, {time.time() - start:.0f}s\n")
    print("| ratio λ | channels kept | channel choice | key-cache bytes (vs λ=0) | copy loss | copy accuracy |")
    print("|---|---|---|---|---|---|")
    for (ratio, kind), rows in results.items():
        kb = rows[0][2]
        print(f"| {ratio} | {16 - int(ratio * 16)}/16 | {kind if ratio else 'none'} | {kb} ({kb / full:.0%}) | "
              f"{mean_sd([r[0] for r in rows], '.4f')} | {mean_sd([r[1] for r in rows], '.4f')} |")
    decoder_tables(models, held_out, args, start)


if __name__ == "__main__":
    with record(Path(__file__).resolve().parents[1] / "docs" / "results.md", "think",
                "## ThinK (Xu et al., arXiv 2407.21018)\n\n"
                "Paper: pruning 40-50% of the key-cache channels per head (chosen by the observation "
                "window's queries) saves > 20% of KV-cache memory at near-equal quality on LongBench. "
                "Here: `make repro-think`: a tiny Llama trained to copy, then decoded teacher-forced from a "
                "thin cache; ThinK's channel choice vs key norm and random. Then the decoder path "
                "(`decoder=think` on the plain SDPA models) and a tiny byte-level Llama on the pydoc corpus."):
        main()
