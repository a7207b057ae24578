"""`make repro-score`: SCoRe (Kumar et al., arXiv 2409.12917) vs naive multi-turn RL on the built-in
2-digit addition task, two attempts per problem (y_1; then " retry:" and the restated problem, y_2).

Each seed: `sft_retry_tiny` from that seed's `sft_tiny` run (half the training problems written as a
wrong sum, EOS, " retry:" and the corrected sum), then from it
  (a) naive multi-turn RL: `score_naive_tiny` (reward r1 on turn 1, r2 on turn 2, KL beta_1), 120 steps;
  (b) Stage II only: `score_tiny` from the SFT run, 120 steps;
  (c) Stage I (`score_stage1_tiny`, 60 steps) -> Stage II (`score_tiny`, 60 steps), KL to the SFT model.
Judged here (`rizzrun.objectives.score.evaluate_attempts`): greedy first and second attempts on the 200
held-out problems: Accuracy@t1, Accuracy@t2, Δ, Δ^{i→c}, Δ^{c→i}, edit distance ratio between the
attempts; and the same metrics of the sampled training rollouts (T = 1) over the last 20 steps
(metrics.jsonl train/*). A diagnostic (--diagnostic-seeds, default 0): (a), (b), (c) again at lr 1e-4
(5x the recipes'), where the policy moves further from the SFT model in the same 120 steps.
Every run: one torch thread, logger=none; an unfinished run folder is started again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import finished_sft, log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMMON = ["logger=none", "trainer.num_threads=1", "eval.at_end=false"]
KEYS = ("accuracy@t1", "accuracy@t2", "delta/t1_t2", "delta/i_to_c", "delta/c_to_i", "edit_distance_ratio")


def run(recipe: str, overrides: list[str], seed: int, out: Path, tag: str) -> Path:
    """One run's folder (a finished one is reused)."""
    folder = out / f"{tag}-s{seed}"
    cmd = [sys.executable, "-m", "rizzrun.cli", f"+recipe={recipe}", *overrides, f"seed={seed}", *COMMON,
           f"hydra.run.dir={folder}"]
    done = folder / "summary.json"
    if not (done.exists() and json.loads(done.read_text()).get("status") == "completed"):
        if folder.exists():  # a run left unfinished (killed): started again from scratch
            shutil.rmtree(folder)
        log("$ rizzrun", " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


def greedy_attempts(folder: Path) -> dict:
    """evaluate_attempts on the 200 held-out problems (cached in the run folder)."""
    cache = folder / "attempts.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import torch

    from rizzrun.data.arithmetic import generate_problems
    from rizzrun.objectives.score import evaluate_attempts
    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    _, tokenizer, model = load_run(folder)
    _, val = generate_problems(5000, 200, 2, 0.1, 0)
    out = evaluate_attempts(model, tokenizer, [f"{a}+{b}=" for a, b in val], [a + b for a, b in val],
                            instruction=" retry:", restate_prompt=True, max_new_tokens=6)
    cache.write_text(json.dumps(out, indent=1))
    return out


def sampled(folder: Path, last: int = 20) -> dict:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "train/accuracy@t1" in r]
    tail = [r for r in rows if r["step"] > rows[-1]["step"] - last]
    return {k: sum(r[f"train/{k}"] for r in tail) / len(tail) for k in KEYS}


def seconds(*folders: Path) -> float:
    return sum(json.loads((f / "summary.json").read_text())["seconds"] for f in folders)


