"""Locally typical sampling at CPU scale: repetition and diversity of typical vs top-p vs greedy.

Meister et al. (arXiv 2202.00666): sampling from the locally typical set (tokens whose surprisal
is close to the step's entropy) gives text with fewer degenerate repetitions than greedy or
nucleus decoding at comparable quality. Here: the demo model (`rizzrun` defaults: the tiny Llama
trained on the built-in pydoc corpus, byte tokenizer, 400 steps, one thread) continues 200
held-out prompts (32-byte windows of the validation documents) by exactly 64 tokens
(min_new_tokens = max_new_tokens, no EOS) with greedy, ancestral sampling, top-p and typical
sampling at several masses, 3 seeds each. Reported per setting:

- rep-4: mean over continuations of 1 - distinct 4-grams / 4-grams (0 = no 4-gram repeats; the
  paper's degenerate-repetition measure, rep-n); `human` is the same on the true continuations;
- distinct-2 over all continuations (unique bigrams / bigrams);
- |surprisal - entropy|: the mean gap |-log p(y_t) - H_t| of the emitted tokens under the model
  at temperature 1 (what typical sampling keeps small by construction);
- unigram KL(human || generated) over bytes, add-one smoothed (a MAUVE-lite proxy);
- model NLL of the continuations (nats/token) as a fluency proxy.

    python repro/typical.py [--seeds 0 1 2 --steps 400]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402

PROMPT, NEW, N_PROMPTS = 32, 64, 200
SETTINGS = [
    ("greedy", "greedy", {}),
    ("sample (T = 1)", "sample", {"temperature": 1.0, "top_p": 1.0}),
    ("top-p 0.9", "sample", {"temperature": 1.0, "top_p": 0.9}),
    ("top-p 0.95", "sample", {"temperature": 1.0, "top_p": 0.95}),
    ("typical 0.2", "typical", {"typical_p": 0.2}),
    ("typical 0.5", "typical", {"typical_p": 0.5}),
    ("typical 0.9", "typical", {"typical_p": 0.9}),
    ("typical 0.95", "typical", {"typical_p": 0.95}),
]


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def train(out: Path, steps: int) -> Path:
    folder = out / f"demo-{steps}"
    if not (folder / "summary.json").exists() or json.loads((folder / "summary.json").read_text()).get("status") != "completed":
        cmd = [sys.executable, "-m", "rizzrun.cli", "logger=none", "trainer.num_threads=1",
               f"trainer.max_steps={steps}", f"hydra.run.dir={folder}"]
        log("$ rizzrun", " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


def prompts_and_references(cfg, tokenizer):
    """200 (prompt, true continuation) id lists from 32 + 64 byte windows of the val documents."""
    from hydra.utils import instantiate

    from rizzrun.paths import cache_root

    data = instantiate(cfg.data)
    data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
    pairs = []
    for text in data.val_texts():
        ids = tokenizer.encode(text)
        for start in range(0, len(ids) - PROMPT - NEW, PROMPT + NEW):
            pairs.append((ids[start:start + PROMPT], ids[start + PROMPT:start + PROMPT + NEW]))
            if len(pairs) == N_PROMPTS:
                return pairs
    return pairs


def rep_n(seq: list[int], n: int = 4) -> float:
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(seqs: list[list[int]], n: int = 2) -> float:
    grams = [tuple(s[i:i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def unigram_kl(reference: list[list[int]], generated: list[list[int]], vocab: int) -> float:
    p, q = Counter(t for s in reference for t in s), Counter(t for s in generated for t in s)
    np_, nq = sum(p.values()) + vocab, sum(q.values()) + vocab
    return sum((p[i] + 1) / np_ * math.log(((p[i] + 1) / np_) / ((q[i] + 1) / nq)) for i in range(vocab))


def scored(model, prompts, continuations):
    """(mean |surprisal - entropy|, mean NLL) of the continuations under the model at T = 1."""
    import torch

    ids = torch.tensor([p + c for p, c in zip(prompts, continuations)])
    with torch.inference_mode():
        logp = model(ids[:, :-1]).float().log_softmax(-1)[:, PROMPT - 1:]
    target = ids[:, PROMPT:]
    surprisal = -logp.gather(-1, target[..., None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return float((surprisal - entropy).abs().mean()), float(surprisal.mean())


def verdict(rows: dict) -> str:
    """The paper's direction, read off the table: typical vs greedy, and vs nucleus at equal mass."""
    import statistics

    rep = {name: statistics.mean(r["rep4"] for r in runs) for name, runs in rows.items()}
    same = [m for m in ("0.9", "0.95") if abs(rep[f"typical {m}"] - rep[f"top-p {m}"]) < 0.005]
    lines = [f"Against greedy: rep-4 {rep['greedy']:.2f} → {min(v for k, v in rep.items() if k != 'greedy'):.2f}–"
             f"{max(v for k, v in rep.items() if k not in ('greedy', 'human')):.2f} with any sampler (human text "
             f"{rep['human']:.2f})."]
    if same:
        lines.append(f"Against nucleus at the same mass ({', '.join(same)}): the same rep-4 — on this peaked byte-level "
                     "model the locally typical set is the nucleus at almost every step (the most probable tokens are "
                     "also those whose surprisal is nearest the entropy).")
    low = rep["typical 0.2"] - rep["top-p 0.9"]
    lines.append(f"typical 0.2 vs top-p 0.9: rep-4 {rep['typical 0.2']:.3f} vs {rep['top-p 0.9']:.3f} "
                 f"({'more' if low > 0 else 'fewer'} repeats), with the surprisal gap the method minimises "
                 f"{statistics.mean(r['gap'] for r in rows['typical 0.2']):.2f} vs "
                 f"{statistics.mean(r['gap'] for r in rows['top-p 0.9']):.2f}.")
    return " ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro-typical")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf

    from rizzrun.runner.build import build_decoder
    from rizzrun.config.catalog import option_file
    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    folder = train(args.out, args.steps)
    cfg, tokenizer, model = load_run(folder)
    pairs = prompts_and_references(cfg, tokenizer)
    prompts = [p for p, _ in pairs]
    human = [c for _, c in pairs]
    prompt_ids = torch.tensor(prompts)
    rows = {"human": [{"rep4": sum(rep_n(c) for c in human) / len(human), "distinct2": distinct_n(human),
                       "kl": 0.0, **dict(zip(("gap", "nll"), scored(model, prompts, human)))}]}
    for name, option, knobs in SETTINGS:
        rows[name] = []
        for seed in (args.seeds if option != "greedy" else args.seeds[:1]):
            node = OmegaConf.merge(OmegaConf.load(option_file("decoder", option)), {"max_new_tokens": NEW, "min_new_tokens": NEW, **knobs},
                                   {"seed": seed} if option != "greedy" else {})
            decoder = build_decoder(node, tokenizer)
            out = decoder.generate(model, prompt_ids, eos_token_id=None)[:, PROMPT:].tolist()
            gap, nll = scored(model, prompts, out)
            rows[name].append({"rep4": sum(rep_n(c) for c in out) / len(out), "distinct2": distinct_n(out),
                               "kl": unigram_kl(human, out, model.config.vocab_size), "gap": gap, "nll": nll})
            log(name, seed, rows[name][-1])

    def col(name, key, fmt=".3f"):
        return mean_sd([r[key] for r in rows[name]], fmt)

    lines = [
        f"Demo model (tiny Llama, pydoc corpus, byte tokenizer, {args.steps} steps); {len(pairs)} held-out prompts of "
        f"{PROMPT} bytes, each continued by exactly {NEW} tokens; seeds {' '.join(map(str, args.seeds))} "
        "(mean ± sd over seeds; greedy is deterministic). `human`: the true continuations.",
        "",
        "| decoder | rep-4 ↓ | distinct-2 ↑ | unigram KL(human‖gen) ↓ | mean \\|surprisal − entropy\\| | NLL (nats/token) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in rows:
        lines.append(f"| {name} | {col(name, 'rep4')} | {col(name, 'distinct2')} | {col(name, 'kl')} | "
                     f"{col(name, 'gap')} | {col(name, 'nll')} |")
    with record(args.results, "typical", "## Locally typical sampling (arXiv 2202.00666) — `make repro-typical`"):
        print("\n".join(lines))
        print(f"\nCommand: `python repro/typical.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps}`.")
        print("\n" + verdict(rows))


if __name__ == "__main__":
    main()
