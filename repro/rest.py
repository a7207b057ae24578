"""`make repro-rest`: ReST (Gulcehre et al., arXiv 2308.08998) on the built-in string-reversal task.

Each seed runs the pipeline recipes/rest_tiny.yaml (SFT on 2,000 demonstrations of which 30% are
corrupted; then two Grow steps, 8 samples at T = 1 of 500 training prompts scored by the fraction of
correct characters, each followed by three Improve steps at the 0.5 / 0.7 / 0.9 quantile of the grown
rewards; a last Grow samples the held-out prompts), and the spec's control: one Improve step with no
threshold (tau = 0: self-distillation on every sample of Grow 1) for as many steps as the three
Improve steps together, followed by a Grow of the held-out prompts. Read from the runs: held-out
reward (the mean character accuracy of T = 1 samples of the 200 held-out prompts: each Grow's val
split, whose policy is the stage before it), greedy held-out exact accuracy (eval.json
task.correct_rate), what each Improve step kept (data stats), and the distinct completions per
held-out prompt (of 8 samples: diversity, expected to shrink). Every run: one torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import run_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "trainer.num_threads=1"]
IMPROVES = ["improve1a", "improve1b", "improve1c", "improve2a", "improve2b", "improve2c"]


def rizzrun(args: list[str], folder: Path) -> Path:
    """One run (or pipeline) into `folder`; a completed one is reused, a stopped one resumed. (repro/runs.py)"""
    return run_into(args, folder, COMMON)


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def heldout_reward(grow: Path) -> float:
    return summary(grow)["splits"]["val"]["reward"]


def heldout_solved(grow: Path) -> float:
    """The share of the T = 1 samples of held-out prompts that are exactly right (reward 1)."""
    rows = [json.loads(x) for x in (grow / "rollouts" / "val.jsonl").read_text().splitlines()]
    samples = [r for r in rows if r["sample"] >= 0]
    return sum(r["reward"] == 1.0 for r in samples) / len(samples)


def distinct(grow: Path) -> float:
    """Mean distinct completions per held-out prompt (of its 8 samples)."""
    rows = [json.loads(x) for x in (grow / "rollouts" / "val.jsonl").read_text().splitlines()]
    per: dict[int, set] = {}
    for r in rows:
        if r["sample"] >= 0:
            per.setdefault(r["row"], set()).add(r["completion"])
    return statistics.mean(len(v) for v in per.values())


def accuracy(run: Path) -> float:
    return json.loads((run / "eval.json").read_text())["task"]["correct_rate"]


def seed_runs(seed: int, out: Path) -> dict:
    pipe = rizzrun(["+recipe=rest_tiny", f"seed={seed}"], out / f"rest_tiny-s{seed}")
    sft, grow1 = pipe / "sft", pipe / "grow1"
    steps = 3 * 150  # the three Improve steps of one Grow, as one step with no threshold
    distill = rizzrun(["+recipe=rest_improve_tiny", f"model.from_pretrained={sft}", f"data.path={grow1}",
                       "data.quantile=null", f"trainer.max_steps={steps}", f"trainer.val_every={steps}",
                       f"trainer.checkpoint_every={steps}", f"seed={seed}"], out / f"distill-s{seed}")
    distill_grow = rizzrun(["+recipe=rest_grow_tiny", f"model.from_pretrained={distill}", "sample.splits=[val]",
                            f"seed={seed}"], out / f"distill_grow-s{seed}")
    kept = {name: summary(pipe / name)["data"]["rollouts"]["train"] for name in IMPROVES}
    return {
        "reward": {"sft": heldout_reward(grow1), "rest_g1": heldout_reward(pipe / "grow2"),
                   "rest_g2": heldout_reward(pipe / "grow3"), "distill": heldout_reward(distill_grow)},
        "solved": {"sft": heldout_solved(grow1), "rest_g1": heldout_solved(pipe / "grow2"),
                   "rest_g2": heldout_solved(pipe / "grow3"), "distill": heldout_solved(distill_grow)},
        "accuracy": {"sft": accuracy(sft), **{name: accuracy(pipe / name) for name in IMPROVES},
                     "distill": accuracy(distill)},
        "distinct": {"sft": distinct(grow1), "rest_g1": distinct(pipe / "grow2"), "rest_g2": distinct(pipe / "grow3"),
                     "distill": distinct(distill_grow)},
        "kept": kept,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "rest")
    args = parser.parse_args()
    rows = {s: seed_runs(s, args.out) for s in args.seeds}
    col = lambda key, name: mean_sd([rows[s][key][name] for s in args.seeds])  # noqa: E731
    n = len(args.seeds)
    with record(ROOT / "docs" / "results.md", "rest", "## ReST (arXiv 2308.08998): Grow / Improve on string reversal"):
        print(f"`make repro-rest` ({n} seed{'s' * (n > 1)}; mean ± sd). Task: reverse 6 letters of 8 "
              "(`rev:abcdef=` -> `fedcba`); SFT on 2,000 demonstrations, 30% corrupted; reward = fraction of "
              "correct characters. Grow: 8 samples (T = 1) of 500 training prompts; Improve: 150 steps of NLL on "
              "the samples above the 0.5 / 0.7 / 0.9 quantile of the grown rewards, each from the previous; "
              "control: one Improve step with no threshold (self-distillation), 450 steps.\n")
        print("| policy | held-out reward (mean char accuracy, T = 1) | held-out samples exactly right (T = 1) | "
              "greedy held-out exact accuracy | distinct samples per prompt (of 8) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, key, acc in (("SFT", "sft", "sft"), ("ReST, Grow 1 + 3 Improve", "rest_g1", "improve1c"),
                                ("ReST, Grow 2 + 3 Improve", "rest_g2", "improve2c"),
                                ("control: self-distillation (tau = 0)", "distill", "distill")):
            print(f"| {label} | {col('reward', key)} | {col('solved', key)} | {col('accuracy', acc)} | "
                  f"{col('distinct', key)} |")
        print("\nEach Improve step (training prompts of its Grow; threshold = the quantile of the grown rewards):\n")
        print("| step | threshold tau | kept fraction | mean reward kept | greedy held-out exact accuracy after |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in IMPROVES:
            get = lambda k: mean_sd([rows[s]["kept"][name][k] for s in args.seeds])  # noqa: E731
            print(f"| {name} | {get('threshold')} | {get('kept_fraction')} | {get('reward_kept')} | "
                  f"{col('accuracy', name)} |")


if __name__ == "__main__":
    main()
