"""Every token mixer of the `attention` group (and `model=rwkv`, `mlp=` options) through the
runner: trains, samples at validation (cached decoding) and resumes to the same weights, metrics
and samples as an uninterrupted run. New options in conf/ are picked up automatically."""

from __future__ import annotations

import pytest
import torch

from rizzrun.config import catalog
from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_weights
from rizzrun.runner.metrics import read_metrics
from test_runner import deterministic, train

# Each mixer at the runner's small shape (tests/test_runner.py SMALL: 2 layers, d_model 64,
# 32-token rows), with what must shrink to fit it (a hybrid needs a softmax layer in 2).
FIT = {"hybrid": ["attention.softmax_every=2"], "fam": ["attention.block_size=8"], "selective": ["attention.budget=8"]}
OPTIONS = [f"attention={name}" for name in catalog.options("attention")]
OPTIONS += [f"model={name}" for name in catalog.options("model") if name not in ("llama", "llama_pretrained")]
OPTIONS += [f"mlp={name}" for name in catalog.options("mlp") if name != "swiglu"]


def _fit(option: str) -> list[str]:
    group, name = option.split("=")
    return FIT.get(name, []) if group == "attention" else []


@pytest.mark.parametrize("option", OPTIONS)
def test_trains_samples_and_resumes_to_the_same_run(option, tmp_path, shared_cache):
    common = [option, *_fit(option), "trainer.val_every=2", "trainer.checkpoint_every=2", "scheduler.total_steps=4",
              "optimizer.lr=1e-2", "decoder.max_new_tokens=4", "trainer.val_batches=1"]
    straight, summary = train(tmp_path, "straight", *common, "trainer.max_steps=4", cache=shared_cache)
    split, _ = train(tmp_path, "split", *common, "trainer.max_steps=2", cache=shared_cache)
    train(tmp_path, "split", *common, "trainer.max_steps=4", "resume=true", cache=shared_cache)

    assert summary["status"] == "completed" and summary["val_loss"] < 6.0
    a, b = load_weights(latest_checkpoint(straight) / WEIGHTS), load_weights(latest_checkpoint(split) / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert deterministic(read_metrics(straight / "metrics.jsonl")) == deterministic(read_metrics(split / "metrics.jsonl"))
    samples = (straight / "samples.jsonl").read_text()
    assert samples.count("\n") == 2 and samples == (split / "samples.jsonl").read_text()
