"""`make repro-mixers`: Lightning Attention-2, the MiniMax-01 hybrid and RWKV-4 against softmax attention.

Paper (Qin et al., arXiv 2401.04658): TNL with Lightning Attention-2 trains to the loss of
softmax-attention LLaMA at equal tokens (0.4B: loss 2.228 LA2 vs LLaMA-FA2 comparable) while its
speed stays flat with length; MiniMax-01 (arXiv 2501.08313) keeps one softmax layer in 8 for
retrieval; RWKV-4 (arXiv 2305.13048) matches transformers of its size in loss. Here: the tiny
Llama of the default run (pydoc corpus, byte tokenizer, 256-byte rows) trained the same steps
with `attention=sdpa` (recipe tiny), `lightning_tiny`, `hybrid_tiny` (7 lightning : 1 softmax)
and `rwkv_tiny` (RWKV-4 of the same width and depth), over seeds; validation loss (nats/byte).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HYBRID_SHAPE = ["model.n_layer=8", "model.d_model=128", "model.n_head=4", "model.n_kv_head=2", "model.d_ff=352"]
# (label, recipe, overrides): hybrid_tiny's shape (8 layers of d_model 128) differs from tiny's
# (4 of 192), so it is compared with softmax attention in its own shape.
RECIPES = [("softmax (sdpa)", "tiny", []), ("lightning", "lightning_tiny", []), ("RWKV-4", "rwkv_tiny", []),
           ("hybrid 7:1 (8 × 128)", "hybrid_tiny", []), ("softmax, hybrid's shape (8 × 128)", "tiny", HYBRID_SHAPE)]


def run(recipe: str, overrides: list[str], seed: int, steps: int, out: Path) -> dict:
    """One run's validation loss; a finished run of the same job in `out` is reused (so an
    interrupted repro continues, and a new row costs only its own runs)."""
    folder = out / "-".join([recipe, *[o.replace("=", "_") for o in overrides], f"s{seed}", f"{steps}steps"])
    cmd = [str(Path(sys.executable).with_name("rizzrun")), f"+recipe={recipe}", *overrides, f"seed={seed}",
           "logger=none", f"trainer.max_steps={steps}", f"trainer.val_every={steps}", "trainer.samples_per_val=0",
           f"trainer.checkpoint_every={steps}", f"hydra.run.dir={folder}"]
    done = folder / "summary.json"
    if not (done.exists() and json.loads(done.read_text()).get("status") == "completed"):
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    summary = json.loads(done.read_text())
    return {"val_loss": summary["val_loss"], "seconds": summary["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "mixers")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    rows, total_seconds = [], 0.0
    for label, recipe, overrides in RECIPES:
        found = [run(recipe, overrides, seed, args.steps, args.out) for seed in args.seeds]
        total_seconds += sum(r["seconds"] for r in found)
        rows.append(f"| {label} | `{' '.join([recipe, *overrides])}` | {len(found)} | {mean_sd([r['val_loss'] for r in found], '.3f')} | "
                    f"{mean_sd([r['seconds'] for r in found], '.0f')} |")
    minutes = total_seconds / 60  # the runs' own time, also for runs reused from an earlier invocation
    seeds = " ".join(map(str, args.seeds))
    body = f"""## Lightning Attention-2, hybrid stacks and RWKV-4 (arXiv 2401.04658, 2501.08313, 2305.13048)

Papers: TNL with Lightning Attention-2 trains like softmax-attention LLaMA at equal tokens (0.4B, 100k updates: LA2 2.228 vs LA1 2.229) at flat speed in length; MiniMax-01 keeps one softmax layer in 8; RWKV-4 matches transformers of its size. The decoding side (flat time and memory for the recurrent ones) is in docs/benchmarks.md. Here: `make repro-mixers` (`python repro/mixers.py --seeds {seeds} --steps {args.steps}`) — the default tiny run (pydoc corpus, byte tokenizer, 256-byte rows) trained {args.steps} steps with each mixer; validation loss in nats/byte, mean ± standard deviation over seeds; {minutes:.1f} min in all on 2 CPU cores.

| mixer | recipe | seeds | validation loss | seconds per run |
| --- | --- | ---: | --- | ---: |
""" + "\n".join(rows)
    write_section(args.results, "mixers", body)
    print(body)


if __name__ == "__main__":
    main()
