"""`make repro-preference`: DPO, D²PO, SMPO and RRM on the built-in 2-digit addition task.

Each seed: an SFT run (`sft_tiny`) and, from its checkpoint, `dpo_tiny`, `dpo_precomputed_tiny`,
`d2po_tiny` at gamma 0.9 and at gamma 1.0 (plain DPO on the same length-confounded pairs),
`smpo_tiny`, and the reward models `rm_tiny` and `rrm_tiny`. Read from each run's eval.json
(held-out pairs: `val`, eval sets `clean`/`flipped`; greedy answers to 200 held-out prompts:
`task`), its metrics.jsonl (`val/logps/chosen`) and summary.json (seconds). Computed here: the
rate of greedy answers with text after the number (`rizzrun.data.arithmetic.extra_text`), and the
SFT model's own held-out DPO metrics (the policy at DPO's start: accuracy 0, loss ln 2 by
construction, its `logps/chosen` is where the likelihood curves start). Papers: DPO
arXiv 2305.18290, D²PO arXiv 2502.14340, SMPO (VikhrModels/effective_llm_alignment, no paper),
RRM arXiv 2409.13156. Every run uses one torch thread (`trainer.num_threads=1`): on a shared
2-core machine torch's default thread pool made the same run 10-20x slower.
"""

from __future__ import annotations

