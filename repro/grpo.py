"""`make repro-grpo`: GRPO (Shao et al., arXiv 2402.03300) on the built-in 2-digit addition task.

Each seed: an SFT run (`sft_tiny`, shared with `make repro-preference` when its folder exists) and, from
its checkpoint, `grpo_tiny` as shipped (16 prompts x 8 completions at T = 1, reward 1 for the right sum,
beta 0.04, 200 steps), its ablations beta = 0 and scale_rewards = none (Dr. GRPO's unscaled
advantages), and the control: the SFT model trained 200 more SFT steps at GRPO's learning rate. Read
from each run: greedy held-out accuracy (eval.json task.correct_rate, 200 held-out problems), the
reward of one T = 1 completion per held-out prompt (the last validation's val/reward; for the SFT
model a sample job over the same prompts), the KL to the reference, frac_reward_zero_std and the
training reward over the first and last 20 steps, and the share of a step spent generating
(perf/rollout_s). Every run: one torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import finished_sft, run_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "trainer.num_threads=1"]
VARIANTS = {
    "grpo": ["+recipe=grpo_tiny", "trainer.log_every=1"],
    "grpo_beta0": ["+recipe=grpo_tiny", "trainer.log_every=1", "objective.beta=0.0", "objective.models.reference=null"],
    "grpo_unscaled": ["+recipe=grpo_tiny", "trainer.log_every=1", "objective.scale_rewards=none"],
    "sft_more": ["+recipe=sft_tiny", "trainer.max_steps=200", "optimizer.lr=5e-6", "scheduler.warmup_steps=10",
                 "trainer.val_every=200", "trainer.checkpoint_every=200"],
}


def rizzrun(args: list[str], folder: Path) -> Path:
    """One run into `folder` (repro/runs.py: a completed one reused, a stopped one resumed)."""
    return run_into(args, folder, COMMON)


def sft_run(seed: int, out: Path) -> Path:
    return finished_sft(seed) or rizzrun(["+recipe=sft_tiny", f"seed={seed}"], out / f"sft_tiny-s{seed}")


def window(rows: list[dict], key: str, first: bool, n: int = 20) -> float:
    values = [r[key] for r in rows if key in r and "train/loss" in r]
    part = values[:n] if first else values[-n:]
    return statistics.mean(part) if part else float("nan")


def collect(run: Path) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads((run / "eval.json").read_text())
    out = {"accuracy": ev["task"]["correct_rate"], "seconds": json.loads((run / "summary.json").read_text())["seconds"]}
    if any("train/reward" in r for r in rows):
        val = [r["val/reward"] for r in rows if "val/reward" in r]
        rollout = sum(r.get("perf/rollout_s", 0) for r in rows)
        update = sum(r.get("perf/update_s", 0) for r in rows)
        out.update(val_reward=val[-1], reward_first=window(rows, "train/reward", True),
                   reward_last=window(rows, "train/reward", False),
                   zero_std_first=window(rows, "train/frac_reward_zero_std", True),
                   zero_std_last=window(rows, "train/frac_reward_zero_std", False),
                   kl_last=window(rows, "train/kl", False) if any("train/kl" in r for r in rows) else None,
                   rollout_share=rollout / max(rollout + update, 1e-9))
    return out


def seed_results(seed: int, out: Path) -> dict:
    sft = sft_run(seed, out)
    res = {"sft": {"accuracy": json.loads((sft / "eval.json").read_text())["task"]["correct_rate"]}}
    sampled = rizzrun(["job=sample", f"model.from_pretrained={sft}", "data=arithmetic_prompts", "tokenizer=byte",
                       "decoder=sample", "decoder.max_new_tokens=6", "sample.num_generations=1", "sample.splits=[val]",
                       f"seed={seed}"], out / f"sft_sampled-s{seed}")
    res["sft"]["val_reward"] = json.loads((sampled / "summary.json").read_text())["splits"]["val"]["reward"]
    for name, args in VARIANTS.items():
        res[name] = collect(rizzrun([*args, f"model.from_pretrained={sft}", f"seed={seed}"], out / f"{name}-s{seed}"))
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "grpo")
    args = parser.parse_args()
    rows = {s: seed_results(s, args.out) for s in args.seeds}

    def cell(name: str, key: str) -> str:
        values = [rows[s][name].get(key) for s in args.seeds]
        return "—" if any(v is None for v in values) else mean_sd(values)

    n = len(args.seeds)
    with record(ROOT / "docs" / "results.md", "grpo", "## GRPO (arXiv 2402.03300): verifiable reward on addition"):
        print(f"`make repro-grpo` ({n} seed{'s' * (n > 1)}; mean ± sd). From `sft_tiny` (2-digit sums), 200 steps of "
              "16 prompts x 8 completions (T = 1, at most 6 tokens), reward 1 for the right sum, lr 5e-6; control: "
              "200 more SFT steps at the same lr. Held-out: 200 problems never trained on.\n")
        print("| policy | greedy held-out accuracy | held-out reward (1 sample, T = 1) | train reward, first → last 20 "
              "steps | frac_reward_zero_std, first → last | KL to reference (last 20) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| SFT (start) | {cell('sft', 'accuracy')} | {cell('sft', 'val_reward')} | | | |")
        labels = {"grpo": "GRPO (beta 0.04, group-scaled)", "grpo_beta0": "GRPO, beta = 0",
                  "grpo_unscaled": "GRPO, scale_rewards = none", "sft_more": "control: SFT, 200 more steps"}
        for name, label in labels.items():
            if name == "sft_more":
                print(f"| {label} | {cell(name, 'accuracy')} | | | | |")
                continue
            print(f"| {label} | {cell(name, 'accuracy')} | {cell(name, 'val_reward')} | {cell(name, 'reward_first')} → "
                  f"{cell(name, 'reward_last')} | {cell(name, 'zero_std_first')} → {cell(name, 'zero_std_last')} | "
                  f"{cell(name, 'kl_last')} |")
        share = mean_sd([rows[s]["grpo"]["rollout_share"] for s in args.seeds], ".2f")
        secs = mean_sd([rows[s]["grpo"]["seconds"] for s in args.seeds], ".0f")
        print(f"\nA GRPO run: {secs} s for 200 steps on one thread; generation (rollout + scoring + the "
              f"reference's log-probs) is {share} of a step's time.")


if __name__ == "__main__":
    main()
