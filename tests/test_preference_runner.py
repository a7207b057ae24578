"""Preference batches through the whole runner: every objective that consumes them trains from an
SFT run, validates, evaluates (held-out pairs, eval sets, greedy answers checked by the task) and
resumes to the same weights and metrics; extra models (a frozen reference, a precomputed table, a
baseline reward model) are built from their sources, recorded in checkpoints by digest, never
saved, and a resume refuses one that changed. New preference objectives in conf/ are picked up."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rizzrun import layout
from rizzrun.config import ConfigError, catalog, compose, load
from rizzrun.config.validate import option_batch_kind
from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_state, load_weights, read_meta
from rizzrun.runner.metrics import read_metrics
from rizzrun.runner.train import run
from test_runner import deterministic

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
# The runner's small model (tests/test_runner.py) on the built-in arithmetic task, a few pairs.
MODEL = ["model.n_layer=2", "model.d_model=64", "model.n_head=4", "model.n_kv_head=2", "model.d_ff=128",
         "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler.warmup_steps=1", "optimizer.lr=1e-3"]
PAIRS = ["data=arithmetic_pairs", "data.n_train=48", "data.n_val=12", "data.batch_size=8", "decoder=greedy",
         "decoder.max_new_tokens=4", "trainer.samples_per_val=1", "prompts=['12+34=']", "eval.at_end=true",
         "eval.max_documents=4", "eval.continuation_len=4", "trainer.val_every=2", "trainer.checkpoint_every=2",
         "scheduler.total_steps=4"]
PREFERENCE_OBJECTIVES = [o for o in catalog.options("objective") if option_batch_kind("objective", o) == "preference"]
# What an objective needs besides the pairs to train in this test.
# SMPO's margin schedule spans the run, as the lr schedule does (PAIRS: scheduler.total_steps=4).
EXTRA = {"reward_model": ["trainer.samples_per_val=0"], "smpo": ["objective.max_steps=4"]}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, shared_cache):
    """A short SFT run on the task's corpus: the start of every preference run here."""
    run_dir = tmp_path_factory.mktemp("sft") / "sft"
    cfg = compose([*MODEL, f"cache_dir={shared_cache}", "data=arithmetic_sft", "data.n_train=200", "data.n_val=20",
                   "data.batch_size=8", "trainer.max_steps=2", "trainer.val_every=2", "trainer.val_batches=1",
                   "trainer.samples_per_val=0"])
    assert run(cfg, run_dir)["status"] == "completed"
    return run_dir


def train(run_dir: Path, sft: Path, *overrides: str, cache) -> dict:
    return run(compose([*MODEL, *PAIRS, f"cache_dir={cache}", f"model.from_pretrained={sft}", *overrides]), run_dir)


def test_every_preference_objective_is_tested():
    assert {"dpo", "smpo", "reward_model"} <= set(PREFERENCE_OBJECTIVES)