import argparse
import statistics
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the rizzrun next to this script (the one the runs use, via -m)
COMMON = ["logger=none", "trainer.num_threads=1"]
# (key, recipe, overrides) of the runs that start from the seed's SFT run.
FROM_SFT = [
    ("dpo", "dpo_tiny", []),
    ("dpo_pre", "dpo_precomputed_tiny", []),
    ("rpo", "dpo_tiny", ["objective.rpo_alpha=1.0"]),
    # Control for RPO's NLL term: the same 300 steps at DPO's lr, SFT only (no pairs, no preference).
    ("sft_more", "sft_tiny", ["trainer.max_steps=300", "optimizer.lr=1e-4", "scheduler.warmup_steps=10",
                              "trainer.val_every=100", "trainer.checkpoint_every=100"]),
    ("d2po", "d2po_tiny", []),
    ("d2po_g1", "d2po_tiny", ["objective.gamma=1.0"]),
    ("smpo", "smpo_tiny", []),
    ("rm", "rm_tiny", []),
    ("rrm", "rrm_tiny", []),
]


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def run(recipe: str, overrides: list[str], seed: int, out: Path) -> Path:
    """One run's folder; a finished run of the same job in `out` is reused (as repro/mixers.py)."""
    named = [o.replace("=", "_") for o in overrides if not o.startswith("model.from_pretrained=")]
    folder = out / "-".join([recipe, *named, f"s{seed}"])  # the SFT folder is the seed's own
    cmd = [sys.executable, "-m", "rizzrun.cli", f"+recipe={recipe}", *overrides, f"seed={seed}", *COMMON,
           f"hydra.run.dir={folder}"]
    done = folder / "summary.json"
    if not (done.exists() and json.loads(done.read_text()).get("status") == "completed"):
        log("$ rizzrun", " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


def sft_as_dpo_policy(sft: Path, dpo: Path) -> dict:
    """Held-out DPO metrics of the SFT model itself (policy = reference = the SFT checkpoint), as
    the DPO run's objective computes them: the start of DPO's curves. Cached in the DPO folder."""
    cache = sft / "as_dpo_policy.json"  # in the judged policy's own folder
    if cache.exists():
        return json.loads(cache.read_text())
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rizzrun.eval.task import objective_metrics
    from rizzrun.paths import cache_root
    from rizzrun.runner.checkpoint import checked_checkpoint
    from rizzrun.runner.evaluate import run_objective
    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    _, tokenizer, policy = load_run(sft)
    cfg = OmegaConf.load(dpo / "config.yaml")
    data = instantiate(cfg.data)
    data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
    objective, extra = run_objective(cfg, tokenizer, data, checked_checkpoint(dpo, None), policy)
    metrics = objective_metrics(objective, policy, data.val_batches(), extra)
    cache.write_text(json.dumps(metrics, indent=1))
    return metrics


def collect(folder: Path, policy: bool) -> dict:
    ev = json.loads((folder / "eval.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    vals = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [r for r in vals if "val/loss" in r]
    row = {"seconds": summary["seconds"], "val": ev["val"], "sets": ev.get("sets", {}),
           "logps_curve": [(r["step"], r.get("val/logps/chosen")) for r in vals]}
    if policy:  # greedy answers to every held-out prompt, checked (eval.json `task`)
        task = ev["task"]
        row.update(correct=task["correct_rate"], new_tokens=task["mean_new_tokens"], eos=task["eos_rate"],
                   extra=task["extra_text_rate"])
    return row


def cell(rows: list[dict], get, fmt: str = ".3f") -> str:
    return mean_sd([float(get(r)) for r in rows], fmt)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "preference")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()

    found: dict[str, list[dict]] = {}
    for seed in args.seeds:
        sft = run("sft_tiny", [], seed, args.out)
        found.setdefault("sft", []).append(collect(sft, policy=True))
        for key, recipe, overrides in FROM_SFT:
            folder = run(recipe, [f"model.from_pretrained={sft}", *overrides], seed, args.out)
            found.setdefault(key, []).append(collect(folder, policy=not recipe.startswith(("rm", "rrm"))))
            if key == "dpo":
                dpo = folder
                found["sft"][-1]["as_dpo"] = sft_as_dpo_policy(sft, folder)
            if key == "sft_more":  # judged on the pairs as DPO judges its policy (reference: the SFT model)
                found[key][-1]["val"] = sft_as_dpo_policy(folder, dpo)
    for row in found["sft"]:  # the SFT model as DPO's policy at step 0
        row["val"] = {**row["val"], **row.pop("as_dpo")}

    seeds = " ".join(map(str, args.seeds))
    minutes = sum(r["seconds"] for rs in found.values() for r in rs) / 60
    n = len(args.seeds)
    sec = lambda key: cell(found[key], lambda r: r["seconds"], ".0f")  # noqa: E731
    acc = lambda r: r["val"]["rewards/accuracies"]  # noqa: E731
    heading = "## Preference objectives: DPO, D²PO, SMPO, RRM (arXiv 2305.18290, 2502.14340, 2409.13156)"
    with record(args.results, "preference", heading):
        print(f"""Here: `make repro-preference` (`python repro/preference.py --seeds {seeds}`), the built-in 2-digit addition
task (`data=arithmetic_sft` / `arithmetic_pairs`: prompt "37+48=", chosen the sum, rejected a plausible wrong sum,
200 held-out problems never trained on). Per seed, `sft_tiny` (the tiny Llama, 4 × 192, byte tokenizer) and, from
that checkpoint (`model.from_pretrained=<its folder>`), each preference recipe; every run with `seed=S logger=none
trainer.num_threads=1`. "correct" = greedy answers to the held-out prompts that the task's verifier accepts
(eval.json `task`), "extra text" = answers with anything after the number; preference metrics on the 200 held-out
pairs (eval.json `val`). Mean ± standard deviation over {n} seeds; {minutes:.1f} min of training in all on 2 CPU cores.
""")
        print("""### DPO (Rafailov et al., arXiv 2305.18290)

Claim (spec `dpo.md`, tiny setup): held-out `rewards/accuracies` rises from 0 to > 0.9, margins rise, and more greedy
generations have the preferred property than the SFT model's; `logps/chosen` often falls (known DPO behaviour).
`dpo_precomputed_tiny` (reference log-probs computed once) should follow `dpo_tiny` up to float summation order.

| model | recipe | held-out pair accuracy | margin | logps/chosen | correct (greedy) | extra text | seconds per run |
| --- | --- | --- | --- | --- | --- | --- | ---: |""")
        for label, key, recipe in (("SFT (= DPO at step 0)", "sft", "sft_tiny"), ("DPO", "dpo", "dpo_tiny"),
                                   ("DPO, precomputed reference", "dpo_pre", "dpo_precomputed_tiny"),
                                   ("DPO + chosen NLL (RPO, α = 1)", "rpo", "dpo_tiny objective.rpo_alpha=1.0"),
                                   ("SFT 300 steps more (control for RPO's NLL)", "sft_more",
                                    "sft_tiny trainer.max_steps=300 optimizer.lr=1e-4")):
            rs = found[key]
            print(f"| {label} | `{recipe}` | {cell(rs, acc)} | {cell(rs, lambda r: r['val']['rewards/margins'])} | "
                  f"{cell(rs, lambda r: r['val']['logps/chosen'], '.2f')} | {cell(rs, lambda r: r['correct'])} | "
                  f"{cell(rs, lambda r: r['extra'])} | {sec(key)} |")
        diff = max(abs(a["val"][k] - b["val"][k]) for a, b in zip(found["dpo"], found["dpo_pre"])
                   for k in ("loss", "rewards/accuracies", "logps/chosen"))
        print(f"\nLargest difference dpo_tiny vs dpo_precomputed_tiny over seeds (loss, accuracy, logps/chosen): {diff:.2g}.")

        print("""
### D²PO (Shao et al., arXiv 2502.14340)

Paper: weighting per-token log-ratios by γ^t (γ = 0.98) gives +5.9–8.8 points AlpacaEval 2 and +3.3–9.7 Arena-Hard
over DPO, with shorter responses. Here the length confound: half the training chosen answers end in " Sure!"
(`d2po_tiny`, `data.artifact_rate=0.5`), no rejected one does; the same recipe with `objective.gamma=1.0` is plain
DPO on the same pairs. Expected: similar accuracy, fewer answers that copy the filler, shorter answers for γ < 1.

| objective | recipe | held-out pair accuracy | correct (greedy) | extra text | mean new tokens | seconds per run |
| --- | --- | --- | --- | --- | --- | ---: |""")
        for label, key, recipe in (("SFT", "sft", "sft_tiny"), ("DPO (γ = 1)", "d2po_g1", "d2po_tiny objective.gamma=1.0"),
                                   ("D²PO (γ = 0.9)", "d2po", "d2po_tiny")):
            rs = found[key]
            print(f"| {label} | `{recipe}` | {cell(rs, acc)} | {cell(rs, lambda r: r['correct'])} | "
                  f"{cell(rs, lambda r: r['extra'])} | {cell(rs, lambda r: r['new_tokens'], '.2f')} | {sec(key)} |")

        print("""
### SMPO (VikhrModels/effective_llm_alignment; no paper)

Claim: reaches its target margin (0.35 on length-normalised log-likelihood) without the likelihood collapse of DPO:
chosen log-likelihood stays roughly where the SFT model had it. (SMPO's rewards are β·mean log-prob, no reference,
so its accuracy is a different ranking from DPO's; compare `logps/chosen`, summed over the answer and EOS.)

| objective | recipe | held-out pair accuracy | logps/chosen at SFT → end | correct (greedy) | seconds per run |
| --- | --- | --- | --- | --- | ---: |""")
        start = cell(found["sft"], lambda r: r["val"]["logps/chosen"], ".2f")
        for label, key, recipe in (("DPO", "dpo", "dpo_tiny"), ("SMPO", "smpo", "smpo_tiny")):
            rs = found[key]
            print(f"| {label} | `{recipe}` | {cell(rs, acc)} | {start} → {cell(rs, lambda r: r['val']['logps/chosen'], '.2f')} | "
                  f"{cell(rs, lambda r: r['correct'])} | {sec(key)} |")

        print("""
### RRM (Liu et al., arXiv 2409.13156)

Paper: RewardBench accuracy 80.61% → 84.15% (Gemma-2-9b-it pairwise RM → RRM); DPO policies on RRM labels: MT-Bench
7.27 → 8.31, AlpacaEval-2 length-controlled 33.46% → 52.49%. Here: Bradley–Terry reward models (scalar head on the
SFT model) on pairs where 80% of the training chosen answers end in " Sure!" and no rejected one does; held-out
reward accuracy on pairs without the artifact (clean) and with it on the rejected answer only (flipped). Expected:
the plain RM falls on flipped, RRM stays high, clean kept.

| reward model | recipe | clean accuracy | flipped accuracy | seconds per run |
| --- | --- | --- | --- | ---: |""")
        for label, key, recipe in (("Bradley–Terry RM", "rm", "rm_tiny"), ("RRM", "rrm", "rrm_tiny")):
            rs = found[key]
            print(f"| {label} | `{recipe}` | {cell(rs, lambda r: r['sets']['clean']['rewards/accuracies'])} | "
                  f"{cell(rs, lambda r: r['sets']['flipped']['rewards/accuracies'])} | {sec(key)} |")
        m = lambda key, get: statistics.mean(float(get(r)) for r in found[key])  # noqa: E731
        correct = lambda r: r["correct"]  # noqa: E731
        flipped = lambda r: r["sets"]["flipped"]["rewards/accuracies"]  # noqa: E731
        print(f"""
Verdict at this scale ({n} seeds). Reproduced: DPO's held-out preference accuracy rises from 0 to {m('dpo', acc):.2f}
(not > 0.9 in 300 steps) and the precomputed reference gives the same run; SMPO reaches {m('smpo', acc):.2f} and keeps
the chosen likelihood ({m('sft', lambda r: r['val']['logps/chosen']):.2f} → {m('smpo', lambda r: r['val']['logps/chosen']):.2f})
where DPO's collapses (→ {m('dpo', lambda r: r['val']['logps/chosen']):.2f}); the plain RM learns the artifact
(flipped accuracy {m('rm', flipped):.2f}) and RRM raises it to {m('rrm', flipped):.2f} while clean accuracy rises too.
Not reproduced: (1) plain DPO lowers the rate of correct greedy answers ({m('sft', correct):.3f} → {m('dpo', correct):.3f})
although it ranks held-out pairs right: the chosen answers lose ~10 nats and the freed mass goes to continuing
past the number (extra text {m('dpo', lambda r: r['extra']):.2f}: end-of-answer lost) — likelihood displacement, chosen and
rejected sharing their first digit and EOS. Adding the chosen NLL (RPO, α = 1) keeps the answers and raises the
correct rate to {m('rpo', correct):.3f}, but the same 300 steps of SFT alone reach {m('sft_more', correct):.3f} (and rank
{m('sft_more', acc):.2f} of the held-out pairs right by DPO's implicit reward): at this scale the gain over the SFT model
comes from more SFT (the 800-step SFT model is undertrained), not from the preference term. (2) D²PO copies more of the filler than DPO here ({m('d2po', lambda r: r['extra']):.2f} vs
{m('d2po_g1', lambda r: r['extra']):.2f} extra text; the opposite direction): with γ < 1 the artifact's first token, right
after the digits, keeps almost full weight while the rest is discounted, and the model learns to continue after
the number without the full " Sure!"; the paper's setting (long answers with late filler) is not what a 2–3-token
answer gives.""")
    (args.out / "latest.json").write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
