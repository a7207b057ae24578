"""End-to-end runner: run folder contents, checkpoints, resume equality, loggers, generate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rizzrun.config import compose
from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_weights, save_weights
from rizzrun.runner.metrics import read_metrics
from rizzrun.runner.train import run

# A model and corpus small enough for a few seconds a run on 2 cores.
SMALL = [
    "model.n_layer=2",
    "model.d_model=64",
    "model.n_head=4",
    "model.n_kv_head=2",
    "model.d_ff=128",
    "data.seq_len=32",
    "data.batch_size=4",
    "data.max_docs=300",
    "trainer.log_every=1",
    "trainer.val_batches=2",
    "trainer.samples_per_val=1",
    "decoder.max_new_tokens=8",
    "scheduler.warmup_steps=2",
    "logger=none",
]


def train(tmp_path: Path, name: str, *overrides: str, cache=None) -> tuple[Path, dict]:
    run_dir = tmp_path / name
    cfg = compose([*SMALL, f"cache_dir={cache}", *overrides])
    return run_dir, run(cfg, run_dir)


def deterministic(rows: list[dict]) -> list[dict]:
    """Metric rows without wall-clock quantities."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_run_folder_has_everything(tmp_path, shared_cache):
    run_dir, summary = train(
        tmp_path, "run", "trainer.max_steps=6", "trainer.val_every=3", "trainer.checkpoint_every=3", cache=shared_cache
    )
    for name in ("config.yaml", "env.json", "metrics.jsonl", "samples.jsonl", "summary.json", "tokenizer"):
        assert (run_dir / name).exists(), name
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == 6
    assert [r for r in rows if "val/loss" in r], "validation loss was never logged"
    assert all(r["perf/tokens_per_s"] > 0 for r in train_rows)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {3, 6}
    # the checkpoint loads into the plain model, without Lightning
    ckpt = latest_checkpoint(run_dir)
    assert ckpt.name == "step-000006"
    from rizzrun.runner.build import build_model
    from rizzrun.tokenizers import load_tokenizer

    cfg = compose([*SMALL])
    model = build_model(cfg, load_tokenizer(run_dir / "tokenizer"))
    model.load_state_dict(load_weights(ckpt / WEIGHTS))
    assert summary["step"] == 6


def test_resume_is_bit_identical(tmp_path, shared_cache):
    common = ["trainer.val_every=2", "trainer.checkpoint_every=2", "scheduler.total_steps=8", "optimizer.lr=1e-2"]
    straight, _ = train(tmp_path, "straight", *common, "trainer.max_steps=8", cache=shared_cache)
    split, _ = train(tmp_path, "split", *common, "trainer.max_steps=4", cache=shared_cache)
    train(tmp_path, "split", *common, "trainer.max_steps=8", "resume=true", cache=shared_cache)

    a = load_weights(latest_checkpoint(straight) / WEIGHTS)
    b = load_weights(latest_checkpoint(split) / WEIGHTS)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert deterministic(read_metrics(straight / "metrics.jsonl")) == deterministic(read_metrics(split / "metrics.jsonl"))
    assert (straight / "samples.jsonl").read_text() == (split / "samples.jsonl").read_text()


def test_resume_after_a_crash_from_a_periodic_checkpoint(tmp_path, shared_cache, monkeypatch):
    """A run killed mid-way resumes from its last periodic checkpoint (written during training,
    not at the end) and still ends bit-identical to an uninterrupted run."""
    from rizzrun.runner import task

    common = ["trainer.val_every=2", "trainer.checkpoint_every=3", "trainer.max_steps=8", "optimizer.lr=1e-2"]
    straight, _ = train(tmp_path, "straight", *common, cache=shared_cache)

    original = task.LanguageModelTask.training_step

    def crash_at_step_8(self, batch, batch_idx):
        if self.trainer.global_step == 7:
            raise RuntimeError("preempted (simulated)")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(task.LanguageModelTask, "training_step", crash_at_step_8)
    with pytest.raises(RuntimeError, match="preempted"):
        train(tmp_path, "crashed", *common, cache=shared_cache)
    monkeypatch.setattr(task.LanguageModelTask, "training_step", original)
    crashed = tmp_path / "crashed"
    assert latest_checkpoint(crashed).name == "step-000006"
    train(tmp_path, "crashed", *common, "resume=true", cache=shared_cache)

    a = load_weights(latest_checkpoint(straight) / WEIGHTS)
    b = load_weights(latest_checkpoint(crashed) / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert deterministic(read_metrics(straight / "metrics.jsonl")) == deterministic(read_metrics(crashed / "metrics.jsonl"))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, shared_cache):
    from rizzrun.errors import InputError

    with pytest.raises(InputError, match="checkpoints/latest"):
        train(tmp_path, "empty", "trainer.max_steps=2", "resume=true", cache=shared_cache)


