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


def merged(pipe: Path) -> Path:
    out = pipe / "paramdelta"
    if not (out / "merge.json").is_file():
        cli(["merge", "paramdelta", "--new-base", str(pipe / "cont"), "--post", str(pipe / "post"),
             "--base", str(pipe / "base"), str(out)])
    if not (out / "eval.json").is_file():
        cli(["eval", str(out), "--max-documents", "10"])
    return out


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


def deltas(pipe: Path) -> dict:
    """Norms and cosines of the task vectors, over all weights flattened."""
    import torch

    from rizzrun import layout
    from rizzrun.runner.checkpoint import load_weights
    from rizzrun.runner.checkpoint_files import checked_checkpoint

    sd = {m: load_weights(checked_checkpoint(pipe / m) / layout.WEIGHTS) for m in ("base", "cont", "post", "cont_post")}
    names = [k for k in sd["base"] if k != "lm_head.weight" and sd["base"][k].is_floating_point()]
    flat = {m: torch.cat([sd[m][k].double().flatten() for k in names]) for m in sd}
    d_cont, d_post, d_direct = flat["cont"] - flat["base"], flat["post"] - flat["base"], flat["cont_post"] - flat["cont"]
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    return {"norm_base": float(flat["base"].norm()), "norm_cont": float(d_cont.norm()),
            "norm_post": float(d_post.norm()), "norm_direct": float(d_direct.norm()),
            "cos_cont_post": cos(d_cont, d_post), "cos_post_direct": cos(d_post, d_direct)}


def seed_runs(seed: int, out: Path) -> dict:
    pipe = pipeline(seed, out / f"paramdelta_tiny-s{seed}")
    merged(pipe)
    judge = Judge(seed)
    rows = {m: judge(pipe / m) for m in MODELS}
    cli_loss = json.loads((pipe / "paramdelta" / "eval.json").read_text())["val"]["loss"]
    if abs(cli_loss - rows["paramdelta"]["new_loss"]) > 1e-4:
        raise RuntimeError(f"rizzrun eval's loss of the merged run {cli_loss} differs from this script's "
                           f"{rows['paramdelta']['new_loss']}")
    acc = {m: rows[m]["accuracy"] for m in MODELS}
    gain = acc["cont_post"] - acc["cont"]
    new = {m: rows[m]["new_loss"] for m in MODELS}
    shift = new["post"] - new["cont_post"]
    result = {"rows": rows, "deltas": deltas(pipe),
              "recovered": (acc["paramdelta"] - acc["cont"]) / gain if gain else float("nan"),
              "kept": (new["post"] - new["paramdelta"]) / shift if shift else float("nan")}
    (pipe / "paramdelta_repro.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"seed {seed}: " + json.dumps({m: rows[m] for m in MODELS}))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "paramdelta")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    res: dict[int, dict] = {}
    for seed in args.seeds:  # the table is written after each seed: a stopped repro leaves the seeds done
        res[seed] = seed_runs(seed, args.out)
        table(res)


def table(res: dict[int, dict]) -> None:
    seeds = sorted(res)
    col = lambda model, key: mean_sd([res[s]["rows"][model][key] for s in seeds])  # noqa: E731
    one = lambda key, fmt=".3f": mean_sd([res[s][key] for s in seeds], fmt)  # noqa: E731
    dl = lambda key: mean_sd([res[s]["deltas"][key] for s in seeds])  # noqa: E731
    n = len(seeds)
    steps = {"base": "300", "cont": "300 + 150", "post": "300 + 250", "cont_post": "300 + 150 + 250",
             "paramdelta": "merge only (0)"}
    with record(ROOT / "docs" / "results.md", "paramdelta",
                "## ParamΔ (arXiv 2504.21023): post-training carried to an updated base by weight arithmetic"):
        print(f"`make repro-paramdelta` ({n} seed{'s' * (n > 1)}: {', '.join(map(str, seeds))}; mean ± sd), recipes/paramdelta_tiny.yaml + "
              "`rizzrun merge paramdelta`. A: tiny Llama, 300 steps on the pydoc corpus without its networking/mail "
              "packages; A': A + 150 steps on those packages only (lr 1e-3); A_post / A'_post: A / A' + 250 steps "
              "of SFT on string reversal (`rev:abcde=` -> `edcba`, 5 letters of 8). Accuracy: greedy exact answers "
              "to 200 held-out prompts; losses: held-out nats per byte on each slice.\n")
        print("| model | training steps | reversal accuracy | networking-slice loss (new) | rest-slice loss (old) |")
        print("| --- | --- | ---: | ---: | ---: |")
        for m in ("base", "cont", "post", "paramdelta", "cont_post"):
            print(f"| {LABELS[m]} | {steps[m]} | {col(m, 'accuracy')} | {col(m, 'new_loss')} | {col(m, 'old_loss')} |")
        print(f"\nRecovered fraction of the direct post-training gain, (ParamΔ − A') / (A'_post − A') in accuracy: "
              f"{one('recovered')}. New-slice knowledge kept, (A_post − ParamΔ) / (A_post − A'_post) in "
              f"networking-slice loss: {one('kept')}.")
        print(f"\nTask vectors (all weights flattened): ‖A' − A‖ = {dl('norm_cont')}, ‖A_post − A‖ = "
              f"{dl('norm_post')}, ‖A'_post − A'‖ = {dl('norm_direct')} (‖A‖ = {dl('norm_base')}); "
              f"cos(A' − A, A_post − A) = {dl('cos_cont_post')}; cos(A_post − A, A'_post − A') = "
              f"{dl('cos_post_direct')}.")


if __name__ == "__main__":
    main()
