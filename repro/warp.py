"""`make repro-warp`: WARP (Ramé et al., arXiv 2406.16768) at CPU scale on the built-in addition task.

From one SFT run (`sft_tiny`, or --sft FOLDER): M WARP RL runs (`warp_tiny`: REINFORCE on
r - 0.1 log(pi/pi_ema), EMA anchor mu 0.01) with different seeds, and a baseline RL run with a
fixed anchor at the SFT model (`warp_tiny objective.mu=0`: KL-regularised REINFORCE), all with
checkpoints every 20 steps. Then, with the CLI as a user would: `rizzrun merge slerp --init SFT
RUN_1 RUN_2 --lam 0.5` (stage 2) and `rizzrun merge liti --init SFT SLERP --eta E` (stage 3) for
E in {0, 0.1, 0.3, 0.5} (E = 1 is the SLERP itself); for comparison `rizzrun merge linear` of the same
two runs, and LITI of the first run alone (E 0.3, 0.5). Every checkpoint and merge is measured the
same way: 800 completions (the 200 held-out prompts x 4, temperature 1, the same sampler seed for
every model) scored by the run's reward (partial credit exp(-|n - sum| / 3)), and KL(pi || pi_sft)
on those samples: the exact next-token KLs summed along each sampled completion (nats per
completion; unbiased, low variance), beside the plain log-ratio (k1) estimate. The table of
(KL, reward) points is the Pareto plot of the paper's figures, as numbers; the cosine between the
two runs' task vectors says how much a merge can gain (SLERP's gain needs nearly orthogonal ones).
Each run uses one torch thread; the RL runs go in parallel (one process each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMMON = ["logger=none", "trainer.num_threads=1"]
ETAS = (0.0, 0.1, 0.3, 0.5)
SAMPLE_SEED = 20240624  # the sampler seed of every measurement (common random numbers)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def completed(folder: Path) -> bool:
    done = folder / "summary.json"
    return done.exists() and json.loads(done.read_text()).get("status") == "completed"


def train(recipe: str, overrides: list[str], seed: int, folder: Path) -> Path:
    """One run (reused when a finished run is in `folder`)."""
    if not completed(folder):
        cmd = [sys.executable, "-m", "rizzrun.cli", f"+recipe={recipe}", *overrides, f"seed={seed}", *COMMON,
               f"hydra.run.dir={folder}"]
        log("$ rizzrun", " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


def merge(args: list[str], out: Path) -> Path:
    """`rizzrun merge ARGS OUT` (replacing an earlier merge's output: --force), reused when OUT's
    merge.json names the same method, options and input folders at their current checkpoints."""
    record = out / "merge.json"
    if record.exists():
        done = json.loads(record.read_text())
        same = done["method"] == args[0] and all(str(i["path"]) in args for i in done["inputs"]) and all(
            i["checkpoint"] is None or (Path(i["path"]) / "checkpoints" / "latest").read_text().strip() == i["checkpoint"]
            for i in done["inputs"]) and all(v is None or str(v) in args or v == 1.0 for v in done["options"].values())
        if same:
            return out
    cmd = [sys.executable, "-m", "rizzrun.cli", "merge", *args, "--force", str(out)]
    log("$ rizzrun merge", " ".join(cmd[4:]))
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


# --- measurement (in worker processes: `--measure`) ------------------------------------------------

def position_kls(policy, reference, rollout: dict):
    """(N, C) float32 KL(pi(.|x, y<t) || pi_sft(.|x, y<t)) at every completion position (0 elsewhere), the
    full next-token distributions compared along the sampled prefixes: summed over t, an unbiased
    estimate of the sequence KL with far less variance than the sample's log ratio."""
    import torch

    ids, mask, cm = rollout["input_ids"], rollout["attention_mask"], rollout["completion_mask"]
    C = cm.shape[1]
    P = ids.shape[1] - C
    padding = torch.cat([mask[:, :P], torch.ones_like(cm)], dim=1)[:, :-1]
    lp, lq = (torch.log_softmax(m(ids[:, :-1], key_padding_mask=padding)[:, P - 1:].float(), -1)
              for m in (policy, reference))
    return (lp.exp() * (lp - lq)).sum(-1) * cm


def measure(sft: Path, target: str, prompts: int = 200, per_prompt: int = 4, scale: float = 3.0) -> dict:
    """{kl, kl_token, kl_k1, reward, correct, n} of `target` (FOLDER or FOLDER@step-N) against the SFT run."""
    import torch

    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.decoders.sample import Sample
    from rizzrun.rewards.shaping import numeric_closeness
    from rizzrun.rewards.verifiable import leading_integer_match
    from rizzrun.rollouts.logps import completion_logps
    from rizzrun.rollouts.sample import completion_texts, sample_rollout
    from rizzrun.runner.generate import load_run_checkpoint

    torch.set_num_threads(1)
    folder, _, step = target.partition("@")
    _, tokenizer, policy, _ = load_run_checkpoint(Path(folder), step or None)
    _, _, reference, _ = load_run_checkpoint(sft)
    data = ArithmeticPrompts()  # the held-out problems of arithmetic_prompts' defaults (warp_tiny's data)
    data.setup(tokenizer)
    batch = data._batch("val", range(prompts))
    decoder = Sample(max_new_tokens=6, temperature=1.0, seed=SAMPLE_SEED)
    with torch.no_grad():
        rollout = sample_rollout(policy, decoder, batch, per_prompt, tokenizer.eos_id)
        lp = completion_logps(policy, rollout).sum(-1)
        lr = completion_logps(reference, rollout).sum(-1)
        kls = position_kls(policy, reference, rollout)
    texts = completion_texts(rollout, tokenizer)
    shown, columns = data.columns(rollout["row"])
    reward = numeric_closeness(shown, texts, scale=scale, **columns)
    correct = leading_integer_match(shown, texts, **columns)
    tokens = float(rollout["completion_mask"].sum())
    return {"kl": float(kls.sum(-1).mean()), "kl_token": float(kls.sum()) / tokens, "kl_k1": float((lp - lr).mean()),
            "reward": sum(reward) / len(reward), "correct": sum(correct) / len(correct), "n": len(texts)}


def measure_all(sft: Path, targets: list[str], jobs: int, out: Path) -> dict[str, dict]:
    """Every target measured, `jobs` worker processes; cached per target in out/measures.json."""
    cache_path = out / "measures.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key = lambda t: f"v2|{sft}|{t}"  # noqa: E731
    todo = [t for t in targets if key(t) not in cache]
    chunks = [todo[i::jobs] for i in range(jobs) if todo[i::jobs]]

    def work(chunk: list[str]) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(sft), *chunk]
        done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        return json.loads(done.stdout)

    if chunks:
        log(f"measuring {len(todo)} models in {len(chunks)} processes")
        with ThreadPoolExecutor(len(chunks)) as pool:
            for found in pool.map(work, chunks):
                cache.update({key(t): v for t, v in found.items()})
        cache_path.write_text(json.dumps(cache, indent=1))
    return {t: cache[key(t)] for t in targets}


def checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))


def cosine(sft: Path, run_a: Path, run_b: Path) -> float:
    """cos(theta_a - theta_sft, theta_b - theta_sft) over every floating weight of the latest checkpoints."""
    import torch

    from rizzrun.layout import WEIGHTS
    from rizzrun.runner.checkpoint import latest_checkpoint, load_weights

    init, a, b = (load_weights(latest_checkpoint(r) / WEIGHTS) for r in (sft, run_a, run_b))
    keys = [k for k in init if init[k].is_floating_point()]
    da, db = (torch.cat([(x[k].double() - init[k].double()).flatten() for k in keys]) for x in (a, b))
    return float(da @ db / (da.norm() * db.norm()))


def at_kl(points: list[tuple[float, float]], kl: float) -> float | None:
    """The baseline trajectory's reward at `kl`, linearly interpolated between its (KL, reward)
    points sorted by KL (None outside their range)."""
    pts = sorted(points)
    for (k0, r0), (k1, r1) in zip(pts, pts[1:]):
        if k0 <= kl <= k1:
            return r0 if k1 == k0 else r0 + (r1 - r0) * (kl - k0) / (k1 - k0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="the M WARP runs' seeds")
    parser.add_argument("--sft", type=Path, default=None, help="an SFT run folder (default: run sft_tiny, seed 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "warp")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--jobs", type=int, default=3, help="processes at once (runs, measurements)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra overrides of every RL run")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    sft = args.sft.resolve() if args.sft else train("sft_tiny", [], 0, out / "sft_tiny-s0")
    rl = [("warp", s, ["objective.mu=0.01"]) for s in args.seeds] + [("base", args.seeds[0], ["objective.mu=0.0"])]
    # the baseline's first 20 steps again, checkpointed every 4: its trajectory at low KL (the same
    # seed, data and constant lr: the same weights at step 20 as the full run, checked below)
    rl.append(("base-early", args.seeds[0], ["objective.mu=0.0", "trainer.max_steps=20", "trainer.checkpoint_every=4",
                                             "eval.at_end=false"]))
    folders = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(name, seed): pool.submit(train, "warp_tiny", [f"model.from_pretrained={sft}", *extra,
                                                                  *args.overrides], seed, out / f"{name}-s{seed}")
                   for name, seed, extra in rl}
        folders = {k: f.result() for k, f in futures.items()}
    runs = [folders[("warp", s)] for s in args.seeds]
    base = folders[("base", args.seeds[0])]
    early = folders[("base-early", args.seeds[0])]
    digest = lambda run: json.loads((run / "checkpoints" / "step-000020" / "meta.json").read_text())[  # noqa: E731
        "files"]["model.safetensors"]["sha256"]
    same = digest(early) == digest(base)
    log(f"base-early step 20 == base step 20: {same}")

    merged = {}
    if len(runs) >= 2:
        slerp = merge(["slerp", "--init", str(sft), *map(str, runs[:2]), "--lam", "0.5"], out / "slerp")
        merged["slerp"] = slerp
        # linear averaging of the same two task vectors (the spec's comparison: SLERP keeps their norm)
        merged["linear"] = merge(["linear", "--init", str(sft), *map(str, runs[:2])], out / "linear")
        for eta in ETAS:
            merged[f"liti {eta:g}"] = merge(["liti", "--init", str(sft), str(slerp), "--eta", str(eta)],
                                            out / f"liti-{eta:g}")
    # the first run alone, interpolated towards the init (LITI without the merge), for comparison
    for eta in (0.3, 0.5):
        merged[f"run1 liti {eta:g}"] = merge(["liti", "--init", str(sft), str(runs[0]), "--eta", str(eta)],
                                             out / f"run1-liti-{eta:g}")

    targets = {"sft": str(sft)}
    for step in checkpoints(early)[:-1]:
        targets[f"base {step}"] = f"{early}@{step}"
    for name, run in [("base", base)] + [(f"warp s{s}", r) for s, r in zip(args.seeds, runs)]:
        for step in checkpoints(run):
            targets[f"{name} {step}"] = f"{run}@{step}"
    targets.update({k: str(v) for k, v in merged.items()})
    found = measure_all(sft, list(targets.values()), args.jobs, out)
    points = {name: found[t] for name, t in targets.items()}

    base_curve = [(points["sft"]["kl"], points["sft"]["reward"])] + [
        (v["kl"], v["reward"]) for k, v in points.items() if k.startswith("base ")]
    heading = "## WARP: EMA anchor, SLERP, LITI (arXiv 2406.16768)"
    if args.overrides:  # a variant: its own section
        heading += " — " + " ".join(args.overrides)
    with record(args.results, "-".join(["warp", *[o.replace("=", "_") for o in args.overrides]]), heading):
        print(f"""Here: `make repro-warp` (`python repro/warp.py --seeds {' '.join(map(str, args.seeds))}`). SFT: `{sft.name}`
(`sft_tiny`, 2-digit sums). RL (`warp_tiny`, {len(runs)} WARP runs: seeds {', '.join(map(str, args.seeds))}, EMA mu 0.01; one
baseline run, seed {args.seeds[0]}, fixed SFT anchor mu 0): REINFORCE, beta 0.1, group-mean baseline, 16 prompts x 8 samples
per step, lr 2e-5, 200 steps, reward exp(-|n - sum| / 3) (`rizzrun.rewards.shaping.numeric_closeness`). Merges via
`rizzrun merge slerp --lam 0.5` of the two WARP runs' final checkpoints and `rizzrun merge liti --eta E` of that towards
the SFT model. Each point: 800 samples (the 200 held-out prompts x 4, T = 1, one sampler seed for all); KL(pi || pi_sft)
per completion (nats) and per token as the exact next-token KLs summed along the sampled completions (unbiased,
low variance), `KL k1` the plain sample estimate mean[log pi(y|x) - log pi_sft(y|x)] (same expectation, noisier);
mean reward; exact-sum rate. The baseline's steps 4-16 come from a 20-step rerun checkpointed every 4
(`base-early`). `vs base` = reward minus the baseline trajectory's reward at the same KL (linear between
its checkpoints; blank outside its KL range).
{"" if args.overrides == [] else "Extra overrides: " + " ".join(args.overrides)}
| model | KL (nats/completion) | KL/token | KL k1 | reward | exact | vs base at same KL |
|---|---|---|---|---|---|---|""")
        for name, v in points.items():
            ref = None if name.startswith("base") or name == "sft" else at_kl(base_curve, v["kl"])
            diff = "" if ref is None else f"{v['reward'] - ref:+.3f}"
            print(f"| {name} | {v['kl']:.3f} | {v['kl_token']:.4f} | {v['kl_k1']:.3f} | {v['reward']:.3f} "
                  f"| {v['correct']:.3f} | {diff} |")
        liti = {k: v for k, v in points.items() if k.startswith("liti ") and k != "liti 0"}
        above = [k for k, v in liti.items() if (at_kl(base_curve, v["kl"]) or float("inf")) < v["reward"]]
        inside = [k for k, v in liti.items() if at_kl(base_curve, v["kl"]) is not None]
        print(f"\nLITI of the SLERP above the baseline trajectory at matched KL: {len(above)} of the {len(inside)} "
              f"points inside its KL range ({', '.join(above) or 'none'}).")
        if len(runs) >= 2:
            print(f"Cosine between the two WARP runs' task vectors (all weights): {cosine(sft, *runs[:2]):.3f}; "
                  f"run 1 vs the baseline: {cosine(sft, runs[0], base):.3f}.")
        if "slerp" in points:
            finals = {k: v for k, v in points.items() if k.startswith("warp ") and k.endswith(checkpoints(runs[0])[-1])}
            print("SLERP (KL, reward) = ({:.3f}, {:.3f}); the merged runs' final checkpoints: {}.".format(
                points["slerp"]["kl"], points["slerp"]["reward"],
                "; ".join(f"{k}: ({v['kl']:.3f}, {v['reward']:.3f})" for k, v in finals.items())))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        sft_dir = Path(sys.argv[2])
        print(json.dumps({t: measure(sft_dir, t) for t in sys.argv[3:]}))
    else:
        main()
