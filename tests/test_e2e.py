"""The real `rizzrun` command, end to end, as a user runs it (no fake runner): a few training steps
of `+recipe=tiny` shrunk, the run folder it leaves, and `rizzrun generate` on that folder.

Every number checked is known in advance: the step numbering, tokens per step, the learning rate
of the warmup-cosine schedule, the first loss of a near-uniform model, the same losses from the
library called in-process, and a greedy continuation recomputed by hand from the checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from rizzrun import layout
from rizzrun.config import load
from rizzrun.runner.metrics import read_metrics
from rizzrun.tokenizers import META_FILE

RIZZRUN = Path(sys.executable).with_name("rizzrun")  # the installed console script
BATCH, SEQ_LEN, STEPS = 4, 32, 4
# +recipe=tiny with a 1-layer, 32-wide model, 4 steps and 300 documents: seconds, not minutes.
OVERRIDES = ["+recipe=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1",
             "model.d_ff=64", f"data.seq_len={SEQ_LEN}", f"data.batch_size={BATCH}", f"trainer.max_steps={STEPS}",
             "trainer.val_every=2", "trainer.checkpoint_every=2", "trainer.log_every=1", "trainer.val_batches=1",
             "trainer.samples_per_val=0", "scheduler.warmup_steps=1", "data.max_docs=300", "logger=csv"]
PROMPT = "Return the"


def rizzrun(*argv: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "RIZZRUN_OUTPUTS": str(cwd / "outputs")}  # PYTHONPATH and RIZZRUN_CACHE kept
    return subprocess.Popen([str(RIZZRUN), *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return out


def greedy_by_hand(run_dir: Path, prompt: str, n: int) -> str:
    """The step-4 checkpoint's greedy continuation, recomputed with full forward passes (no KV
    cache, no decoder): a second formulation of what `rizzrun generate decoder=greedy` prints."""
    from rizzrun.runner.generate import load_run

    _, tokenizer, model = load_run(run_dir)
    ids = [tokenizer.eos_id, *tokenizer.encode(prompt)]  # prompts start after an EOS, as documents do
    new = []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if token == tokenizer.eos_id:
                break
            new.append(token)
    return prompt + tokenizer.decode(new)


def test_rizzrun_trains_writes_its_run_folder_and_generates(tmp_path, shared_cache):
    run_dir = tmp_path / "run"
    out = finish(rizzrun(*OVERRIDES, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert f"run folder: {run_dir}" in out

    # `rizzrun generate` in the background while the same run is repeated in-process below.
    generate = rizzrun("generate", str(run_dir), "--prompt", PROMPT, "decoder=greedy", "decoder.max_new_tokens=5",
                       cwd=tmp_path)

    for name in (layout.CONFIG, layout.ENV, layout.METRICS, layout.SUMMARY, layout.HYDRA_OVERRIDES):
        assert (run_dir / name).is_file(), name
    assert (run_dir / layout.TOKENIZER / META_FILE).is_file()
    assert (run_dir / layout.CSV_DIR / "metrics.csv").is_file()
    assert (run_dir / layout.LATEST).read_text().strip() == layout.step_dir_name(STEPS) == "step-000004"
    final = layout.checkpoints_dir(run_dir) / "step-000004"
    assert all((final / name).is_file() for name in (layout.WEIGHTS, layout.STATE, layout.META))
    assert not (run_dir / layout.ERROR).exists()
    saved = OmegaConf.load(run_dir / layout.CONFIG)
    assert (saved.name, saved.model.d_model, saved.trainer.max_steps) == ("tiny", 32, STEPS)
    weights = load_file(final / layout.WEIGHTS)
    # embed (259 byte ids x 32), 9 tensors in the one block, the final norm; the tied lm_head is an alias
    assert weights["embed.weight"].shape == (259, 32) and len(weights) == 11

    rows = read_metrics(run_dir / layout.METRICS)
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val/loss" in r] == [2, 4]
    assert all(r["train/tokens"] == BATCH * SEQ_LEN for r in train)
    # Warmup-cosine, W=1, N=4, min ratio 0.1: f(k) = 0.1 + 0.9 (1 + cos(pi (k-1)/3)) / 2 = 1, .775, .325, .1
    assert [r["train/lr"] for r in train] == pytest.approx([3e-3, 2.325e-3, 9.75e-4, 3e-4], rel=1e-6)
    # Weights of std 0.02 give near-zero logits: the first loss is that of a uniform guess, ln(259).
    assert train[0]["train/loss"] == pytest.approx(math.log(259), abs=0.05)
    summary = json.loads((run_dir / layout.SUMMARY).read_text())
    assert (summary["step"], summary["train_loss"]) == (STEPS, train[-1]["train/loss"])
    assert summary["val_loss"] == [r["val/loss"] for r in rows if "val/loss" in r][-1]

    # Deterministic: the library, called in-process with the same config, logs the same losses.
    from rizzrun.runner.train import run

    again = tmp_path / "again"
    run(load(OVERRIDES), again)
    assert [r["train/loss"] for r in read_metrics(again / layout.METRICS) if "train/loss" in r] == [
        r["train/loss"] for r in train]

    printed = finish(generate)
    assert printed == greedy_by_hand(run_dir, PROMPT, 5) + "\n"
    assert printed.startswith(PROMPT) and len(printed) > len(PROMPT) + 1
