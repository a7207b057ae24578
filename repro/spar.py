"""`make repro-spar`: SPaR (Cheng et al., arXiv 2412.11605) on the signed reversal task
(rizzrun.data.signed: "rev:abcdef=" -> "fedcba/" + any 3 letters: many right answers).

Each seed runs the pipeline recipes/spar_tiny.yaml: one multitask SFT model continuing a lower-case
reversal model (actor + refiner, 20% of
the actor's demonstrations with a wrong letter), 4 samples (T = 1) of 300 training instructions,
BFS tree search of the refiner's repairs of every failing sample (k = 3, <= 4 expansions, depth 3,
judge = the task's checker), DPO (100 steps, batch 16, beta 0.1, lr 1e-5) on the SPaR pairs; the
control, DPO with the same budget on independent pairs of the same samples (a right sample > a
failing sample of the same prompt); the learned-judge arm (the refiner's own yes/no judges roots and
repairs); refiner RFT and a second iteration. Read from the runs: the share of the 200 held-out
instructions whose greedy answer is right (eval_* stages), the pairs' count and mean edit distance
between chosen and rejected, the search's success rate, the share of SPaR chosen answers that are
really right, the refiner's judging accuracy against the checker. Every run: one torch thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import log, run_into, status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "trainer.num_threads=1"]


def rizzrun(args: list[str], folder: Path) -> Path:
    """One pipeline into `folder`; a completed one is reused, a stopped one resumed. (repro/runs.py)"""
    return run_into(args, folder, COMMON)


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def heldout(folder: Path) -> float | None:
    done = folder / "summary.json"
    if not done.exists() or summary(folder).get("status") != "completed":
        return None
    return summary(folder)["splits"]["val"]["reward"]


class _Missing(dict):
    """The summary of a stage that has not finished: every number None (shown as –)."""

    def __getitem__(self, key):
        return None


def stage(folder: Path) -> dict:
    done = folder / "summary.json"
    if done.exists() and summary(folder).get("status") == "completed":
        return summary(folder)
    return _Missing()


def seed_runs(seed: int, out: Path, partial: bool = False) -> dict:
    pipe = out / f"spar_tiny-s{seed}"
    base = ROOT / "outputs" / "repro" / "rest" / f"rest_tiny-s{seed}" / "sft"  # the same run: sft_reverse_tiny, seed
    if not partial and not (pipe / "base").exists() and status(base) == "completed":
        log(f"base stage: {base} (make repro-rest's, the same recipe and seed)")
        shutil.copytree(base, pipe / "base")
    if not partial:
        rizzrun(["+recipe=spar_tiny", f"seed={seed}"], pipe)
    refine, learned, refine2 = stage(pipe / "refine"), stage(pipe / "refine_learned"), stage(pipe / "refine2")
    ratio = lambda s: None if s["samples"] is None else s["right_samples"] / s["samples"]  # noqa: E731
    return {
        "accuracy": {"sft": heldout(pipe / "eval_sft"), "spar": heldout(pipe / "eval_dpo"),
                     "independent": heldout(pipe / "eval_independent"), "learned": heldout(pipe / "eval_learned"),
                     "spar2": heldout(pipe / "eval_dpo2")},
        "pairs": {"spar": refine["spar_pairs"], "independent": refine["independent_pairs"],
                  "learned": learned["spar_pairs"], "spar2": refine2["spar_pairs"]},
        "distance": {"spar": refine["spar_distance"], "independent": refine["independent_distance"],
                     "learned": learned["spar_distance"], "spar2": refine2["spar_distance"]},
        "success": {"spar": refine["search_success"], "learned": learned["search_success"],
                    "spar2": refine2["search_success"]},
        "chosen_right": {"spar": refine["spar_chosen_right"], "learned": learned["spar_chosen_right"],
                         "spar2": refine2["spar_chosen_right"]},
        "judge": {"sft": refine["refiner_judge_accuracy"], "rft": refine2["refiner_judge_accuracy"]},
        "samples_right": {"sft": ratio(refine), "spar": ratio(refine2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "spar")
    parser.add_argument("--partial", action="store_true",
                        help="run nothing: tabulate the stages that finished (– for the others; n per cell)")
    args = parser.parse_args()
    rows = {s: seed_runs(s, args.out, args.partial) for s in args.seeds}

    def col(key, name):
        values = [rows[s][key][name] for s in args.seeds if rows[s][key][name] is not None]
        if not values:
            return "–"
        return mean_sd(values) + (f" (n={len(values)})" if len(values) < len(args.seeds) else "")

    n = len(args.seeds)
    with record(ROOT / "docs" / "results.md", "spar", "## SPaR (arXiv 2412.11605): tree-search refinement pairs vs "
                                                     "independent pairs"):
        print(f"`make repro-spar` ({n} seed{'s' * (n > 1)}; mean ± sd). Task: signed reversal "
              "(`rev:abcdef=` -> `fedcba/` + any 3 letters: `fedcba/xyz` is right); one "
              "multitask SFT model (300 steps, continuing sft_reverse_tiny) is actor and refiner; 4 samples (T = 1) of 300 training "
              "instructions; BFS over the refiner's repairs (k = 3, <= 4 expansions, depth 3); every DPO: 100 "
              "steps, batch 16, beta 0.1, lr 1e-5, from the SFT model (iteration 2: from iteration 1's). "
              "Held-out: greedy answers to 200 held-out instructions, checked.\n")
        print("| actor | pairs | chosen-rejected edit distance | search success | SPaR chosen really right | "
              "held-out greedy right |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| SFT | – | – | – | – | {col('accuracy', 'sft')} |")
        print(f"| DPO on SPaR pairs (checker judge) | {col('pairs', 'spar')} | {col('distance', 'spar')} | "
              f"{col('success', 'spar')} | {col('chosen_right', 'spar')} | {col('accuracy', 'spar')} |")
        print(f"| DPO on independent pairs (control) | {col('pairs', 'independent')} | "
              f"{col('distance', 'independent')} | – | 1 | {col('accuracy', 'independent')} |")
        print(f"| DPO on SPaR pairs (refiner judge) | {col('pairs', 'learned')} | {col('distance', 'learned')} | "
              f"{col('success', 'learned')} | {col('chosen_right', 'learned')} | {col('accuracy', 'learned')} |")
        print(f"| iteration 2: DPO on SPaR pairs of the iteration-1 actor, RFT refiner | {col('pairs', 'spar2')} | "
              f"{col('distance', 'spar2')} | {col('success', 'spar2')} | {col('chosen_right', 'spar2')} | "
              f"{col('accuracy', 'spar2')} |")
        print("\nPer seed, held-out greedy right (SFT / SPaR pairs / independent pairs / refiner-judged pairs / "
              "iteration 2) and the two pair sets' edit distances (SPaR / independent):\n")
        print("| seed | SFT | SPaR | independent | refiner judge | iteration 2 | distance SPaR | distance independent |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        show = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        for s in args.seeds:
            a, d = rows[s]["accuracy"], rows[s]["distance"]
            print(f"| {s} | " + " | ".join(show(a[k]) for k in ("sft", "spar", "independent", "learned", "spar2"))
                  + f" | {show(d['spar'])} | {show(d['independent'])} |")
        print(f"\nT = 1 training samples right: SFT actor {col('samples_right', 'sft')}, iteration-1 actor "
              f"{col('samples_right', 'spar')}. Refiner's yes/no agreeing with the checker on the searched "
              f"texts: SFT refiner {col('judge', 'sft')}, after RFT {col('judge', 'rft')}.")


if __name__ == "__main__":
    main()
