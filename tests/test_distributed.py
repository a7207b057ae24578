"""Training with several processes, as a user runs it: the real `rizzrun` command with
`trainer.devices=2` on the CPU (gloo), under DDP and under FSDP (FSDP2 through Lightning's
ModelParallelStrategy).

The independent reference is one process with the doubled batch: two processes that each train
on their half of every global batch must follow its loss curve (within float tolerance: the sums
run in another order), write one run folder with one metrics file and one W&B run, resume exactly,
and run as jobs of a sweep without launching the sweep again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rizzrun import layout
from rizzrun.ranks import HANDED_JOB, handed_job, handing_over, launch_rank
from rizzrun.runner.checkpoint import latest_checkpoint, load_weights, read_meta
from rizzrun.runner.distributed import RankShard, share
from rizzrun.runner.metrics import read_metrics

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
REPO = Path(__file__).resolve().parents[1]
BATCH = 2  # per process
TINY = [
    "+recipe=tiny", "model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
    "data.seq_len=32", "data.max_docs=300", "trainer.val_every=3", "trainer.val_batches=2", "trainer.log_every=1",
    "trainer.checkpoint_every=3", "trainer.samples_per_val=1", "decoder.max_new_tokens=4", "scheduler=constant",
    "logger=csv",
]
TWO = ["trainer.devices=2", f"data.batch_size={BATCH}"]
COMPARED = ("train/loss", "val/loss", "train/grad_norm", "train/lr", "train/tokens")


def env(cache: Path, outputs: Path) -> dict:
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "RIZZRUN_OUTPUTS": str(outputs), "PYTHONPATH": str(REPO),
            "WANDB_SILENT": "true"}


def rizzrun(cache: Path, outputs: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([RIZZRUN, *argv], env=env(cache, outputs), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return done


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def rows(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, key, value) of every compared metric, in file order."""
    out = []
    for row in read_metrics(run_dir / layout.METRICS):
        out += [(row["step"], k, row[k]) for k in COMPARED if k in row]
    return out


def assert_same_curve(run_dir: Path, reference: Path, upto: int | None = None) -> None:
    got, want = rows(run_dir), [r for r in rows(reference) if upto is None or r[0] <= upto]
    assert [(s, k) for s, k, _ in got] == [(s, k) for s, k, _ in want]
    for (step, key, a), (_, _, b) in zip(got, want):
        assert math.isclose(a, b, rel_tol=2e-5, abs_tol=1e-6), (step, key, a, b)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> Path:
    """One process, batch 2 × BATCH, 6 steps."""
    out = tmp_path_factory.mktemp("reference")
    run_dir = out / "one"
    ok(rizzrun(cache, out, *TINY, f"data.batch_size={2 * BATCH}", "trainer.max_steps=6", f"hydra.run.dir={run_dir}"))
    return run_dir


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, cache) -> Path:
    """Two DDP processes, BATCH each, 6 steps, logging to W&B offline."""
    out = tmp_path_factory.mktemp("ddp")
    run_dir = out / "two"
    ok(rizzrun(cache, out, *TINY, *TWO, "trainer.strategy=ddp", "trainer.max_steps=6", "logger=wandb",
               "logger.mode=offline", f"hydra.run.dir={run_dir}"))
    return run_dir


# --- DDP --------------------------------------------------------------------------------------------