def test_resume_falls_back_past_a_corrupted_checkpoint_to_the_same_curve(tmp_path, shared_cache, caplog):
    """A flipped byte in the newest checkpoint's weights: the resume names the file, continues from
    the previous intact checkpoint, and ends where an uninterrupted run ends."""
    common = ["trainer.val_every=2", "trainer.checkpoint_every=2", "scheduler.total_steps=6", "optimizer.lr=1e-2"]
    straight, _ = train(tmp_path, "straight", *common, "trainer.max_steps=6", cache=shared_cache)
    damaged, _ = train(tmp_path, "damaged", *common, "trainer.max_steps=4", cache=shared_cache)
    weights = damaged / "checkpoints" / "step-000004" / WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # inside the last tensor's data: the header still parses
    weights.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        train(tmp_path, "damaged", *common, "trainer.max_steps=6", "resume=true", cache=shared_cache)
    assert str(weights) in caplog.text
    a, b = _final_weights(straight), _final_weights(damaged)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert deterministic(read_metrics(straight / "metrics.jsonl")) == deterministic(read_metrics(damaged / "metrics.jsonl"))


def test_checkpoint_write_is_atomic(tmp_path, shared_cache, monkeypatch):
    run_dir, _ = train(tmp_path, "run", "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.val_every=2", cache=shared_cache)
    before = latest_checkpoint(run_dir)
    weights_before = load_weights(before / WEIGHTS)

    import rizzrun.runner.checkpoint as ck

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train(tmp_path, "run", "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.val_every=2", "resume=true", cache=shared_cache)
    assert latest_checkpoint(run_dir) == before
    after = load_weights(before / WEIGHTS)
    assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")], "temp files left behind"


