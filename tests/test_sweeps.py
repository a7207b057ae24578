"""Sweeps that lose nothing, through real `rizzrun -m` processes on the tiny model: every job's
status.json, a job that diverges while the sweep goes on, a sweep SIGKILLed mid-job, and
`-m ... resume=true` that skips the done job, continues the killed one from its checkpoint (the
same curve as an uninterrupted run) and runs the one that never started. Also W&B's group, tags
and config for a sweep job, from a real offline run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rizzrun import job_status, layout
from rizzrun.errors import RunFolderBusy
from rizzrun.run_dirs import RunLock
from test_run_lifecycle import REPO, RIZZRUN, TINY, curve, trained_steps, wait_for

# 4 jobs, one at a time: 0 finishes, 1 diverges (lr 1e3 without clipping: NaN), 2 is SIGKILLed
# after its first checkpoint (the whole sweep with it: the basic launcher runs jobs in-process),
# 3 never starts.
STEPS = 60
LRS = ["0.002", "1000.0", "0.003", "0.001"]
SWEEP = [*TINY, f"trainer.max_steps={STEPS}", "trainer.grad_clip=0", "trainer.on_nonfinite=stop",
         f"optimizer.lr={','.join(LRS)}"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One tokenized-data cache for the module's runs (RIZZRUN_CACHE), as a user's runs share one."""
    return tmp_path_factory.mktemp("sweeps-cache")


def env(tmp: Path, cache: Path) -> dict:
    """Runs land under tmp/out (RIZZRUN_OUTPUTS): `resume=true` looks for sweeps there."""
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "RIZZRUN_OUTPUTS": str(tmp / "out"),
            "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}


def rizzrun(tmp: Path, cache: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([RIZZRUN, *argv], env=env(tmp, cache), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def raw_status(job: Path) -> dict:
    return json.loads((job / layout.STATUS).read_text())


def table_lines(stderr: str, sweep: Path) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"sweep {sweep}: "))
    return lines[start:]