def test_two_ddp_processes_follow_one_process_with_the_doubled_batch(ddp_run, reference):
    assert_same_curve(ddp_run, reference)
    steps = [r["step"] for r in read_metrics(ddp_run / layout.METRICS) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # one row per step: only rank 0 logs
    assert next(r for r in read_metrics(ddp_run / layout.METRICS) if "train/tokens" in r)["train/tokens"] \
        == 2 * BATCH * 32  # the global batch's tokens
    summary = json.loads((ddp_run / layout.SUMMARY).read_text())
    assert summary["status"] == "completed" and summary["step"] == 6


def test_a_ddp_run_is_one_run_folder_with_one_wandb_run(ddp_run):
    # Nothing but the run folder under the outputs root: the rank Lightning started made no folder.
    assert [p.name for p in ddp_run.parent.iterdir()] == ["two"]
    assert not (ddp_run / ".hydra" / "overrides.yaml").read_text().count("hydra.job.name")
    wandb_runs = [p for p in (ddp_run / "wandb").iterdir() if p.name.startswith("offline-run-")]
    assert len(wandb_runs) == 1
    assert wandb_runs[0].name.endswith((ddp_run / layout.WANDB_ID).read_text().strip())


def test_a_ddp_run_resumes_to_the_same_curve(tmp_path, cache, ddp_run):
    run_dir = tmp_path / "resumed"
    common = [*TINY, *TWO, "trainer.strategy=ddp", "logger=wandb", "logger.mode=offline"]
    ok(rizzrun(cache, tmp_path, *common, "trainer.max_steps=3", f"hydra.run.dir={run_dir}"))
    # One process would read the global batches of another size: refused, one line, nothing written.
    before = (run_dir / layout.METRICS).read_text()
    one = rizzrun(cache, tmp_path, *common, "trainer.max_steps=6", "trainer.devices=1", f"resume={run_dir}")
    assert one.returncode == 2 and one.stderr.strip().splitlines()[-1] == (
        "error: trainer.devices × trainer.num_nodes = 1 processes, but step-000003 was trained by 2: its data "
        "position counts batches of data.batch_size × 2; resume with 2 processes (e.g. trainer.devices=2)")
    assert (run_dir / layout.METRICS).read_text() == before
    ok(rizzrun(cache, tmp_path, *common, "trainer.max_steps=6", f"resume={run_dir}"))
    assert_same_curve(run_dir, ddp_run)
    summary = json.loads((run_dir / layout.SUMMARY).read_text())
    assert summary["resumed"][0]["from_checkpoint"] == "step-000003"


def test_a_ddp_job_in_a_sweep_does_not_launch_the_sweep_again(tmp_path, cache, ddp_run):
    sweep = tmp_path / "sweep"
    ok(rizzrun(cache, tmp_path, "-m", *TINY, *TWO, "trainer.strategy=ddp", "logger=wandb", "logger.mode=offline",
               "trainer.max_steps=3", "seed=0,1", f"hydra.sweep.dir={sweep}"))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]  # no folder of a re-launched sweep
    assert_same_curve(sweep / "0", ddp_run, upto=3)  # job 0 is seed 0: the first steps of the 6-step run
    for job in jobs:
        assert json.loads((sweep / job / layout.SUMMARY).read_text())["status"] == "completed"
    assert rows(sweep / "1") != rows(sweep / "0")