def test_tied_weights_round_trip(tmp_path):
    shared = torch.randn(5, 3)
    state = {"embed.weight": shared, "lm_head.weight": shared, "norm.weight": torch.ones(3)}
    save_weights(state, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert set(loaded) == set(state)
    assert torch.equal(loaded["lm_head.weight"], shared)
    assert loaded["lm_head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()


def test_wandb_offline_and_same_id_on_resume(tmp_path, shared_cache):
    common = ["logger=wandb", "trainer.checkpoint_every=2", "trainer.val_every=2"]
    run_dir, _ = train(tmp_path, "wb", *common, "trainer.max_steps=2", cache=shared_cache)
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert offline and all(p.name.endswith(run_id) for p in offline)
    time.sleep(1.1)  # W&B names offline folders by the second: make the resumed one distinct
    train(tmp_path, "wb", *common, "trainer.max_steps=4", "resume=true", cache=shared_cache)
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)


def test_wandb_finishes_when_training_crashes(tmp_path, shared_cache, monkeypatch):
    import wandb

    from rizzrun.runner import task

    def boom(self, batch, batch_idx):
        raise RuntimeError("objective exploded")

    monkeypatch.setattr(task.LanguageModelTask, "training_step", boom)
    with pytest.raises(RuntimeError, match="objective exploded"):
        train(tmp_path, "crash", "logger=wandb", "trainer.max_steps=2", cache=shared_cache)
    assert wandb.run is None


def test_csv_logger_and_metrics_jsonl(tmp_path, shared_cache):
    run_dir, _ = train(tmp_path, "csv", "logger=csv", "trainer.max_steps=2", "trainer.val_every=2", cache=shared_cache)
    assert list(run_dir.glob("csv/**/metrics.csv"))
    assert read_metrics(run_dir / "metrics.jsonl")


def test_generate_from_run(tmp_path, shared_cache):
    from rizzrun.runner.generate import generate_from_run

    run_dir, _ = train(tmp_path, "gen", "trainer.max_steps=2", "trainer.val_every=2", cache=shared_cache)
    text = generate_from_run(run_dir, "Return the", max_new_tokens=5, decoder="greedy")
    assert text.startswith("Return the")
    again = generate_from_run(run_dir, "Return the", max_new_tokens=5, decoder="greedy")
    assert text == again


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(latest_checkpoint(run_dir) / WEIGHTS)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, shared_cache):
    """2 micro-batches of 4 blocks = 1 batch of 8: the stream visits the same blocks, every
    block has the same number of targets, so the token-mean gradient is the same (its norm is
    logged each step, before clipping) and so are the weights it trains.

    Adam's eps is 1e-6 here, not 1e-8: with 1e-8 an entry whose gradient is ~1e-9 (pure float
    rounding, which differs between summing 2 micro-batches and one batch) moves by up to lr
    times a factor of order 1 — one entry in ~8,000 then differs by a few 1e-6."""
    common = ["trainer.max_steps=3", "trainer.val_every=3", "trainer.checkpoint_every=3", "optimizer.lr=1e-2",
              "optimizer.eps=1e-6", "trainer.log_every=1"]
    big, _ = train(tmp_path, "big", *common, "data.batch_size=8", cache=shared_cache)
    acc, _ = train(tmp_path, "acc", *common, "data.batch_size=4", "trainer.accumulate=2", cache=shared_cache)
    a, b = _final_weights(big), _final_weights(acc)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
    assert not torch.equal(a["norm.weight"], torch.ones_like(a["norm.weight"]))  # training moved them
    big_loss = [r["train/loss"] for r in read_metrics(big / "metrics.jsonl") if "train/loss" in r]
    acc_loss = [r["train/loss"] for r in read_metrics(acc / "metrics.jsonl") if "train/loss" in r]
    assert len(acc_loss) == 3  # one row per optimizer step, not per micro-batch
    assert big_loss == pytest.approx(acc_loss, rel=1e-5)
    big_norm = [r["train/grad_norm"] for r in read_metrics(big / "metrics.jsonl") if "train/grad_norm" in r]
    acc_norm = [r["train/grad_norm"] for r in read_metrics(acc / "metrics.jsonl") if "train/grad_norm" in r]
    assert len(big_norm) == 3 and big_norm == pytest.approx(acc_norm, rel=1e-5)


def test_bf16_mixed_precision_trains(tmp_path, shared_cache):
    run_dir, summary = train(
        tmp_path, "bf16", "trainer.precision=bf16-mixed", "trainer.max_steps=3", "trainer.val_every=3", cache=shared_cache
    )
    fp32_dir, fp32 = train(tmp_path, "fp32", "trainer.max_steps=3", "trainer.val_every=3", cache=shared_cache)
    weights = _final_weights(run_dir)
    assert all(w.dtype == torch.float32 for w in weights.values())  # master weights stay fp32
    # bf16 autocast changes the numbers a little, not the result
    assert summary["val_loss"] == pytest.approx(fp32["val_loss"], rel=0.02)
    assert summary["val_loss"] != fp32["val_loss"]


def test_torch_compile_gives_the_eager_result(tmp_path, shared_cache):
    common = ["trainer.max_steps=2", "trainer.val_every=2", "model.n_layer=1", "trainer.samples_per_val=0"]
    eager, _ = train(tmp_path, "eager", *common, cache=shared_cache)
    compiled, _ = train(tmp_path, "compiled", *common, "trainer.compile=true", cache=shared_cache)
    a, b = _final_weights(eager), _final_weights(compiled)
    assert set(a) == set(b)  # compiling in place keeps the parameter names
    losses = [[r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r] for run in (eager, compiled)]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    # AdamW divides by sqrt(v): where a gradient is ~0, the float reassociation of compiled
    # kernels moves that element's update by a small fraction of lr (3e-3) — hence atol 1e-4
    # (3% of one update), far below what a wrong compiled graph would give.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4, msg=key)