def kill_sweep_during_job(tmp: Path, cache: Path, num: int) -> Path:
    """Start the sweep and SIGKILL it as soon as job `num` has saved a checkpoint (polled every
    10 ms); the sweep's folder. The launcher writes sweep.json and every job's pending status.json
    before Hydra starts, so job `num`'s folder is known from the start."""
    log = tmp / "killed-sweep.log"  # a file, not a pipe nobody reads while the sweep runs
    with log.open("w") as out:
        proc = subprocess.Popen([RIZZRUN, "-m", *SWEEP], env=env(tmp, cache), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.time() + 240
    while True:
        found = list((tmp / "out" / "multirun").glob(f"*/*/{layout.SWEEP}"))
        if found and (found[0].parent / str(num) / layout.LATEST).exists():
            break
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended first (exit {proc.returncode}): {log.read_text()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the job's first checkpoint")
        time.sleep(0.01)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    return found[0].parent


def test_a_killed_sweep_resumes_without_losing_or_redoing_a_job(tmp_path, cache):
    sweep = kill_sweep_during_job(tmp_path, cache, num=2)
    jobs = [sweep / str(n) for n in range(4)]

    # --- what the killed sweep left ----------------------------------------------------------
    manifest = json.loads((sweep / layout.SWEEP).read_text())
    assert len(manifest["jobs"]) == 4 and manifest["overrides"] == SWEEP
    for n, job in enumerate(jobs[:3]):  # the launcher's job list is Hydra's, job by job
        assert list(OmegaConf.load(job / layout.HYDRA_OVERRIDES)) == raw_status(job)["overrides"] == manifest["jobs"][n]
        assert f"optimizer.lr={LRS[n]}" in manifest["jobs"][n]
    done, diverged, killed, never = (raw_status(job) for job in jobs)
    assert (done["status"], done["job"], done["sweep"]) == ("done", 0, str(sweep))
    assert done["val_loss"] == json.loads((jobs[0] / layout.SUMMARY).read_text())["val_loss"]
    assert done["started"] <= done["ended"]
    assert (diverged["status"], diverged["reason"]) == ("failed", "diverged")
    assert diverged["error"].startswith("diverged ") and diverged["traceback"] == str(jobs[1] / layout.ERROR)
    assert "Diverged: diverged " in Path(diverged["traceback"]).read_text()
    assert killed["status"] == "running" and killed["ended"] is None  # all a SIGKILL leaves
    seen = job_status.read_status(jobs[2])  # no process holds its run lock: a reader sees it killed
    assert (seen["status"], seen["reason"]) == ("failed", "killed")
    assert never == {"status": "pending", "job": 3, "overrides": manifest["jobs"][3], "sweep": str(sweep),
                     "started": None, "ended": None}
    assert not (jobs[3] / layout.METRICS).exists()

    # What each job would do in its folder (the rule a cluster requeue uses too).
    assert job_status.plan_job(jobs[0], done["overrides"]).skip
    assert job_status.resume_value_for(jobs[2], killed["overrides"]) == str(jobs[2])
    assert job_status.resume_value_for(jobs[3], never["overrides"]) is None
    with pytest.raises(RunFolderBusy, match="holds another job"):
        job_status.plan_job(jobs[2], done["overrides"])
    with RunLock(jobs[2]):  # a live process in the folder: nobody else may run the job there
        assert job_status.read_status(jobs[2])["status"] == "running"
        with pytest.raises(RunFolderBusy, match="is running this job"):
            job_status.plan_job(jobs[2], killed["overrides"])

    # --- refusals: one line, exit 2, nothing written -----------------------------------------------
    before = snapshot(sweep)
    other = [*SWEEP[:-1], "optimizer.lr=0.002,1000.0,0.003,0.0005"]
    named = rizzrun(tmp_path, cache, "-m", *other, f"hydra.sweep.dir={sweep}", "resume=true")
    assert named.returncode == 2
    assert named.stderr.splitlines() == [
        f"error: hydra.sweep.dir={sweep}: this command's jobs differ from the sweep's: job 3 is "
        f"`{' '.join(o if o != 'optimizer.lr=0.001' else 'optimizer.lr=0.0005' for o in never['overrides'])}` here "
        f"but `{' '.join(never['overrides'])}` in the folder; resume with the sweep's own overrides, or start a new "
        "sweep without resume="]
    newest = rizzrun(tmp_path, cache, "-m", *other, "resume=true")
    assert newest.returncode == 2 and len(newest.stderr.splitlines()) == 1
    assert f"the newest, {sweep}, differs: job 3 is" in newest.stderr
    fresh = rizzrun(tmp_path, cache, "-m", *SWEEP, f"hydra.sweep.dir={sweep}")  # never a fresh sweep into it
    assert fresh.returncode == 2 and "holds the runs of another sweep" in fresh.stderr
    assert snapshot(sweep) == before

    # --- resume ----------------------------------------------------------------------------------
    resumed = rizzrun(tmp_path, cache, "-m", *SWEEP, "resume=true")
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # job 1 diverges again
    assert f"resuming sweep {sweep}: 4 jobs (1 done: skipped; 2 to continue; 1 never started)" in resumed.stderr
    # The done job was not retrained: not one byte of its folder's run files changed.
    assert snapshot(jobs[0]) == files_of(before, "0") and layout.METRICS in files_of(before, "0")
    assert [raw_status(job)["status"] for job in jobs] == ["done", "failed", "done", "done"]
    assert raw_status(jobs[2])["resumed_from"] == str(jobs[2]) and raw_status(jobs[3])["resumed_from"] is None
    history = json.loads((jobs[2] / layout.SUMMARY).read_text())["resumed"]
    assert len(history) == 1 and history[0]["previous_segment_ended"] == "killed"
    assert history[0]["from_checkpoint"] in {f"step-{s:06d}" for s in range(5, STEPS, 5)}

    # The killed job, continued from its checkpoint, logged exactly an uninterrupted run's rows.
    reference = tmp_path / "reference"
    straight = rizzrun(tmp_path, cache, *SWEEP[:-1], "optimizer.lr=0.003", f"hydra.run.dir={reference}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert curve(jobs[2]) == curve(reference)
    assert [r["step"] for r in curve(reference) if "train/loss" in r] == list(range(3, STEPS + 1, 3))

    table = table_lines(resumed.stderr, sweep)
    loss = {n: json.loads((jobs[n] / layout.SUMMARY).read_text())["val_loss"] for n in (0, 2, 3)}
    assert all(math.isfinite(v) for v in loss.values())
    diverged = raw_status(jobs[1])
    assert diverged["reason"] == "diverged" and diverged["error"].startswith("diverged ")
    failed_loss = f"{diverged['val_loss']:.4f}" if diverged["val_loss"] is not None else "-"
    assert table == [
        f"sweep {sweep}: 4 jobs, 3 done, 1 failed",
        "job  status  overrides            val loss  error",
        f"0    done    optimizer.lr=0.002   {loss[0]:.4f}",
        f"1    failed  optimizer.lr=1000.0  {failed_loss.ljust(8)}  {diverged['error']} "
        f"(traceback: {jobs[1] / layout.ERROR})",
        f"2    done    optimizer.lr=0.003   {loss[2]:.4f}",
        f"3    done    optimizer.lr=0.001   {loss[3]:.4f}",
        f"continue the sweep with: rizzrun -m <the same overrides> resume=true (or hydra.sweep.dir={sweep} resume=true)",
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under `folder`, by relative path; what Hydra itself rewrites when it
    launches a job again (.hydra/, its log, multirun.yaml) and the lock file aside."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in (layout.LOCK, "rizzrun.log", "multirun.yaml")
            and layout.HYDRA_DIR not in p.relative_to(folder).parts}


def files_of(snap: dict[str, bytes], job: str) -> dict[str, bytes]:
    return {name.split("/", 1)[1]: data for name, data in snap.items() if name.startswith(f"{job}/")}


def test_a_signal_stops_the_sweep_and_the_table_names_what_never_ran(tmp_path, cache):
    """SIGTERM stops a sweep as it stops one run (the job saves a checkpoint and ends); its status
    says so, the job after it stays pending, and the table is printed all the same."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([RIZZRUN, "-m", *TINY, "trainer.max_steps=400", "optimizer.lr=0.002,0.003",
                             f"hydra.sweep.dir={sweep}"], env=env(tmp_path, cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for(lambda: trained_steps(sweep / "0") >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = raw_status(sweep / "0")
    step = json.loads((sweep / "0" / layout.SUMMARY).read_text())["step"]
    assert (stopped["status"], stopped["reason"]) == ("failed", "stopped by SIGTERM")
    assert stopped["error"].startswith(f"stopped by SIGTERM at step {step}; checkpoint step-{step:06d}")
    assert raw_status(sweep / "1")["status"] == "pending"
    assert table_lines(err, sweep) == [
        f"sweep {sweep}: 2 jobs, 1 failed, 1 pending",
        "job  status   overrides           val loss  error",
        f"0    failed   optimizer.lr=0.002  {val_loss_cell(stopped)}  {stopped['error']} "
        f"(traceback: {sweep / '0' / layout.ERROR})",
        "1    pending  optimizer.lr=0.003  -         never started",
        f"continue the sweep with: rizzrun -m <the same overrides> resume=true (or hydra.sweep.dir={sweep} resume=true)",
    ]


def val_loss_cell(record: dict) -> str:
    """The table's cell, padded to the column's width ("val loss"): a value when the job validated
    before it stopped, else "-"."""
    return (f"{record['val_loss']:.4f}" if record.get("val_loss") is not None else "-").ljust(8)


# --- W&B --------------------------------------------------------------------------------------------

def wandb_records(run_dir: Path) -> list:
    """The records of the offline W&B run in `run_dir`, read from its run-*.wandb file: LevelDB's
    log format (32 KiB blocks of records with a 7-byte header: CRC, length, type) after W&B's own
    7-byte header, each record a wandb_internal_pb2.Record."""
    import struct

    from wandb.proto import wandb_internal_pb2

    [path] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a record split across blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_one_run_per_job_grouped_by_the_sweep_and_tagged_with_its_overrides(tmp_path, monkeypatch):
    """Two jobs of one sweep, in one process as the basic launcher runs them: each its own offline
    W&B run (finished before the next starts), grouped by the sweep's folder, tagged with its
    overrides (cut to W&B's 64 characters), with the overrides in its config; `logger.group`
    when set wins. Checked on the run files W&B wrote, not only on the SDK's objects."""
    import wandb

    from rizzrun.config import load
    from rizzrun.runner.loggers import build_loggers, finish_loggers

    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    sweep = out / "multirun" / "2026-12-01" / "10-00-00"
    long_value = "data.path=/data/" + "x" * 70
    jobs = {0: ["optimizer.lr=0.003", "+recipe=tiny"], 1: ["optimizer.lr=0.01", "+recipe=tiny", long_value]}
    runs = {}
    for num, overrides in jobs.items():
        job = sweep / str(num)
        job.mkdir(parents=True)
        job_status.started(job, num, overrides, sweep)
        extra = ["logger.group=mine"] if num == 1 else []
        cfg = load([f"output_root={out}", "logger.mode=offline", "logger.tags=[paper]", *extra])
        loggers = build_loggers(cfg, job)
        experiment = loggers[1].experiment
        runs[num] = (experiment.id, experiment.group, list(experiment.tags), list(experiment.config["overrides"]))
        finish_loggers(loggers, failed=num == 1)
        assert wandb.run is None  # finished: the next job gets a run of its own
    assert runs[0][1:] == ("multirun/2026-12-01/10-00-00", ["paper", *jobs[0]], jobs[0])
    assert runs[1][1] == "mine" and runs[1][3] == jobs[1]
    assert runs[1][2] == ["paper", *jobs[1][:2], long_value[:61] + "..."]
    assert runs[0][0] != runs[1][0]

    for num, overrides in jobs.items():
        records = wandb_records(sweep / str(num))
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        [exit_record] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert run.run_id == runs[num][0] == (sweep / str(num) / layout.WANDB_ID).read_text().strip()
        assert (run.run_group, list(run.tags)) == runs[num][1:3]
        assert run.display_name == f"10-00-00/{num}"
        assert (config["overrides"], config["job_num"], config["sweep"]) == (overrides, num, "multirun/2026-12-01/10-00-00")
        assert exit_record.exit_code == num  # job 1 was finished as failed


# --- the launcher's part, with tests/fake_runner.py in place of training (fast) -----------------------

def test_the_launchers_job_list_is_hydras(tmp_path):
    """sweep.json's jobs (written before Hydra starts) are the overrides Hydra hands each job, for
    globs, quoted values and a `+key`."""
    from test_cli import run_cli

    sweep = tmp_path / "sweep"
    result = run_cli(tmp_path, "-m", "attention=glob([n*,sd*])", "seed=1,2", "+recipe=tiny", "prompts=['a b','c']",
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    jobs = json.loads((sweep / layout.SWEEP).read_text())["jobs"]
    assert len(jobs) == 4
    for n, job in enumerate(jobs):
        assert list(OmegaConf.load(sweep / str(n) / layout.HYDRA_OVERRIDES)) == job == raw_status(sweep / str(n))["overrides"]
        assert raw_status(sweep / str(n))["status"] == "done"
    assert [j[:2] for j in jobs] == [["attention=naive", "seed=1"], ["attention=naive", "seed=2"],
                                     ["attention=sdpa", "seed=1"], ["attention=sdpa", "seed=2"]]


def test_planned_jobs_match_hydras_basic_sweeper():
    """Against Hydra's own expansion (BasicSweeper.split_arguments), with sweeper params (they come
    first), a key given twice (the later wins, in the first one's place), ranges and hydra.* keys."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from omegaconf import open_dict

    from rizzrun.config import load
    from rizzrun.config.compose import parse_overrides
    from rizzrun.sweeps import planned_jobs

    overrides = ["seed=range(0,3)", "optimizer.lr=1e-3,2e-3", "+recipe=tiny", "seed=5,6", "hydra.sweep.dir=/x",
                 "name='a b'", "trainer.max_steps=7"]
    cfg = load(hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweeper.params = {"trainer.val_every": "2,4"}
    task = ["trainer.val_every=2,4", *(o for o in overrides if not o.startswith("hydra."))]
    [hydras] = BasicSweeper.split_arguments(parse_overrides(task), None)
    assert planned_jobs(cfg, overrides) == hydras
    assert len(hydras) == 8 and hydras[0] == ["trainer.val_every=2", "seed=5", "optimizer.lr=0.001", "+recipe=tiny",
                                              "name='a b'", "trainer.max_steps=7"]


def test_a_failed_job_without_checkpoint_restarts_in_its_folder_keeping_the_first_attempt(tmp_path):
    from fake_runner import FAIL_SEED
    from test_cli import run_cli

    sweep = tmp_path / "sweep"
    first = run_cli(tmp_path, "-m", f"seed=1,{FAIL_SEED}", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 1
    trace = (sweep / "1" / layout.ERROR).read_text()
    ran_once = (sweep / "0" / "fake_run.json").stat().st_mtime_ns
    again = run_cli(tmp_path, "-m", f"seed=1,{FAIL_SEED}", f"hydra.sweep.dir={sweep}", "resume=true")
    assert again.returncode == 1
    assert f"resuming sweep {sweep}: 2 jobs (1 done: skipped; 1 to continue; 0 never started)" in again.stderr
    assert (sweep / "0" / "fake_run.json").stat().st_mtime_ns == ran_once  # not run again
    assert (sweep / "1" / layout.ATTEMPTS / "1" / layout.ERROR).read_text() == trace  # the first attempt, kept
    assert (sweep / "1" / layout.ERROR).is_file() and raw_status(sweep / "1")["resumed_from"] is None
    assert json.loads((sweep / "1" / "fake_run.json").read_text())["resume"] is False  # started afresh


def test_ranks_a_cluster_started_follow_what_the_job_folder_says(tmp_path):
    """srun runs the task function on every rank: rank 0 plans (refuses, locks, moves an attempt
    aside), the others only follow: done -> skip, a valid checkpoint -> continue it, else fresh."""
    import torch

    from rizzrun.runner.checkpoint import FolderCheckpointIO

    job = tmp_path / "3"
    job.mkdir()
    assert job_status.follow_job(job) == job_status.JobPlan()
    model = torch.nn.Linear(2, 2)
    FolderCheckpointIO().save_checkpoint(
        {"global_step": 5, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
         "rizzrun": {"data_position": 5}}, job / layout.CHECKPOINTS / "step-000005")
    with RunLock(job):  # rank 0 holds the folder: a follower is not refused
        assert job_status.follow_job(job) == job_status.JobPlan(resume=str(job.absolute()))
    job_status.write_status(job, {"status": job_status.DONE, "job": 3, "overrides": ["seed=1"]})
    assert job_status.follow_job(job).skip


def test_validate_a_sweep_resume_looks_for_the_sweep_it_would_continue(tmp_path):
    done = subprocess.run([RIZZRUN, "validate", "-m", "+recipe=tiny", "seed=0,1", "resume=true"],
                          env={**os.environ, "RIZZRUN_OUTPUTS": str(tmp_path), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"error: resume=true: no sweep under {tmp_path}/multirun (looked for {tmp_path}/multirun/<date>/<time>/"
        "sweep.json); name the sweep's folder: hydra.sweep.dir=PATH resume=true, or drop resume=true for a new sweep"]