def one_seed(seed: int, out: Path) -> dict:
    sft = finished_sft(seed) or run("sft_tiny", [], seed, out, "sft_tiny")  # repro-preference's, else made here
    base = run("sft_retry_tiny", [f"model.from_pretrained={sft}"], seed, out, "sft_retry")
    naive = run("score_naive_tiny", [f"model.from_pretrained={base}"], seed, out, "naive")
    stage2 = run("score_tiny", [f"model.from_pretrained={base}", f"objective.models.reference={base}",
                                "trainer.max_steps=120"], seed, out, "stage2_only")
    stage1 = run("score_stage1_tiny", [f"model.from_pretrained={base}"], seed, out, "stage1")
    score = run("score_tiny", [f"model.from_pretrained={stage1}", f"objective.models.reference={base}"], seed, out,
                "stage1_stage2")
    return {
        "sft": {"greedy": greedy_attempts(base), "seconds": seconds(base)},
        "naive": {"greedy": greedy_attempts(naive), "sampled": sampled(naive), "seconds": seconds(naive)},
        "stage2": {"greedy": greedy_attempts(stage2), "sampled": sampled(stage2), "seconds": seconds(stage2)},
        "stage1": {"greedy": greedy_attempts(stage1), "sampled": sampled(stage1), "seconds": seconds(stage1)},
        "score": {"greedy": greedy_attempts(score), "sampled": sampled(score), "seconds": seconds(stage1, score)},
    }


def high_lr(seed: int, out: Path, lr: str = "1e-4") -> dict:
    """The diagnostic: naive, Stage II only and Stage I -> II at a 5x larger learning rate (the policy moves
    further from the SFT model)."""
    base = run("sft_retry_tiny", [], seed, out, "sft_retry")  # made by one_seed already
    naive = run("score_naive_tiny", [f"model.from_pretrained={base}", f"optimizer.lr={lr}"], seed, out,
                f"naive_lr{lr}")
    stage2 = run("score_tiny", [f"model.from_pretrained={base}", f"objective.models.reference={base}",
                                "trainer.max_steps=120", f"optimizer.lr={lr}"], seed, out, f"stage2_only_lr{lr}")
    stage1 = run("score_stage1_tiny", [f"model.from_pretrained={base}", f"optimizer.lr={lr}"], seed, out,
                 f"stage1_lr{lr}")
    score = run("score_tiny", [f"model.from_pretrained={stage1}", f"objective.models.reference={base}",
                               f"optimizer.lr={lr}"], seed, out, f"stage1_stage2_lr{lr}")
    res = {key: {"greedy": greedy_attempts(f), "sampled": sampled(f), "seconds": seconds(f), "kl": final_kl(f)}
           for key, f in (("naive", naive), ("stage2", stage2), ("score", score))}
    res["score"]["seconds"] += seconds(stage1)
    return res


