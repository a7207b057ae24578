"""`make repro-goldfish`: the goldfish loss's headline effect at CPU scale.

Hans et al. (arXiv 2406.10209), "extreme" setting: LLaMA-2-7B trained 100 epochs on 100
Wikipedia articles reproduces 84/100 verbatim with plain CE and 0/100 with goldfish k=4.
Here: a 0.5 M-parameter Llama trained 100 epochs on 20 pydoc documents (recipes
ce_memorize_tiny and goldfish_tiny): CE, goldfish at h=13 for several k, and k=4 at h=3, each
over several seeds, as Hydra multiruns (SWEEPS);
each job evaluates itself at the end (eval.at_end: greedy 64-token continuation of a 32-token
prefix of every training document) and is evaluated again on 20 held-out documents it never
saw (the "never trained" control). Writes the table into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# One Hydra multirun per entry: (recipe, sweep overrides). Rows of the table: ce, goldfish at
# h=13 for each k (the paper's headline k=4 and its sweep 3, 8, 32), and k=4 with a short hash
# context h=3 (the spec's ablation).
SWEEPS = [
    ("ce_memorize_tiny", []),
    ("goldfish_tiny", ["objective.k={ks}", "objective.context_width=13"]),
    ("goldfish_tiny", ["objective.k=4", "objective.context_width=3"]),
]
PAPER = "LLaMA-2-7B, 100 Wikipedia articles × 100 epochs: CE 84/100 memorized, goldfish k=4 0/100"


def rizzrun() -> str:
    return str(Path(sys.executable).with_name("rizzrun"))


def sweep(out: Path, seeds: list[int], ks: list[int], extra: list[str]) -> list[Path]:
    """Run the SWEEPS as multiruns under `out`; returns the job folders."""
    jobs = []
    for i, (recipe, overrides) in enumerate(SWEEPS):
        overrides = [o.format(ks=",".join(map(str, ks))) for o in overrides]
        folder = out / f"{i}-{recipe}"
        cmd = [rizzrun(), "-m", f"+recipe={recipe}", f"seed={','.join(map(str, seeds))}", "logger=none", *overrides,
               *extra, f"hydra.sweep.dir={folder}"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        jobs += sorted(p for p in folder.iterdir() if (p / "summary.json").exists())
    return jobs


def heldout_control(job: Path, n: int) -> dict:
    """Memorization of documents the run never trained on: what "not memorized" looks like."""
    done = subprocess.run([rizzrun(), "eval", str(job), "--documents", "val", "--max-documents", str(n),
                           "--output", "eval_heldout.json"], check=True, capture_output=True, text=True, cwd=ROOT)
    print(job.name, done.stdout.strip().splitlines()[1], flush=True)
    return json.loads((job / "eval_heldout.json").read_text())


def label_of(cfg: dict) -> str:
    objective = cfg["objective"]
    if objective["_target_"].endswith("CrossEntropy"):
        return "ce"
    return f"goldfish k={objective['k']} h={objective['context_width']}"


def collect(jobs: list[Path], n_control: int) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for job in jobs:
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        summary = json.loads((job / "summary.json").read_text())
        trained = json.loads((job / "eval.json").read_text())  # eval.at_end: the training documents
        control = heldout_control(job, n_control)
        mem = trained["memorization"]
        rows.setdefault(label_of(cfg), []).append({
            "seed": cfg["seed"], "exact": mem["exact_match_rate"], "exact_n": mem["exact_matches"],
            "docs": mem["documents"], "token": mem["token_match"], "rougeL": mem["rougeL"],
            "val_loss": trained["val"]["loss"], "control_rougeL": control["memorization"]["rougeL"],
            "control_token": control["memorization"]["token_match"], "seconds": summary["seconds"],
        })
    return rows


def mean_pm(values: list[float], fmt: str) -> str:
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:{fmt}} ± {s:{fmt}}"


def order(label: str) -> tuple:
    """ce first, then goldfish by decreasing h and increasing k."""
    if label == "ce":
        return (0,)
    k, h = (int(part.split("=")[1]) for part in label.split()[1:])
    return (1, -h, k)


def table(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| objective | seeds | documents memorized (exact, of 20) | exact-match rate | token match | RougeL | "
        "RougeL, held-out docs (never trained) | validation loss (nats/byte) |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for label in sorted(rows, key=order):
        rs = rows[label]
        lines.append(
            f"| {label} | {len(rs)} | {', '.join(str(r['exact_n']) for r in rs)} | {mean_pm([r['exact'] for r in rs], '.2f')} | "
            f"{mean_pm([r['token'] for r in rs], '.3f')} | {mean_pm([r['rougeL'] for r in rs], '.3f')} | "
            f"{mean_pm([r['control_rougeL'] for r in rs], '.3f')} | {mean_pm([r['val_loss'] for r in rs], '.3f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 4, 8, 32], help="goldfish k values at h=13")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "goldfish")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("extra", nargs="*", help="more overrides for every job")
    args = parser.parse_args()

    started = time.perf_counter()
    jobs = sweep(args.out / time.strftime("%Y-%m-%d_%H-%M-%S"), args.seeds, args.ks, args.extra)
    rows = collect(jobs, n_control=20)
    minutes = (time.perf_counter() - started) / 60
    per_run = statistics.mean(r["seconds"] for rs in rows.values() for r in rs)
    body = "\n".join([
        "## Goldfish loss (Hans et al., arXiv 2406.10209)",
        "",
        f"Paper ({PAPER}). Here: `make repro-goldfish` "
        f"(`python repro/goldfish.py --seeds {' '.join(map(str, args.seeds))} --ks {' '.join(map(str, args.ks))}`"
        f"{' ' + ' '.join(args.extra) if args.extra else ''}) — "
        "a 0.5 M-parameter Llama (2 layers, d_model 128, byte tokenizer) trained 600 steps (100 epochs) on 20 pydoc "
        "documents, one per padded row (recipes `ce_memorize_tiny`, `goldfish_tiny`); memorization = greedy 64-byte continuation of each "
        "document's first 32 bytes; mean ± standard deviation over seeds; "
        f"{per_run:.0f} s per run, {minutes:.1f} min in all on 2 CPU cores.",
        "",
        table(rows),
        "",
    ])
    write_section(args.results, "goldfish", body)
    (args.out / "latest.json").write_text(json.dumps(rows, indent=2))
    print(body)


if __name__ == "__main__":
    main()