def test_wandb_logger_gets_project_name_group_tags_and_the_resolved_config(tmp_path):
    from rizzrun.runner.loggers import build_loggers

    cfg = compose(["logger=wandb", "logger.project=proj", "logger.group=grp", "logger.tags=[a,b]", "name=demo"])
    jsonl, wb = build_loggers(cfg, tmp_path / "2026-01-01-demo")
    init = wb._wandb_init
    assert (init["project"], init["group"], init["tags"], init["mode"]) == ("proj", "grp", ["a", "b"], "offline")
    assert init["name"] == "2026-01-01-demo"  # the run folder's name unless logger.name is set
    assert init["id"] == (tmp_path / "2026-01-01-demo" / "wandb_id.txt").read_text().strip()
    assert init["config"]["scheduler"]["total_steps"] == cfg.trainer.max_steps  # resolved, not "${...}"
    assert "${" not in json.dumps(init["config"])


def test_skipped_rows_are_counted_and_logged(tmp_path, shared_cache, caplog):
    import logging

    docs = tmp_path / "docs.jsonl"
    good = "A sentence long enough to be a document of its own, repeated. " * 8
    docs.write_text("\n".join(json.dumps(r) for r in [{"text": good}] * 30 + [{"text": ""}, {"title": "no text"}]))
    small = [o for o in SMALL if not o.startswith("data.max_docs")]  # a pydoc key
    cfg = compose([*small, f"cache_dir={shared_cache}", "data=text", f"data.train_files=[{docs}]",
                   "data.on_bad_row=skip", "data.val_fraction=0.2", "data.seq_len=32", "data.batch_size=4",
                   "trainer.max_steps=2", "trainer.val_every=2"])
    with caplog.at_level(logging.INFO, logger="rizzrun"):
        summary = run(cfg, tmp_path / "text")
    assert sum(summary["data"]["skipped"].values()) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("data: rows skipped, by reason:") for m in warned), warned


def test_goldfish_random_masks_resume_exactly(tmp_path, shared_cache):
    """The "random" strategy's generator state is checkpointed: 4 steps + resume to 8 ends with
    the weights of 8 straight steps (without it the masks after the resume differ)."""
    common = ["objective=goldfish", "objective.strategy=random", "objective.k=2", "trainer.val_every=2",
              "trainer.checkpoint_every=2", "scheduler.total_steps=8", "optimizer.lr=1e-2"]
    straight, _ = train(tmp_path, "straight", *common, "trainer.max_steps=8", cache=shared_cache)
    split, _ = train(tmp_path, "split", *common, "trainer.max_steps=4", cache=shared_cache)
    train(tmp_path, "split", *common, "trainer.max_steps=8", "resume=true", cache=shared_cache)
    a, b = _final_weights(straight), _final_weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_step_is_saved_once(tmp_path, shared_cache, monkeypatch):
    """The final step is also a periodic and a validation step: one write, not two."""
    from rizzrun.runner.checkpoint import FolderCheckpointIO

    written = []
    original = FolderCheckpointIO.save_checkpoint

    def counting(self, checkpoint, path, storage_options=None):
        written.append(Path(path).name)
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(FolderCheckpointIO, "save_checkpoint", counting)
    train(tmp_path, "once", "trainer.max_steps=4", "trainer.val_every=2", "trainer.checkpoint_every=2",
          cache=shared_cache)
    assert written == ["step-000002", "step-000004"]