def final_kl(folder: Path, last: int = 20) -> float:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "train/kl/t1" in r]
    tail = [r for r in rows if r["step"] > rows[-1]["step"] - last]
    return sum((r["train/kl/t1"] + r["train/kl/t2"]) / 2 for r in tail) / len(tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "score")
    parser.add_argument("--diagnostic-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    found = [one_seed(seed, args.out) for seed in args.seeds]
    folders = {"naive": "naive", "stage2": "stage2_only", "stage1": "stage1", "score": "stage1_stage2"}
    for f, seed in zip(found, args.seeds):
        for key, tag in folders.items():
            f[key]["kl"] = final_kl(args.out / f"{tag}-s{seed}")
    hi = [high_lr(seed, args.out) for seed in args.diagnostic_seeds]
    n = len(args.seeds)
    minutes = (sum(v["seconds"] for f in found for v in f.values())
               + sum(v["seconds"] for f in hi for v in f.values())) / 60
    labels = (("SFT with retry template (start)", "sft", "sft_retry_tiny"),
              ("(a) naive multi-turn RL, 120 steps", "naive", "score_naive_tiny"),
              ("(b) Stage II only, 120 steps", "stage2", "score_tiny from sft_retry_tiny"),
              ("Stage I, 60 steps", "stage1", "score_stage1_tiny"),
              ("(c) Stage I 60 → Stage II 60 (SCoRe)", "score", "score_stage1_tiny → score_tiny"))
    heading = "## SCoRe: self-correction by multi-turn RL (arXiv 2409.12917)"
    with record(args.results, "score", heading):
        print(f"""Here: `make repro-score` (`python repro/score.py --seeds {' '.join(map(str, args.seeds))}`), 2-digit addition,
two attempts: y_1 to "a+b=", then x_2 = prompt ++ y_1 ++ EOS ++ " retry:" ++ "a+b=", y_2. Start: `sft_retry_tiny`
(the seed's `sft_tiny` run, 300 more steps on sums where half the training problems are a wrong sum followed by
" retry:" and the corrected sum). RL: 8 prompts × 8 attempt pairs per step, lr 2e-5, REINFORCE with the group-mean
baseline per turn, k3 KL to the SFT model on each turn's own tokens (β_1 = 0.01; Stage I β_2 = 0.1 on turn 1),
α = 10, turn credit (each attempt trained on its own turn reward). Mean ± sd over {n} seed(s);
{minutes:.1f} min of training in all (shared 2-core machine, one thread per run).

Paper's claim: naive multi-turn RL collapses (Δ ≈ 0, edits → 0); SCoRe keeps Δ(t1, t2) > 0 (MATH: +4.4 points).

### Greedy attempts on the 200 held-out problems

| model | recipe | Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ^(i→c) | Δ^(c→i) | edit distance ratio |
| --- | --- | --- | --- | --- | --- | --- | --- |""")
        for label, key, recipe in labels:
            rs = [f[key]["greedy"] for f in found]
            print(f"| {label} | `{recipe}` | " + " | ".join(mean_sd([r[k] for r in rs]) for k in KEYS) + " |")
        print("""
### Sampled training rollouts (T = 1), mean of the last 20 steps

KL: the k3 KL to the SFT model per generated token, mean of turn 1's and turn 2's.

| model | Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ^(i→c) | Δ^(c→i) | edit distance ratio | KL |
| --- | --- | --- | --- | --- | --- | --- | --- |""")
        for label, key, _ in labels[1:]:
            rs = [f[key]["sampled"] for f in found]
            print(f"| {label} | " + " | ".join(mean_sd([r[k] for r in rs]) for k in KEYS) + " | "
                  + mean_sd([f[key]["kl"] for f in found], ".4f") + " |")
        if hi:
            print(f"""
### Diagnostic: learning rate 1e-4 (5x), seed(s) {' '.join(map(str, args.diagnostic_seeds))}

| model | greedy Acc@t1 | greedy Acc@t2 | greedy Δ | greedy Δ^(i→c) | greedy Δ^(c→i) | greedy edit ratio | sampled edit ratio (last 20) | KL |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |""")
            for label, key in (("naive multi-turn RL", "naive"), ("Stage II only (α = 10)", "stage2"),
                               ("Stage I → Stage II (SCoRe)", "score")):
                rs = [f[key] for f in hi]
                print(f"| {label} | " + " | ".join(mean_sd([r["greedy"][k] for r in rs]) for k in KEYS) + " | "
                      + mean_sd([r["sampled"]["edit_distance_ratio"] for r in rs]) + " | "
                      + mean_sd([r["kl"] for r in rs], ".4f") + " |")
        get = lambda key, k: statistics.mean(f[key]["greedy"][k] for f in found)  # noqa: E731
        print(f"""
Reading (greedy, mean over seeds): Δ(t1,t2) SFT {get('sft', 'delta/t1_t2'):+.3f}, naive {get('naive', 'delta/t1_t2'):+.3f},
Stage II only {get('stage2', 'delta/t1_t2'):+.3f}, SCoRe {get('score', 'delta/t1_t2'):+.3f}; edit distance ratio SFT
{get('sft', 'edit_distance_ratio'):.3f}, naive {get('naive', 'edit_distance_ratio'):.3f}, SCoRe {get('score', 'edit_distance_ratio'):.3f}.
The paper's direction (naive: Δ ≈ 0 and edits → 0; SCoRe: Δ > 0) holds only if naive's edit ratio falls well
below the SFT model's and SCoRe's Δ is positive beyond the spread over seeds (one accuracy on 200 problems
has a standard error of about 0.02). The SFT model's second attempt nearly always changes its answer (its
corpus only corrects wrong sums), so the "keep" mode naive RL collapses to is rarely sampled at T = 1;
see the notes of this repro (score helper) for the analysis.""")
    (args.out / "found.json").write_text(json.dumps({"main": found, "high_lr": hi}, indent=1))


if __name__ == "__main__":
    main()
