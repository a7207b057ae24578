"""`make repro-paramdelta`: ParamΔ (Cao et al., arXiv 2504.21023) at tiny scale.

Each seed runs the pipeline recipes/paramdelta_tiny.yaml: base A (pretrained on the pydoc corpus
without its networking/mail packages), A' (A continued on those packages only: a knowledge shift
string reversal does not need), A_post (A fine-tuned on string reversal) and A'_post (A' fine-tuned
the same way: the expensive reference). Then, as a user would, the command line:

    rizzrun merge paramdelta --new-base RUN/cont --post RUN/post --base RUN/base RUN/paramdelta
    rizzrun eval RUN/paramdelta --max-documents 10      (the merged run's own data: the new slice)

The merge is not a pipeline stage (stages are training runs), so it runs after the pipeline. Every
model is then judged the same way, in this process: greedy exact accuracy on the 200 held-out
reversal prompts (rizzrun.runner.evaluate.evaluate on the SFT recipe's data), and the held-out loss
(nats per byte) on the networking slice (new knowledge) and on the rest (old). Also measured: the
two deltas' norms and cosines (why the merge works or not). `rizzrun eval`'s loss of the merged run
is checked against this script's. Every run: one torch thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "trainer.num_threads=1"]
# Held-out loss over the first VAL_BATCHES validation batches of a slice (16 x 128 bytes each; the
# networking slice has fewer: all of it).
VAL_BATCHES = 20
# recipes/paramdelta_sft_tiny.yaml's learning rate: the pipeline's post / cont_post stages.
RECIPE_LR = 1e-3
MODELS = ("base", "cont", "post", "cont_post", "paramdelta")
LABELS = {"base": "A (base)", "cont": "A' (continued pretraining)", "post": "A_post (A + SFT)",
          "paramdelta": "ParamΔ = A' + (A_post − A)", "cont_post": "A'_post (A' + SFT: the reference)"}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def cli(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "rizzrun.cli", *args]
    log("$ rizzrun", " ".join(args))
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def pipeline(seed: int, folder: Path) -> Path:
    """The pipeline into `folder`; a completed one is reused, a stopped one resumed."""
    done = folder / "summary.json"
    status = json.loads(done.read_text()).get("status") if done.exists() else None
    if status != "completed":
        where = [f"resume={folder}"] if status is not None else [f"hydra.run.dir={folder}"]
        cli(["+recipe=paramdelta_tiny", f"seed={seed}", *COMMON, *where])
    return folder


def merged(pipe: Path, post: Path, out: Path) -> Path:
    """ParamΔ = cont + (post − base), by the command line, and `rizzrun eval` of it."""
    if not (out / "merge.json").is_file():
        cli(["merge", "paramdelta", "--new-base", str(pipe / "cont"), "--post", str(post), "--base", str(pipe / "base"),
             str(out)])
    if not (out / "eval.json").is_file():
        cli(["eval", str(out), "--max-documents", "10"])
    return out


def sft(start: Path, lr: float, folder: Path, seed: int) -> Path:
    """The recipe's SFT at another learning rate, from `start`, outside the pipeline."""
    done = folder / "summary.json"
    if not (done.exists() and json.loads(done.read_text()).get("status") == "completed"):
        cli(["+recipe=paramdelta_sft_tiny", f"model.from_pretrained={start}", f"optimizer.lr={lr:g}", f"seed={seed}",
             *COMMON, f"hydra.run.dir={folder}"])
    return folder


class Judge:
    """The same measurements for every model: task accuracy (+ task loss) and held-out loss on the
    two corpus slices, the data built once (from the recipes' data nodes)."""

    def __init__(self, seed: int):
        from hydra.utils import instantiate

        from rizzrun.config import compose
        from rizzrun.paths import cache_root

        self.seed = seed
        sft = compose(["+recipe=paramdelta_sft_tiny", f"seed={seed}", *COMMON])
        pre = compose(["+recipe=paramdelta_pretrain_tiny", f"seed={seed}", *COMMON])
        self.eval_cfg = dict(sft.eval)
        self.data = {"task": instantiate(sft.data), "new": instantiate(pre.data),
                     "old": instantiate(pre.data, exclude=True)}
        self.cache = cache_root(sft.cache_dir)
        self._ready = False

    def __call__(self, folder: Path) -> dict:
        import torch

        from rizzrun.eval.memorization import heldout_loss
        from rizzrun.runner.evaluate import evaluate
        from rizzrun.runner.generate import load_run_checkpoint

        _, tokenizer, model, _ = load_run_checkpoint(folder)
        if not self._ready:
            for d in self.data.values():
                d.setup(tokenizer, cache_dir=self.cache)
            self._ready = True
        model.eval()
        torch.manual_seed(self.seed)
        task = evaluate(model, tokenizer, self.data["task"], self.eval_cfg)
        return {"accuracy": task["task"]["correct_rate"], "task_loss": task["val"]["loss"],
                "new_loss": heldout_loss(model, islice(self.data["new"].val_batches(), VAL_BATCHES))["loss"],
                "old_loss": heldout_loss(model, islice(self.data["old"].val_batches(), VAL_BATCHES))["loss"]}


