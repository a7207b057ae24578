"""`make repro-regenesis`: ReGenesis (Peng et al., arXiv 2410.02108) vs STaR (Zelikman et al., arXiv
2203.14465) on a generated task family (rizzrun.data.reasoning): in-domain add / rev, held-out sub / sort.

Each seed: the seed SFT (recipes/regenesis_seed_tiny: every task type, every stage's format); then
on N new training problems of each in-domain type, each method synthesises paths with the same
path budget (3 samples at T = 1 per problem, 3 hinted ones per problem with none right;
rizzrun.selfplay.regenesis.synthesize) and fine-tunes the seed model on its kept paths for the same
steps (recipes/regenesis_sft_tiny, data=rollouts). Read: greedy direct-answer accuracy on 100
held-out problems of each type (seed model, ReGenesis, STaR), and the synthesis's mechanics (how
often each stage follows its guideline, right answers per stage, kept paths, their distinct-2/3 and
exact styles). Every run: one torch thread. `--lr 1e-4`: the same with a gentler SFT (its own
folders, results section `regenesis-lr1e-4`): how much of the held-out loss is the SFT's strength.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import log, run_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMMON = ["logger=none", "trainer.num_threads=1"]
METHODS = ("regenesis", "star")


def rizzrun(args: list[str], folder: Path) -> Path:
    """One run into `folder`; a completed one is reused, a stopped one resumed. (repro/runs.py)"""
    return run_into(args, folder, COMMON)


def cached(path: Path, make):
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(make(), indent=2) + "\n")
    return json.loads(path.read_text())


def seed_runs(seed: int, out: Path, n_problems: int, n_eval: int, sft_steps: int, lr: float | None = None) -> dict:
    import torch

    from rizzrun.data.reasoning import IN_DOMAIN, TASKS, generate_problems
    from rizzrun.selfplay.regenesis import evaluate, stage_stats, synthesize

    torch.set_num_threads(1)
    base = out / f"s{seed}"
    start = rizzrun(["+recipe=regenesis_seed_tiny", f"seed={seed}"], base / "seed")
    problems = [p for t in IN_DOMAIN for p in generate_problems(t, n_problems, 0, problem_seed=100 + seed)[0]]
    held = [p for t in TASKS for p in generate_problems(t, 0, n_eval, problem_seed=0)[1]]
    row = {"accuracy": {"seed": cached(base / "eval-seed.json", lambda: evaluate(start, held))}, "stats": {}}
    for method in METHODS:
        gen = base / f"{method}-paths"
        log(f"seed {seed}: {method} synthesis of {len(problems)} problems")
        cached(gen / "stats.json", lambda: synthesize(start, gen, method, problems, seed=seed))
        records = [json.loads(x) for x in (gen / "records.jsonl").read_text().splitlines()]
        row["stats"][method] = stage_stats(records)
        tag = method if lr is None else f"{method}-lr{lr:g}"
        sft = rizzrun(["+recipe=regenesis_sft_tiny", f"seed={seed}", f"data.path={gen}",
                       f"model.from_pretrained={start}", f"trainer.max_steps={sft_steps}",
                       f"trainer.val_every={sft_steps}", f"trainer.checkpoint_every={sft_steps}",
                       *([f"optimizer.lr={lr}"] if lr is not None else [])], base / tag)
        row["accuracy"][method] = cached(base / f"eval-{tag}.json", lambda: evaluate(sft, held))
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problems", type=int, default=100, help="training problems per in-domain type")
    parser.add_argument("--eval", type=int, default=100, help="held-out problems per type")
    parser.add_argument("--sft-steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None, help="the SFT's learning rate (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "regenesis")
    args = parser.parse_args()
    rows = {s: seed_runs(s, args.out, args.problems, args.eval, args.sft_steps, args.lr) for s in args.seeds}
    n = len(args.seeds)
    acc = lambda m, tasks: mean_sd([sum(rows[s]["accuracy"][m][t] for t in tasks) / len(tasks)  # noqa: E731
                                    for s in args.seeds])
    stat = lambda m, k: mean_sd([rows[s]["stats"][m][k] for s in args.seeds])  # noqa: E731
    key = "regenesis" if args.lr is None else f"regenesis-lr{args.lr:g}"
    heading = "## ReGenesis vs STaR (arXiv 2410.02108): self-synthesised reasoning paths, generated tasks"
    with record(ROOT / "docs" / "results.md", key, heading + ("" if args.lr is None else f" (SFT lr {args.lr:g})")):
        print(f"`make repro-regenesis` ({n} seed{'s' * (n > 1)}; mean ± sd). Seed SFT: a 0.6M-parameter byte "
              "Llama on add / rev / sub / sort with reasoning paths under 3 general guidelines "
              "(recipes/regenesis_seed_tiny). Loops: "
              f"{args.problems} new problems of each in-domain type (add, rev), 3 paths each (T = 1), 3 hinted "
              f"paths for problems with none right; SFT {args.sft_steps} steps (lr {args.lr or 5e-4:g}) on the kept paths from the seed "
              f"model. Accuracy: greedy direct answers to {args.eval} held-out problems per type.\n")
        print("| model | in-domain (add, rev) | add | rev | held-out types (sub, sort) | sub | sort |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, m in (("seed SFT", "seed"), ("ReGenesis", "regenesis"), ("STaR", "star")):
            print(f"| {label} | {acc(m, ['add', 'rev'])} | {acc(m, ['add'])} | {acc(m, ['rev'])} | "
                  f"{acc(m, ['sub', 'sort'])} | {acc(m, ['sub'])} | {acc(m, ['sort'])} |")
        print("\nSynthesis (per method; adaption / structure: the share that is the guideline's canonical text; "
              "kept: distinct right paths):\n")
        keys = ("adaption_follows", "structure_follows", "path_style_follows", "path_right", "problems_solved",
                "hint_right", "problems_kept", "kept_per_problem", "distinct_2", "distinct_3", "styles",
                "styles_per_problem", "kept_exact")
        print("| method | " + " | ".join(keys) + " |")
        print("| --- |" + " ---: |" * len(keys))
        for m in METHODS:
            print(f"| {m} | " + " | ".join(stat(m, k) if m == "regenesis" or k not in keys[:3] else "–"
                                           for k in keys) + " |")


if __name__ == "__main__":
    main()