def test_nonfinite_guard_stops_or_drops_the_update():
    from rizzrun.runner.control import Diverged, NonFiniteGuard

    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    finite = {"train/loss": torch.tensor(1.0), "train/grad_norm": torch.tensor(2.0)}
    NonFiniteGuard("stop").check(1, finite, model)  # nothing to do
    assert model.weight.grad is not None
    with pytest.raises(Diverged, match=r"diverged at step 7: train/grad_norm = nan"):
        NonFiniteGuard("stop").check(7, {**finite, "train/grad_norm": torch.tensor(float("nan"))}, model)
    skip = NonFiniteGuard("skip", max_skips=1)
    skip.check(3, {**finite, "train/loss": torch.tensor(float("inf"))}, model)
    assert skip.skipped == [3] and all(p.grad is None for p in model.parameters())
    with pytest.raises(Diverged, match="1 steps were skipped already"):
        skip.check(4, {**finite, "train/loss": torch.tensor(float("inf"))}, model)
    # under 16-mixed an infinite gradient is the GradScaler's to skip: only the loss counts
    NonFiniteGuard("stop", check_grads=False).check(5, {**finite, "train/grad_norm": torch.tensor(float("inf"))}, model)
    restored = NonFiniteGuard("skip", max_skips=3)
    restored.load_state_dict(skip.state_dict())
    assert restored.skipped == [3]


def test_every_logger_numbers_rows_by_the_optimizer_step(tmp_path, shared_cache, monkeypatch):
    """W&B's step (its `trainer/global_step` axis) is metrics.jsonl's step for every row,
    train and validation alike, across a resume (Lightning's own counter is 0-based and lags)."""
    from lightning.pytorch.loggers import WandbLogger

    sent = []
    original = WandbLogger.log_metrics

    def recording(self, metrics, step=None):
        sent.append((step, sorted(k for k in metrics if k != "epoch")))
        return original(self, metrics, step)

    monkeypatch.setattr(WandbLogger, "log_metrics", recording)
    common = ["logger=wandb", "trainer.log_every=2", "trainer.val_every=3", "trainer.checkpoint_every=3",
              "trainer.samples_per_val=0"]
    run_dir, _ = train(tmp_path, "steps", *common, "trainer.max_steps=3", cache=shared_cache)
    train(tmp_path, "steps", *common, "trainer.max_steps=6", "resume=true", cache=shared_cache)
    rows = [(r["step"], sorted(k for k in r if k != "step")) for r in read_metrics(run_dir / "metrics.jsonl")]
    assert sent == rows
    assert [step for step, keys in rows if "train/loss" in keys] == [2, 4, 6]
    assert [step for step, keys in rows if "val/loss" in keys] == [3, 6]


def test_a_signal_between_two_steps_stops_after_the_next_and_resumes_to_the_same_curve(tmp_path, shared_cache,
                                                                                         monkeypatch):
    """SIGTERM sent after step 3's own hooks ran (between two steps, as a scheduler's signal may
    land): the run finishes step 4 and its validation, saves step 4, stops with 143; the resume
    logs exactly the uninterrupted run's rows (no extra validation at the resume)."""
    import os
    import signal

    import lightning as L

    from rizzrun.errors import RunEnded
    from rizzrun.runner import callbacks

    common = ["trainer.val_every=2", "trainer.checkpoint_every=100", "scheduler.total_steps=6", "optimizer.lr=1e-2"]
    straight, _ = train(tmp_path, "straight", *common, "trainer.max_steps=6", cache=shared_cache)

    class SigtermAfterStep3(L.Callback):  # stands where the progress display stands: after SignalStop
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(callbacks, "progress_callback", lambda every: SigtermAfterStep3())
    with pytest.raises(RunEnded) as stopped:
        train(tmp_path, "stopped", *common, "trainer.max_steps=6", cache=shared_cache)
    assert stopped.value.exit_code == 143 and "at step 4; checkpoint step-000004" in str(stopped.value)
    monkeypatch.undo()
    stopped_dir = tmp_path / "stopped"
    train(tmp_path, "stopped", *common, "trainer.max_steps=6", "resume=true", cache=shared_cache)
    assert deterministic(read_metrics(stopped_dir / "metrics.jsonl")) == deterministic(read_metrics(straight / "metrics.jsonl"))
    a, b = _final_weights(straight), _final_weights(stopped_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