def deltas(pipe: Path, post: Path, cont_post: Path) -> dict:
    """Norms and cosines of the task vectors, over all weights flattened."""
    import torch

    from rizzrun import layout
    from rizzrun.runner.checkpoint import load_weights
    from rizzrun.runner.checkpoint_files import checked_checkpoint

    folders = {"base": pipe / "base", "cont": pipe / "cont", "post": post, "cont_post": cont_post}
    sd = {m: load_weights(checked_checkpoint(f) / layout.WEIGHTS) for m, f in folders.items()}
    names = [k for k in sd["base"] if k != "lm_head.weight" and sd["base"][k].is_floating_point()]
    flat = {m: torch.cat([sd[m][k].double().flatten() for k in names]) for m in sd}
    d_cont, d_post, d_direct = flat["cont"] - flat["base"], flat["post"] - flat["base"], flat["cont_post"] - flat["cont"]
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    return {"norm_base": float(flat["base"].norm()), "norm_cont": float(d_cont.norm()),
            "norm_post": float(d_post.norm()), "norm_direct": float(d_direct.norm()),
            "cos_cont_post": cos(d_cont, d_post), "cos_post_direct": cos(d_post, d_direct)}


def seed_runs(seed: int, out: Path, lrs: list[float], ts: list[float]) -> dict:
    """{"base": row, "cont": row, lr: {"post", "cont_post", "paramdelta": rows, "deltas", "recovered"},
    "along": {t: row}}; rows already in RUN/paramdelta_repro.json (an earlier invocation) are reused."""
    pipe = pipeline(seed, out / f"paramdelta_tiny-s{seed}")
    saved = pipe / "paramdelta_repro.json"
    prev = json.loads(saved.read_text()) if saved.is_file() else {}
    judge = Judge(seed)
    result: dict = {"base": prev.get("base") or judge(pipe / "base"), "cont": prev.get("cont") or judge(pipe / "cont")}
    for lr in lrs:
        if lr == RECIPE_LR:  # the pipeline's own stages
            post, cont_post, pd = pipe / "post", pipe / "cont_post", pipe / "paramdelta"
        else:
            tag = f"lr{lr:g}"
            post, cont_post = sft(pipe / "base", lr, pipe / f"post-{tag}", seed), sft(pipe / "cont", lr,
                                                                                       pipe / f"cont_post-{tag}", seed)
            pd = pipe / f"paramdelta-{tag}"
        merged(pipe, post, pd)
        old = prev.get(str(lr), {})
        rows = {"post": old.get("post") or judge(post), "cont_post": old.get("cont_post") or judge(cont_post),
                "paramdelta": old.get("paramdelta") or judge(pd)}
        cli_loss = json.loads((pd / "eval.json").read_text())["val"]["loss"]
        if abs(cli_loss - rows["paramdelta"]["new_loss"]) > 1e-4:
            raise RuntimeError(f"rizzrun eval's loss of {pd} {cli_loss} differs from this script's "
                               f"{rows['paramdelta']['new_loss']}")
        gain = rows["cont_post"]["accuracy"] - result["cont"]["accuracy"]
        rows["deltas"] = old.get("deltas") or deltas(pipe, post, cont_post)
        rows["recovered"] = (rows["paramdelta"]["accuracy"] - result["cont"]["accuracy"]) / gain if gain else float("nan")
        result[str(lr)] = rows
        log(f"seed {seed}, SFT lr {lr:g}: " + json.dumps(rows))
        saved.write_text(json.dumps({**prev, **result}, indent=2) + "\n")
    # How far along the continued-pretraining direction the post-training delta stays useful:
    # A + (A_post − A) + t (A' − A), one `merge paramdelta` with two pairs (t = 0: A_post; t = 1: ParamΔ).
    along = dict(prev.get("along", {}))
    for t in ts:
        if str(t) not in along:
            folder = pipe / f"along-t{t:g}"
            if not (folder / "merge.json").is_file():
                cli(["merge", "paramdelta", "--new-base", str(pipe / "base"), "--post", str(pipe / "post"), "--base",
                     str(pipe / "base"), "--post", str(pipe / "cont"), "--base", str(pipe / "base"), "--alpha", "1",
                     "--alpha", f"{t:g}", str(folder)])
            along[str(t)] = judge(folder)
            saved.write_text(json.dumps({**prev, **result, "along": along}, indent=2) + "\n")
    result["along"] = along
    saved.write_text(json.dumps({**prev, **result}, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[RECIPE_LR, 3e-4, 1e-4],
                        help="SFT learning rates: the recipe's (the pipeline's stages) and gentler ones (extra runs)")
    parser.add_argument("--along", type=float, nargs="*", default=[0.25, 0.5],
                        help="t of A + (A_post − A) + t (A' − A), the recipe's SFT (t = 0: A_post, t = 1: ParamΔ)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "paramdelta")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    res: dict[int, dict] = {}
    for seed in args.seeds:  # the table is written after each seed: a stopped repro leaves the seeds done
        res[seed] = seed_runs(seed, args.out, args.lrs, args.along)
        table(res, args.lrs, args.along)


def loss_recovered(r: dict, k: str) -> float:
    """(A' − ParamΔ) / (A' − A'_post) in the reversal task's teacher-forced loss."""
    cont, pd, direct = r["cont"]["task_loss"], r[k]["paramdelta"]["task_loss"], r[k]["cont_post"]["task_loss"]
    return (cont - pd) / (cont - direct)


def table(res: dict[int, dict], lrs: list[float], ts: list[float]) -> None:
    seeds = sorted(res)
    n = len(seeds)

    def cell(get, fmt=".3f"):
        return mean_sd([get(res[s]) for s in seeds], fmt)

    with record(ROOT / "docs" / "results.md", "paramdelta",
                "## ParamΔ (arXiv 2504.21023): post-training carried to an updated base by weight arithmetic"):
        print(f"`make repro-paramdelta` ({n} seed{'s' * (n > 1)}: {', '.join(map(str, seeds))}; mean ± sd), "
              "recipes/paramdelta_tiny.yaml + `rizzrun merge paramdelta`. A: tiny Llama, 300 steps on the pydoc "
              "corpus without its networking/mail packages; A': A + 150 steps on those packages only (lr 1e-3); "
              "A_post / A'_post: A / A' + 250 steps of SFT on string reversal (`rev:abcde=` -> `edcba`, 5 letters "
              "of 8) at the SFT learning rate shown (1e-3: the recipe's stages; others: the same SFT run beside "
              "them). ParamΔ = A' + (A_post − A): no training. Accuracy: greedy exact answers to 200 held-out "
              "prompts; losses: held-out nats per byte on each slice (uniform over the 259 byte-tokenizer ids: "
              "5.56).\n")
        print("| model | SFT lr | reversal accuracy | reversal loss (teacher-forced) | networking-slice loss (new) | "
              "rest-slice loss (old) |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for m in ("base", "cont"):
            print(f"| {LABELS[m]} | — | {cell(lambda r: r[m]['accuracy'])} | {cell(lambda r: r[m]['task_loss'])} | "
                  f"{cell(lambda r: r[m]['new_loss'])} | {cell(lambda r: r[m]['old_loss'])} |")
        for lr in lrs:
            k = str(lr)
            for m in ("post", "paramdelta", "cont_post"):
                print(f"| {LABELS[m]} | {lr:g} | {cell(lambda r: r[k][m]['accuracy'])} | "
                      f"{cell(lambda r: r[k][m]['task_loss'])} | {cell(lambda r: r[k][m]['new_loss'])} | "
                      f"{cell(lambda r: r[k][m]['old_loss'])} |")
        print("\n| SFT lr | recovered fraction (ParamΔ − A') / (A'_post − A'), accuracy | the same in reversal loss | ‖A' − A‖ | ‖A_post − A‖ | "
              "‖A'_post − A'‖ | cos(A' − A, A_post − A) | cos(A_post − A, A'_post − A') |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for lr in lrs:
            k = str(lr)
            d = lambda key: cell(lambda r: r[k]["deltas"][key])  # noqa: E731
            print(f"| {lr:g} | {cell(lambda r: r[k]['recovered'])} | {cell(lambda r: loss_recovered(r, k))} | {d('norm_cont')} | {d('norm_post')} | "
                  f"{d('norm_direct')} | {d('cos_cont_post')} | {d('cos_post_direct')} |")
        print(f"\n‖A‖ = {cell(lambda r: r[str(lrs[0])]['deltas']['norm_base'])} (all weights flattened).")
        if ts:
            k = str(RECIPE_LR)
            print(f"\nAlong the continued-pretraining direction, SFT lr {RECIPE_LR:g}: A + (A_post − A) + t (A' − A) "
                  "(one `rizzrun merge paramdelta` with two pairs; t = 0 is A_post, t = 1 is ParamΔ).\n")
            print("| t | reversal accuracy | reversal loss | networking-slice loss (new) | rest-slice loss (old) |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            points = [(0.0, lambda r: r[k]["post"])] + [(t, lambda r, t=t: r["along"][str(t)]) for t in sorted(ts)]
            points.append((1.0, lambda r: r[k]["paramdelta"]))
            for t, get in points:
                print(f"| {t:g} | {cell(lambda r: get(r)['accuracy'])} | {cell(lambda r: get(r)['task_loss'])} | "
                      f"{cell(lambda r: get(r)['new_loss'])} | "
                      f"{cell(lambda r: get(r)['old_loss'])} |")


if __name__ == "__main__":
    main()