@pytest.mark.parametrize("objective", PREFERENCE_OBJECTIVES)
def test_trains_validates_evaluates_and_resumes_to_the_same_run(objective, tmp_path, sft_run, shared_cache):
    options = [f"objective={objective}", *EXTRA.get(objective, [])]
    straight = tmp_path / "straight"
    summary = train(straight, sft_run, *options, "trainer.max_steps=4", cache=shared_cache)
    split = tmp_path / "split"
    train(split, sft_run, *options, "trainer.max_steps=2", "eval.at_end=false", cache=shared_cache)
    train(split, sft_run, *options, "trainer.max_steps=4", "resume=true", "eval.at_end=true", cache=shared_cache)

    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])
    a, b = load_weights(latest_checkpoint(straight) / WEIGHTS), load_weights(latest_checkpoint(split) / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(straight / layout.METRICS)
    assert deterministic(rows) == deterministic(read_metrics(split / layout.METRICS))
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == 4 and all(r["train/pairs"] == 8 for r in train_rows)  # counts summed, means by pairs
    assert {"train/rewards/accuracies", "train/rewards/margins"} <= set(train_rows[0])
    assert any("val/rewards/accuracies" in r and r["val/pairs"] == 12 for r in rows)
    assert all(r["perf/tokens_per_s"] > 0 for r in train_rows)

    judged = json.loads((straight / layout.EVAL).read_text())
    assert judged["val"]["pairs"] == 12 and set(judged["sets"]) == {"clean", "flipped"}
    if objective == "reward_model":  # a scorer: judged by its rewards, its policy is a trunk
        assert "task" not in judged
    else:
        assert judged["task"]["n"] == 4 and 0 <= judged["task"]["correct_rate"] <= 1
    if objective == "dpo":  # step 1 sees the policy equal to its reference: ln 2 on every pair
        assert abs(train_rows[0]["train/loss"] - math.log(2)) < 1e-5
        assert train_rows[0]["train/rewards/accuracies"] == 0.0


def test_a_reference_is_recorded_by_digest_never_saved(tmp_path, sft_run, shared_cache):
    from rizzrun.runner.extra_models import weights_digest
    from rizzrun.runner.generate import load_run_model

    run_dir = tmp_path / "dpo"
    train(run_dir, sft_run, "objective=dpo", "trainer.max_steps=2", cache=shared_cache)
    folder = latest_checkpoint(run_dir)
    meta = read_meta(folder)
    start, _ = load_run_model(sft_run)  # reference=init: the policy's starting weights, the SFT run's
    assert meta["extra_models"]["reference"] == {"source": "init", "sha256": weights_digest(start)}
    assert set(load_weights(folder / WEIGHTS)) == set(start.state_dict())  # the policy only
    assert not any(k.startswith(("extra", "reference")) for k in load_state(folder / layout.STATE)["extra_state_dict"])


def test_precomputed_reference_gives_the_live_curve_and_is_cached(tmp_path, sft_run, shared_cache):
    live, pre = tmp_path / "live", tmp_path / "pre"
    train(live, sft_run, "objective=dpo", "trainer.max_steps=4", cache=shared_cache)
    train(pre, sft_run, "objective=dpo", "objective.precompute=[reference]", "trainer.max_steps=4", cache=shared_cache)
    a, b = read_metrics(live / layout.METRICS), read_metrics(pre / layout.METRICS)
    keys = [k for k in a[0] if k.startswith(("train/loss", "train/rewards", "val/"))]
    for x, y in zip(a, b):
        for k in keys:
            if k in x:  # the table's sums come from other batch shapes: equal up to float rounding
                assert math.isclose(x[k], y[k], rel_tol=1e-4, abs_tol=1e-5), (k, x[k], y[k])
    tables = list((shared_cache / "precomputed").glob("reference-*.safetensors"))
    assert tables and read_meta(latest_checkpoint(pre))["extra_models"]["reference"]["precomputed"]
    stamp = {t: t.stat().st_mtime_ns for t in tables}
    again = tmp_path / "again"
    train(again, sft_run, "objective=dpo", "objective.precompute=[reference]", "trainer.max_steps=2", cache=shared_cache)
    assert {t: t.stat().st_mtime_ns for t in tables} == stamp  # read back, not computed again
    assert read_metrics(again / layout.METRICS)[0]["train/loss"] == b[0]["train/loss"]


def test_resume_refuses_a_reference_that_changed(tmp_path, sft_run, shared_cache):
    """objective.models.reference=RUN_DIR; that run trains on after the DPO run started: resuming
    the DPO run is refused in one line (exit 2), before it trains, and its folder is untouched."""
    import shutil

    reference = tmp_path / "ref"
    shutil.copytree(sft_run, reference)
    run_dir = tmp_path / "dpo"
    args = [*MODEL, *PAIRS, f"cache_dir={shared_cache}", f"model.from_pretrained={sft_run}", "objective=dpo",
            f"objective.models.reference={reference}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "RIZZRUN_CACHE": str(shared_cache)}
    done = subprocess.run([RIZZRUN, *args, "trainer.max_steps=2"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    weights = load_weights(latest_checkpoint(reference) / WEIGHTS)  # the reference run moves on
    changed = {k: v + 0.01 for k, v in weights.items()}
    from rizzrun.runner.checkpoint import save_weights
    from rizzrun.runner.checkpoint_files import file_digest

    folder = latest_checkpoint(reference)
    save_weights(changed, folder / WEIGHTS)
    meta = read_meta(folder)
    meta["files"][WEIGHTS] = file_digest(folder / WEIGHTS)
    (folder / layout.META).write_text(json.dumps(meta))
    before = (run_dir / layout.METRICS).read_text()
    done = subprocess.run([RIZZRUN, f"resume={run_dir}", "trainer.max_steps=4"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"objective.models.reference={reference}: its weights changed since this run started" in done.stderr
    assert "Traceback" not in done.stderr and (run_dir / layout.METRICS).read_text() == before


def test_a_reward_model_run_loads_as_a_reward_model(tmp_path, sft_run, shared_cache):
    """The head trained with the policy is saved with the run; `load_run_model` gives the reward
    model whose scores reproduce the run's held-out accuracy; RRM filters with it as its baseline."""
    from hydra.utils import instantiate

    from rizzrun.objectives.reward_model import ScalarRewardModel
    from rizzrun.runner.generate import load_run_model

    rm = tmp_path / "rm"
    train(rm, sft_run, "objective=reward_model", "trainer.samples_per_val=0", "trainer.max_steps=4",
          cache=shared_cache)
    extra = load_state(latest_checkpoint(rm) / layout.STATE)["extra_state_dict"]
    assert {"objective.head.weight", "objective.head.bias"} <= set(extra)
    model, tokenizer = load_run_model(rm)
    assert isinstance(model, ScalarRewardModel) and torch.equal(model.head.weight, extra["objective.head.weight"])
    data = instantiate(compose([*MODEL, *PAIRS, f"cache_dir={shared_cache}"]).data)
    data.setup(tokenizer, cache_dir=shared_cache)
    right = total = 0
    with torch.no_grad():
        for batch in data.val_batches():
            parts = [batch[k] for k in ("prompt_ids", "prompt_mask")]
            chosen = model.score(*parts, batch["chosen_ids"], batch["chosen_mask"])
            rejected = model.score(*parts, batch["rejected_ids"], batch["rejected_mask"])
            right, total = right + int((chosen > rejected).sum()), total + len(chosen)
    judged = json.loads((rm / layout.EVAL).read_text())
    assert right / total == pytest.approx(judged["val"]["rewards/accuracies"])

    done = subprocess.run([RIZZRUN, "export", str(rm), str(tmp_path / "hf")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "trained weights of its own" in done.stderr and not (tmp_path / "hf").exists()

    rrm = tmp_path / "rrm"
    summary = train(rrm, sft_run, "objective=reward_model", "objective.augment=rrm", "objective.filter_below=0.8",
                    f"objective.models.baseline={rm}", "trainer.samples_per_val=0", "trainer.max_steps=2",
                    cache=shared_cache)
    rows = [r for r in read_metrics(rrm / layout.METRICS) if "train/rrm/kept_fraction" in r]
    assert summary["status"] == "completed" and rows and all(0 <= r["train/rrm/kept_fraction"] <= 1 for r in rows)


def test_a_recipe_starts_from_the_newest_run_of_a_name(tmp_path, sft_run, shared_cache):
    """`${run:NAME}` is the newest run folder named NAME under output_root; the saved config holds it."""
    import shutil

    outputs = tmp_path / "outputs"
    older, newer = outputs / "2026-01-01" / "09-00-00-sft", outputs / "2026-01-02" / "08-00-00-sft"
    for folder in (older, newer):
        shutil.copytree(sft_run, folder)
    cfg = load([*MODEL, *PAIRS, f"cache_dir={shared_cache}", f"output_root={outputs}", "objective=dpo",
                "model.from_pretrained=${run:sft}"])
    assert cfg.model.from_pretrained == str(newer.absolute())
    with pytest.raises(ConfigError, match=r"from_pretrained=\$\{run:sfx\}: no run named .sfx. with a checkpoint under .*rizzrun \+recipe=sfx"):
        load([*MODEL, *PAIRS, f"output_root={outputs}", "objective=dpo", "model.from_pretrained=${run:sfx}"])


@pytest.mark.parametrize("overrides,expected", [
    (["+objective.models.teacher=init"],
     "objective.models.teacher='init': rizzrun.objectives.dpo.DPO takes no extra model 'teacher'; it takes: reference"),
    (["objective.models.reference=/no/such/run"], "objective.models.reference='/no/such/run': no such folder"),
    (["objective.precompute=[reference]", "objective.reference_free=true", "objective.models.reference=null"],
     "objective.precompute=[reference]: objective.models.reference is not set"),
    (["data=pydoc"], "consumes batch_kind 'preference' but data 'pydoc'"),
])
def test_bad_extra_models_are_refused_before_torch(overrides, expected):
    with pytest.raises(ConfigError) as e:
        load([*MODEL, *PAIRS, "objective=dpo", *overrides])
    assert any(expected in p for p in e.value.problems), e.value.problems


def test_pairs_longer_than_the_model_are_refused_before_training(tmp_path, shared_cache):
    with pytest.raises(ConfigError, match=r"data.max_length=300: a pair of that many tokens is read as 299 inputs, "
                                          r"more than the model's max_seq_len=256"):
        load([*MODEL, *PAIRS, "objective=dpo", "data.max_length=300"])
    from rizzrun.errors import InputError

    cfg = compose([*MODEL, *PAIRS, f"cache_dir={shared_cache}", "objective=dpo", "model.max_seq_len=6"])
    with pytest.raises(InputError, match=r"data: the longest pair has \d+ tokens .* max_seq_len=6; set "
                                          r"data.max_length=7"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / layout.METRICS).exists() or not read_metrics(tmp_path / "run" / layout.METRICS)
