"""Runs as a user meets them, through the real `rizzrun` command: folders that never clobber each
other, SIGTERM/SIGINT/SIGKILL mid-run and a resume that continues the same curve, divergence.

Each case starts real processes and sends real signals. The model is tiny and the runs short.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rizzrun.layout import CHECKPOINTS, LATEST, METRICS, SUMMARY, WEIGHTS
from rizzrun.runner.checkpoint import load_weights
from rizzrun.runner.metrics import read_metrics

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
REPO = Path(__file__).resolve().parents[1]

# Tiny and deterministic: constant lr (so the schedule does not depend on max_steps), logging every
# 3 steps and checkpoints every 5 (a checkpoint that is not on a logging step), validation every 4.
TINY = [
    "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
    "data.seq_len=16", "data.batch_size=2", "data.max_docs=200",
    "trainer.log_every=3", "trainer.checkpoint_every=5", "trainer.val_every=4", "trainer.val_batches=1",
    "trainer.samples_per_val=1", "decoder.max_new_tokens=4", "scheduler=constant", "logger=csv",
    "trainer.num_threads=1",
]


def env(cache: Path) -> dict:
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}


def rizzrun(cache: Path, *argv: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([RIZZRUN, *argv], env=env(cache), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start(cache: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([RIZZRUN, *argv], env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def trained_steps(run_dir: Path) -> int:
    rows = read_metrics(run_dir / METRICS) if (run_dir / METRICS).exists() else []
    return max((r["step"] for r in rows if "train/loss" in r), default=0)


def curve(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall-clock quantities."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_metrics(run_dir / METRICS)]


def csv_steps(run_dir: Path) -> list[int]:
    import csv

    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def latest_name(run_dir: Path) -> str:
    return (run_dir / LATEST).read_text().strip()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle-cache")


def straight(tmp_path: Path, cache: Path, steps: int) -> Path:
    run_dir = tmp_path / f"straight-{steps}"
    done = rizzrun(cache, *TINY, f"trainer.max_steps={steps}", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


# --- run folders ---------------------------------------------------------------------------------

def test_a_fresh_run_never_writes_into_a_folder_holding_a_run(tmp_path, cache):
    run_dir = straight(tmp_path, cache, 6)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}
    again = rizzrun(cache, *TINY, "trainer.max_steps=6", f"hydra.run.dir={run_dir}")
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hydra.run.dir=") and f"resume={run_dir}" in lines[0]
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # not one byte of the old run changed, .hydra/ included


def test_runs_started_together_get_their_own_folders(tmp_path, cache):
    """Two runs of one name started at once (the same second, most likely): two folders, each
    with one row per logged step."""
    procs = [start(cache, *TINY, "trainer.max_steps=3", "name=twin", f"output_root={tmp_path}") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    folders = sorted(p.parent for p in tmp_path.rglob(SUMMARY))
    # `<time>-twin` twice when they started in different seconds, else `<time>-twin` and `<time>-twin-1`
    assert len(folders) == 2 and all(re.fullmatch(r"\d\d-\d\d-\d\d-twin(-1)?", f.name) for f in folders)
    for folder in folders:
        steps = [r["step"] for r in read_metrics(folder / METRICS) if "train/loss" in r]
        assert steps == [3]


def test_two_processes_never_write_into_one_named_folder(tmp_path, cache):
    run_dir = tmp_path / "shared"
    procs = [start(cache, *TINY, "trainer.max_steps=3", f"hydra.run.dir={run_dir}") for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and refused[0].startswith("error: ")
    assert [r["step"] for r in read_metrics(run_dir / METRICS) if "train/loss" in r] == [3]


# --- signals and resume ----------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_the_resumed_run_is_the_same_run(tmp_path, cache, sig, code):
    run_dir = tmp_path / "stopped"
    proc = start(cache, *TINY, "trainer.max_steps=400", f"hydra.run.dir={run_dir}")
    wait_for(lambda: trained_steps(run_dir) >= 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    last = err.strip().splitlines()[-1]
    summary = json.loads((run_dir / SUMMARY).read_text())
    stopped_at = summary["step"]
    assert summary["status"] == f"stopped by {sig.name}"
    assert last == (f"stopped by {sig.name} at step {stopped_at}; checkpoint step-{stopped_at:06d}; "
                    f"continue with: rizzrun resume={run_dir}")
    assert latest_name(run_dir) == f"step-{stopped_at:06d}"
    if sig == signal.SIGINT:
        return  # the resume below is the same for both signals; SIGTERM's run shows it

    total = stopped_at + 5
    resumed = rizzrun(cache, *TINY, f"trainer.max_steps={total}", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = straight(tmp_path, cache, total)
    assert curve(run_dir) == curve(reference)
    assert csv_steps(run_dir) == csv_steps(reference) == [r["step"] for r in read_metrics(reference / METRICS)]
    a = load_weights(run_dir / CHECKPOINTS / latest_name(run_dir) / WEIGHTS)
    b = load_weights(reference / CHECKPOINTS / latest_name(reference) / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in b)
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["resumed"] == [{"from_checkpoint": f"step-{stopped_at:06d}", "step": stopped_at,
                                   "previous_segment_ended": f"stopped by {sig.name}"}]


def test_kill_9_then_resume_gives_the_uninterrupted_curve(tmp_path, cache):
    """SIGKILL leaves no chance to save: the resume starts from the periodic checkpoint at step 5
    (not a logging step) or 10 and must log exactly the rows an uninterrupted run logs."""
    run_dir = tmp_path / "killed"
    proc = start(cache, *TINY, "trainer.max_steps=400", f"hydra.run.dir={run_dir}")
    wait_for(lambda: (run_dir / LATEST).exists() and trained_steps(run_dir) >= 6, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / SUMMARY).read_text())["status"] == "running"  # all a SIGKILL leaves
    resumed = rizzrun(cache, *TINY, "trainer.max_steps=14", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = straight(tmp_path, cache, 14)
    assert curve(run_dir) == curve(reference)
    assert [r["step"] for r in curve(reference) if "train/loss" in r] == [3, 6, 9, 12]
    assert csv_steps(run_dir) == csv_steps(reference)
    resumed_from = json.loads((run_dir / SUMMARY).read_text())["resumed"]
    assert len(resumed_from) == 1 and resumed_from[0]["previous_segment_ended"] == "killed"
    assert resumed_from[0]["from_checkpoint"] in ("step-000005", "step-000010")


# --- divergence ------------------------------------------------------------------------------------

def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cache):
    run_dir = tmp_path / "diverged"
    done = rizzrun(cache, *TINY, "trainer.max_steps=60", "optimizer.lr=1e3", "trainer.checkpoint_every=1",
                   "trainer.keep_checkpoints=100", "trainer.grad_clip=0", f"hydra.run.dir={run_dir}")
    assert done.returncode == 3, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: diverged ") and "optimizer.lr" in line
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["status"] == "diverged"
    saved = sorted((run_dir / CHECKPOINTS).glob("step-*"))
    assert latest_name(run_dir) == saved[-1].name
    for folder in saved:  # every checkpoint written holds finite weights
        assert all(torch.isfinite(t).all() for t in load_weights(folder / WEIGHTS).values()), folder.name


def test_skip_mode_skips_up_to_n_steps_then_stops(tmp_path, cache):
    run_dir = tmp_path / "skipping"
    done = rizzrun(cache, *TINY, "trainer.max_steps=60", "optimizer.lr=1e3", "trainer.grad_clip=0",
                   "trainer.on_nonfinite=skip", "trainer.max_nonfinite_skips=2", f"hydra.run.dir={run_dir}")
    assert done.returncode == 3, done.stderr[-3000:]
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["status"] == "diverged" and len(summary["skipped_nonfinite_steps"]) == 2
    assert "2 steps were skipped already" in done.stderr.strip().splitlines()[-1]


def test_an_unwritable_output_root_is_one_line_before_anything_runs(tmp_path, cache):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = rizzrun(cache, *TINY, f"output_root={blocker}/runs")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: hydra.run.dir={blocker}/runs/") and "cannot create the run folder" in lines[0]
    assert "output_root=" in lines[0]


def test_claim_takes_the_next_free_name_and_refuses_a_named_folder_holding_a_run(tmp_path):
    from rizzrun.errors import RunFolderBusy
    from rizzrun.run_dirs import claim

    first = claim(tmp_path / "12-00-00-tiny", unique=True)
    second = claim(tmp_path / "12-00-00-tiny", unique=True)
    assert (first.name, second.name) == ("12-00-00-tiny", "12-00-00-tiny-1") and second.is_dir()
    assert claim(first, unique=False) == first  # an empty named folder is fine
    (first / "metrics.jsonl").write_text("")
    with pytest.raises(RunFolderBusy, match=r"resume="):
        claim(first, unique=False)


def test_a_bad_data_row_is_one_line_with_the_traceback_kept(tmp_path, cache):
    """Bad input found only once the job reads it: `error: ...` naming the file, the row and the
    key that would skip it; exit 2; the traceback in the run folder's error.txt."""
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(30))
                    + '{"text": 17}\n')
    run_dir = tmp_path / "bad-data"
    done = rizzrun(cache, *[o for o in TINY if not o.startswith("data.max_docs")], "data=text",
                   f"data.train_files={data}", "data.val_fraction=0.2", "trainer.max_steps=2",
                   f"hydra.run.dir={run_dir}")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(data) in lines[0], done.stderr
    assert "row 30" in lines[0] and "data.on_bad_row=skip" in lines[0]
    assert "Traceback" in (run_dir / "error.txt").read_text()
    assert json.loads((run_dir / SUMMARY).read_text())["status"] == "bad input"


def test_a_decoder_that_cannot_decode_the_model_is_refused_before_training(tmp_path, cache):
    """decoder=think needs softmax key caches; a lightning model has none: one line naming the
    layer and the way out, before any step (no checkpoint), status 'bad input'."""
    run_dir = tmp_path / "think-on-lightning"
    done = rizzrun(cache, *TINY, "attention=lightning", "decoder=think", "trainer.max_steps=2",
                   f"hydra.run.dir={run_dir}")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: decoder (ThinK): layer 0's token mixer "), done.stderr
    assert "trainer.samples_per_val=0" in lines[0]
    assert not (run_dir / "checkpoints").exists()
    assert json.loads((run_dir / SUMMARY).read_text())["status"] == "bad input"
