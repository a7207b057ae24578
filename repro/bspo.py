"""`make repro-bspo`: BSPO (Dai et al., arXiv 2503.18130) vs plain PPO against a proxy reward model.

Each seed, from that seed's `sft_tiny` run (2-digit addition; shared with `make repro-preference`):
1. `bspo_sample_tiny`: 8 samples (T = 1) of 250 training prompts by the SFT policy, labelled with the
   gold reward (fraction of correct characters of the sum); the held-out prompts likewise.
2. `bspo_scorelm_tiny`: the proxy reward model, a ScoreLM (Bradley-Terry head + LM head trained on the
   responses) on pairs of those samples ranked by the gold reward (data=rollout_pairs).
3. `bspo_tiny` twice against that proxy (the gold reward logged with weight 0): PPO
   (objective.mode=monitor: the support is measured, not used) and BSPO (mode=value_target,
   epsilon 0.01 on the ScoreLM's next-token probability).
Read from each run: proxy and gold reward of the training rollouts (windows of 20 steps, logged every 5th) and of one
T = 1 completion per held-out prompt at each validation (50, 100, 150 steps), the share of
unsupported responses, greedy held-out accuracy (eval.json). Every run: one torch thread.

    python repro/bspo.py --seeds 0 1 2          # runs what is missing, then prints the table
    python repro/bspo.py --seeds 0 --no-table   # one seed's runs only (run seeds side by side)
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import finished_sft, run_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "trainer.num_threads=1"]
VARIANTS = {"ppo": ["objective.mode=monitor"], "bspo": ["objective.mode=value_target"]}
LABELS = {"ppo": "PPO (support measured, not used)", "bspo": "BSPO (value_target, epsilon 0.01)"}


def rizzrun(args: list[str], folder: Path) -> Path:
    """One run into `folder` (repro/runs.py: a completed one reused, a stopped one resumed)."""
    return run_into(args, folder, COMMON)


def sft_run(seed: int, out: Path) -> Path:
    return finished_sft(seed) or rizzrun(["+recipe=sft_tiny", f"seed={seed}"], out / f"sft_tiny-s{seed}")


def seed_runs(seed: int, out: Path) -> dict[str, Path]:
    sft = sft_run(seed, out)
    sample = rizzrun(["+recipe=bspo_sample_tiny", f"model.from_pretrained={sft}", f"seed={seed}"],
                     out / f"sample-s{seed}")
    scorelm = rizzrun(["+recipe=bspo_scorelm_tiny", f"model.from_pretrained={sft}", f"data.path={sample}",
                       f"seed={seed}"], out / f"scorelm-s{seed}")
    common = ["+recipe=bspo_tiny", f"model.from_pretrained={sft}", f"objective.models.behavior={scorelm}",
              f"rewards.rm.path={scorelm}", f"seed={seed}"]
    with ThreadPoolExecutor(len(VARIANTS)) as pool:  # the two policies side by side (one thread each)
        runs = dict(zip(VARIANTS, pool.map(lambda kv: rizzrun([*common, *kv[1]], out / f"{kv[0]}-s{seed}"),
                                           VARIANTS.items())))
    return {"sft": sft, "sample": sample, "scorelm": scorelm, **runs}


def window(rows: list[dict], key: str, lo: int, hi: int) -> float:
    values = [r[key] for r in rows if key in r and "train/loss" in r and lo < r["step"] <= hi]
    return sum(values) / len(values)


def collect(runs: dict[str, Path]) -> dict:
    out = {}
    sample = json.loads((runs["sample"] / "summary.json").read_text())
    out["sft_gold_val"] = sample["splits"]["val"]["reward"]
    out["sft_accuracy"] = json.loads((runs["sft"] / "eval.json").read_text())["task"]["correct_rate"]
    rm_rows = [json.loads(line) for line in (runs["scorelm"] / "metrics.jsonl").read_text().splitlines()]
    out["rm_val_accuracy"] = [r["val/rewards/accuracies"] for r in rm_rows if "val/rewards/accuracies" in r][-1]
    for name in VARIANTS:
        rows = [json.loads(line) for line in (runs[name] / "metrics.jsonl").read_text().splitlines()]
        res = {}
        for lo, hi in ((0, 20), (60, 80), (130, 150)):
            res[f"proxy_{hi}"] = window(rows, "train/rewards/rm/mean", lo, hi)
            res[f"gold_{hi}"] = window(rows, "train/rewards/gold/mean", lo, hi)
            res[f"unsup_{hi}"] = window(rows, "train/bspo/frac_unsupported_responses", lo, hi)
        for r in rows:
            if "val/rewards/gold/mean" in r:
                res[f"val_proxy_{r['step']}"] = r["val/rewards/rm/mean"]
                res[f"val_gold_{r['step']}"] = r["val/rewards/gold/mean"]
        res["accuracy"] = json.loads((runs[name] / "eval.json").read_text())["task"]["correct_rate"]
        res["seconds"] = json.loads((runs[name] / "summary.json").read_text())["seconds"]
        out[name] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "bspo")
    parser.add_argument("--no-table", action="store_true", help="only make the runs")
    args = parser.parse_args()
    results = {s: collect(seed_runs(s, args.out)) for s in args.seeds}
    if args.no_table:
        return

    def cell(name: str, key: str, fmt: str = ".2f") -> str:
        values = [results[s][name][key] if name else results[s][key] for s in args.seeds]
        return mean_sd(values, fmt)

    n = len(args.seeds)
    with record(ROOT / "docs" / "results.md", "bspo",
                "## BSPO (arXiv 2503.18130): PPO vs behaviour-supported PPO against a proxy reward model"):
        print(f"`make repro-bspo` ({n} seed{'s' * (n > 1)}; mean ± sd). From `sft_tiny` (2-digit sums): the proxy "
              "reward model is a ScoreLM (reward head + LM head) trained on pairs of 2,000 SFT samples ranked by the "
              "gold reward (fraction of correct characters of the sum); held-out pair accuracy "
              f"{cell(None, 'rm_val_accuracy')}. Then 150 steps of token-level PPO (16 prompts x 4 completions, "
              "T = 1, lr 2e-5, no KL) against the proxy, with and without the behaviour support (beta = the "
              "ScoreLM's next-token probability, unsupported: beta <= 0.01; value_target: such a token's "
              f"value target is V_min). The SFT policy's held-out gold reward: {cell(None, 'sft_gold_val')}.\n")
        print("| policy | proxy reward (training rollouts), steps 1-20 → 61-80 → 131-150 | gold reward, same windows | unsupported "
              "responses, same windows | held-out (1 sample) proxy @50/100/150 | held-out gold @50/100/150 | "
              "greedy held-out accuracy |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| SFT (start; its 8 T = 1 samples of each held-out prompt) | | | | | {cell(None, 'sft_gold_val')} | "
              f"{cell(None, 'sft_accuracy', '.3f')} |")
        for name in VARIANTS:
            w = lambda key: " → ".join(cell(name, f"{key}_{h}") for h in (20, 80, 150))  # noqa: E731
            v = lambda key: " / ".join(cell(name, f"{key}_{s}") for s in (50, 100, 150))  # noqa: E731
            print(f"| {LABELS[name]} | {w('proxy')} | {w('gold')} | {w('unsup')} | {v('val_proxy')} | "
                  f"{v('val_gold')} | {cell(name, 'accuracy', '.3f')} |")
        secs = mean_sd([results[s][name]["seconds"] for s in args.seeds for name in VARIANTS], ".0f")
        print(f"\nA policy run: {secs} s for 150 steps on one thread (two runs side by side on a shared 2-core machine).")


if __name__ == "__main__":
    main()
