"""Every token mixer of the `attention` group (and `model=rwkv`, `mlp=` options) through the
runner: trains, samples at validation (cached decoding) and resumes to the same weights, metrics
and samples as an uninterrupted run. New options in conf/ are picked up automatically."""

from __future__ import annotations

import pytest
import torch

from rizzrun.config import catalog
from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_weights
from rizzrun.runner.metrics import read_metrics
from rizzrun.config import compose
from rizzrun.runner.train import run
from test_runner import SMALL, deterministic

# SMALL's keys a model with its own mixing does not have.
NOT_FOR = {"model=rwkv": ("model.n_head=", "model.n_kv_head=")}

# Each mixer at the runner's small shape (tests/test_runner.py SMALL: 2 layers, d_model 64,
# 32-token rows), with what must shrink to fit it (a hybrid needs a softmax layer in 2).
FIT = {"hybrid": ["attention.softmax_every=2"], "fam": ["attention.block_size=8"], "selective": ["attention.budget=8"],
       # ThinK prunes the prompt keys older than recent_size: with 4 the samples decode from a thin cache.
       "think": ["attention.recent_size=4", "attention.obs_window=4"]}
OPTIONS = [f"attention={name}" for name in catalog.options("attention")]
OPTIONS += [f"model={name}" for name in catalog.options("model") if name not in ("llama", "llama_pretrained")]
OPTIONS += [f"mlp={name}" for name in catalog.options("mlp") if name != "swiglu"]


def train(tmp_path, name, option, *overrides, cache):
    small = [o for o in SMALL if not o.startswith(NOT_FOR.get(option, ()))]
    run_dir = tmp_path / name
    return run_dir, run(compose([*small, f"cache_dir={cache}", option, *_fit(option), *overrides]), run_dir)


def _fit(option: str) -> list[str]:
    group, name = option.split("=")
    return FIT.get(name, []) if group == "attention" else []


@pytest.mark.parametrize("option", OPTIONS)
def test_trains_samples_and_resumes_to_the_same_run(option, tmp_path, shared_cache):
    common = ["trainer.val_every=2", "trainer.checkpoint_every=2", "scheduler.total_steps=4",
              "optimizer.lr=1e-2", "decoder.max_new_tokens=4", "trainer.val_batches=1"]
    straight, summary = train(tmp_path, "straight", option, *common, "trainer.max_steps=4", cache=shared_cache)
    split, _ = train(tmp_path, "split", option, *common, "trainer.max_steps=2", cache=shared_cache)
    train(tmp_path, "split", option, *common, "trainer.max_steps=4", "resume=true", cache=shared_cache)

    assert summary["status"] == "completed" and summary["val_loss"] < 6.0
    a, b = load_weights(latest_checkpoint(straight) / WEIGHTS), load_weights(latest_checkpoint(split) / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert deterministic(read_metrics(straight / "metrics.jsonl")) == deterministic(read_metrics(split / "metrics.jsonl"))
    samples = (straight / "samples.jsonl").read_text()
    assert samples.count("\n") == 2 and samples == (split / "samples.jsonl").read_text()