def test_sigterm_to_rank_0_stops_every_rank_at_one_checkpointed_step(tmp_path, cache):
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen([RIZZRUN, *TINY, *TWO, "trainer.strategy=ddp", "trainer.max_steps=400",
                             "trainer.checkpoint_every=1000", f"hydra.run.dir={run_dir}"],
                            env=env(cache, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_dir / layout.METRICS).exists() or len(read_metrics(run_dir / layout.METRICS)) < 4:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "slow"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # rank 0 only: the rank Lightning started hears nothing
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    summary = json.loads((run_dir / layout.SUMMARY).read_text())
    assert summary["status"] == "stopped by SIGTERM"
    step = summary["step"]
    assert (run_dir / layout.LATEST).read_text().strip() == f"step-{step:06d}"
    assert max(r["step"] for r in read_metrics(run_dir / layout.METRICS)) == step
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    assert left == [], "a rank outlived the run"


# --- FSDP ---------------------------------------------------------------------------------------------

def test_fsdp_trains_like_one_process_resumes_and_saves_unsharded_checkpoints(tmp_path, cache, reference):
    run_dir = tmp_path / "sharded"
    common = [*TINY, *TWO, "trainer.strategy=fsdp"]
    ok(rizzrun(cache, tmp_path, *common, "trainer.max_steps=3", f"hydra.run.dir={run_dir}"))
    ok(rizzrun(cache, tmp_path, *common, "trainer.max_steps=6", f"resume={run_dir}"))  # full state into shards
    assert_same_curve(run_dir, reference)
    sharded = load_weights(run_dir / layout.CHECKPOINTS / "step-000006" / layout.WEIGHTS)
    plain = load_weights(reference / layout.CHECKPOINTS / "step-000006" / layout.WEIGHTS)
    assert sorted(sharded) == sorted(plain)
    for name in plain:
        assert sharded[name].shape == plain[name].shape
        torch.testing.assert_close(sharded[name], plain[name], rtol=1e-4, atol=1e-5)
    # The checkpoint loads where no process group exists: `rizzrun generate` on the run folder.
    text = ok(subprocess.run([RIZZRUN, "generate", str(run_dir), "--prompt", "Return the", "decoder.max_new_tokens=3"],
                             env=env(cache, tmp_path), capture_output=True, text=True, timeout=120)).stdout
    assert text.startswith("Return the")


# --- pieces -------------------------------------------------------------------------------------------

def test_two_ddp_processes_train_dpo_like_one_process_with_the_doubled_batch(tmp_path, cache):
    """Preference batches under DDP: each rank holds its own frozen reference and takes its pairs of
    every global batch; the logged metrics (means over pairs, gathered) and the curve equal one
    process's with both ranks' pairs."""
    small = ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
             "trainer.log_every=1", "scheduler=constant", "logger=csv", "trainer.samples_per_val=0"]
    sft = tmp_path / "sft"
    ok(rizzrun(cache, tmp_path, "+recipe=sft_tiny", *small, "trainer.max_steps=2", "eval.at_end=false",
               "data.n_train=200", f"hydra.run.dir={sft}"))
    dpo = [*small, "data=arithmetic_pairs", "objective=dpo", "data.n_train=64", "data.n_val=8", "optimizer.lr=1e-3",
           f"model.from_pretrained={sft}", "trainer.max_steps=4", "trainer.val_every=2", "trainer.val_batches=0",
           "trainer.checkpoint_every=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    ok(rizzrun(cache, tmp_path, *dpo, f"data.batch_size={2 * BATCH}", f"hydra.run.dir={one}"))
    ok(rizzrun(cache, tmp_path, *dpo, *TWO, "trainer.strategy=ddp", f"hydra.run.dir={two}"))
    compared = ("train/loss", "train/rewards/accuracies", "train/rewards/margins", "train/grad_norm",
                "train/pairs", "val/loss", "val/rewards/accuracies", "val/pairs")
    a, b = read_metrics(one / layout.METRICS), read_metrics(two / layout.METRICS)
    assert [sorted(k for k in r if k in compared) for r in a] == [sorted(k for k in r if k in compared) for r in b]
    for x, y in zip(a, b):
        for key in (k for k in compared if k in x):
            assert math.isclose(x[key], y[key], rel_tol=2e-5, abs_tol=1e-6), (x["step"], key, x[key], y[key])
    assert next(r for r in b if "train/pairs" in r)["train/pairs"] == 2 * BATCH  # the global batch's pairs
    assert read_meta(latest_checkpoint(two))["extra_models"]["reference"]["source"] == "init"


def test_each_rank_takes_its_rows_of_a_batch():
    batch = {"input_ids": torch.arange(10).reshape(5, 2), "labels": torch.arange(5), "name": "x", "ids": list("abcde")}
    first, second = share(batch, 0, 2), share(batch, 1, 2)
    assert first["input_ids"].tolist() == [[0, 1], [2, 3], [4, 5]] and second["input_ids"].tolist() == [[6, 7], [8, 9]]
    assert first["labels"].tolist() == [0, 1, 2] and second["labels"].tolist() == [3, 4]
    assert first["ids"] == ["a", "b", "c"] and second["ids"] == ["d", "e"]
    assert first["name"] == second["name"] == "x"
    assert share(batch, 0, 1) is batch
    # a last, small batch with fewer rows than ranks: the rank without a row gets an empty share
    assert share({"input_ids": torch.zeros(1, 3)}, 1, 2)["input_ids"].shape == (0, 3)


def test_too_few_training_blocks_for_the_processes_is_one_line():
    from rizzrun.errors import InputError

    RankShard(2).check_training_rows(2, per_process=1)
    with pytest.raises(InputError, match=r"^data.batch_size=4: the training split holds 1 blocks, fewer than the 2"):
        RankShard(2).check_training_rows(1, per_process=4)


@pytest.mark.parametrize("environ, rank", [
    ({}, 0),
    ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, 0),
    ({"LOCAL_RANK": "1"}, 1),  # a child Lightning started
    ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, 5),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_JOB_NAME": "interactive"}, 0),  # a shell, not an srun task
])
def test_the_launch_rank_is_read_from_what_the_launcher_set(environ, rank):
    assert launch_rank(environ) == rank


def test_rank_0_hands_its_job_to_the_ranks_it_starts_and_then_clears_it(tmp_path, monkeypatch):
    monkeypatch.delenv(HANDED_JOB, raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with handing_over(tmp_path, tmp_path / "checkpoints" / "step-000003"):
        os.environ["MASTER_PORT"] = "12345"  # what Lightning's launcher sets for its children
        child = {**os.environ, "LOCAL_RANK": "1"}
        assert handed_job(child) == {"run_dir": str(tmp_path), "resume_from": str(tmp_path / "checkpoints/step-000003")}
        assert handed_job({**child, "LOCAL_RANK": "0"}) is None  # rank 0 itself runs through Hydra
    assert HANDED_JOB not in os.environ and "MASTER_PORT" not in os.environ
