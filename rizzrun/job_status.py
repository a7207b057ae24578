"""`<job>/status.json`: where each job of a sweep (or a single run) stands, and what a job about to
run in a folder should do with what an earlier attempt left there. Torch-free: the launcher, the
task function, the end-of-sweep table and `rizzrun compare` read it.

    {"status": "pending" | "running" | "done" | "failed",
     "job": 2, "overrides": ["optimizer.lr=0.01", ...], "sweep": "/abs/sweep/dir" (null: a single run),
     "started": ISO time, "ended": ISO time, "pid": 1234, "host": "node7",
     "val_loss": 4.2 (done: summary.json's), "resumed_from": "step-000010" (a continued attempt),
     "reason": "exception" | "diverged" | "stopped by SIGTERM" | "killed",      (failed only)
     "error": "RuntimeError: one line", "traceback": "/abs/job/error.txt"}     (failed only)

"pending" is written by the launcher for every job of a basic sweep before Hydra starts, so a sweep
killed half-way shows which jobs never ran. A process killed outright (SIGKILL, the OOM killer, a
lost node) leaves "running": `read_status` reports such a job as failed, reason "killed", once no
process holds the folder's run lock (rizzrun.run_dirs.RunLock; the OS drops a dead process's flock).

What a job does in a folder an earlier attempt used (`plan_job`; the same rule serves
`rizzrun -m ... resume=true` and a cluster requeue re-running a job in its own folder):
done -> skipped, its recorded summary returned; failed or killed -> continued from the folder's
newest valid checkpoint, or restarted in the same folder when it has none (the earlier attempt's
files moved to `attempts/N/`); a folder holding another job's status, or a run without a
status, is refused (a fresh run never writes into a folder holding a run).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from rizzrun import layout
from rizzrun.errors import RunFolderBusy
from rizzrun.files import write_atomic

log = logging.getLogger("rizzrun")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
KILLED = "killed"  # the reason of a job that left "running" behind and no live process
# What an attempt leaves in its folder, moved aside by a restart (`attempts/N/`); .hydra/ and
# Hydra's log stay (the new attempt rewrites them), status.json is rewritten.
ATTEMPT_FILES = (layout.CONFIG, layout.ENV, layout.TOKENIZER, layout.METRICS, layout.SAMPLES, layout.SUMMARY,
                 layout.ERROR, layout.EVAL, layout.CHECKPOINTS, layout.WANDB_ID, layout.CSV_DIR, "wandb")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def status_path(job_dir: Path) -> Path:
    return Path(job_dir) / layout.STATUS


def write_status(job_dir: Path, record: dict) -> None:
    write_atomic(status_path(job_dir), json.dumps(record, indent=2, default=str) + "\n")


def update_status(job_dir: Path, **fields) -> dict:
    """status.json with `fields` set (the other fields kept); the new record."""
    record = {**(_load(job_dir) or {}), **fields}
    write_status(job_dir, record)
    return record


def pending(job_dir: Path, num: int | None, overrides: list[str], sweep: Path | None) -> dict:
    record = {"status": PENDING, "job": num, "overrides": list(overrides),
              "sweep": str(sweep) if sweep is not None else None, "started": None, "ended": None}
    write_status(job_dir, record)
    return record


def started(job_dir: Path, num: int | None, overrides: list[str], sweep: Path | None,
            resumed_from: str | None = None) -> dict:
    """The job has begun (this process): status running, with its pid and host."""
    record = {"status": RUNNING, "job": num, "overrides": list(overrides),
              "sweep": str(sweep) if sweep is not None else None, "started": now(), "ended": None,
              "pid": os.getpid(), "host": socket.gethostname(), "resumed_from": resumed_from}
    write_status(job_dir, record)
    return record


def finished(job_dir: Path, summary: dict | None) -> dict:
    val_loss = summary.get("val_loss") if isinstance(summary, dict) else None
    return update_status(job_dir, status=DONE, ended=now(), val_loss=val_loss)


def failed(job_dir: Path, reason: str, error: BaseException | str) -> dict:
    """The job ended without finishing: `reason` (exception, diverged, stopped by SIGTERM, ...),
    the error's one-line message and where its traceback is."""
    from rizzrun.errors import InputError, RunEnded

    if isinstance(error, str | InputError | RunEnded):  # already one line meant for the user
        line = str(error)
    else:
        line = f"{type(error).__name__}: {error}"
    line = " ".join(line.split()) or "failed"
    return update_status(job_dir, status=FAILED, ended=now(), reason=reason, error=line,
                         traceback=str(Path(job_dir).absolute() / layout.ERROR), val_loss=_summary_val_loss(job_dir))


def _summary_val_loss(job_dir: Path) -> float | None:
    """The last validation loss the run's summary.json reports, when finite (a failed job's too)."""
    import math

    try:
        value = json.loads((Path(job_dir) / layout.SUMMARY).read_text(encoding="utf-8")).get("val_loss")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def failure_reason(error: BaseException) -> str:
    """How a job's exception ended it: "diverged", "stopped by SIGTERM" (a signal), or "exception"."""
    from rizzrun.errors import RunEnded

    if isinstance(error, RunEnded):
        return error.status
    return "exception"


def is_locked(job_dir: Path) -> bool:
    """Whether a live process holds `<job>/run.lock` (rizzrun.run_dirs.RunLock)."""
    import fcntl

    try:
        fd = os.open(Path(job_dir) / layout.LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock taken just now
    return False


def read_status(job_dir: Path) -> dict | None:
    """The job's status.json as a reader should see it (None when absent or unreadable): a
    "running" job whose run lock no process holds died without writing its end, and is reported
    as failed, reason "killed"."""
    record = _load(job_dir)
    if record is None:
        return None
    if record.get("status") == RUNNING and not is_locked(job_dir):
        record = {**record, "status": FAILED, "reason": KILLED,
                  "error": "the process died without writing its end (SIGKILL, out of memory, node lost)"}
    return record


def _load(job_dir: Path) -> dict | None:
    try:
        record = json.loads(status_path(job_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# --- a job about to run in a folder ---------------------------------------------------------------------

@dataclass
class JobPlan:
    """What a job does in its folder: `skip` (done already: `summary` is its recorded result),
    or run with `resume` (None: a fresh start; a path: continue that folder's newest valid
    checkpoint); `restart`: an earlier attempt without a checkpoint is to be moved aside first."""

    skip: bool = False
    summary: dict | None = None
    resume: str | None = None
    restart: bool = False


def plan_job(job_dir: Path, overrides: list[str]) -> JobPlan:
    """See the module docstring. Raises RunFolderBusy for a folder holding another job or a
    live process, before anything is written into it."""
    from rizzrun.run_dirs import holds_run, refuse_taken

    job_dir = Path(job_dir)
    record = _load(job_dir)
    if record is None or (record.get("status") == PENDING and not holds_run(job_dir)):
        refuse_taken(job_dir)  # a run that is no job of a sweep: never written into
        return JobPlan()  # a fresh folder, or one only the launcher's pending record is in
    if not same_job(record.get("overrides"), overrides):
        raise RunFolderBusy(f"{job_dir}: holds another job ({' '.join(record.get('overrides') or [])}), not this one "
                            f"({' '.join(overrides)}); give the sweep a new folder")
    if is_locked(job_dir):
        raise RunFolderBusy(f"{job_dir}: another rizzrun process (pid {record.get('pid', '?')}) is running this job; "
                            "wait for it to end")
    status = record.get("status")
    if status == DONE:
        return JobPlan(skip=True, summary=_recorded_summary(job_dir, record))
    from rizzrun.runner.checkpoint_files import latest_valid_checkpoint

    checkpoint, problems = latest_valid_checkpoint(job_dir)
    for problem in problems:
        log.warning("checkpoint skipped: %s", problem)
    if checkpoint is not None:
        return JobPlan(resume=str(job_dir.absolute()))
    return JobPlan(restart=holds_run(job_dir) or any((job_dir / name).exists() for name in ATTEMPT_FILES))


def follow_job(job_dir: Path) -> JobPlan:
    """The plan of a rank > 0 of a job a cluster started (srun runs the task function on every
    rank): rank 0 refuses, locks and moves files; the others only follow what the folder says:
    done -> skip, a valid checkpoint -> continue it, else start afresh."""
    from rizzrun.runner.checkpoint_files import latest_valid_checkpoint

    job_dir = Path(job_dir)
    record = _load(job_dir)
    if record is not None and record.get("status") == DONE:
        return JobPlan(skip=True)
    checkpoint, _ = latest_valid_checkpoint(job_dir)
    return JobPlan(resume=str(job_dir.absolute()) if checkpoint is not None else None)


def resume_value_for(job_dir: Path, overrides: list[str]) -> str | None:
    """The `resume` value a job about to run in `job_dir` (its own folder: the same `overrides`)
    runs with: the folder's path when an earlier attempt left a valid checkpoint there and did
    not finish, else None (fresh). A finished job's plan is to skip it: see `plan_job`."""
    return plan_job(job_dir, overrides).resume


def move_attempt_aside(job_dir: Path) -> Path | None:
    """Move an earlier attempt's files (ATTEMPT_FILES) to `<job>/attempts/N/` so the job can
    start afresh in its own folder without losing them; the folder they went to."""
    job_dir = Path(job_dir)
    present = [name for name in ATTEMPT_FILES if (job_dir / name).exists()]
    if not present:
        return None
    root = job_dir / layout.ATTEMPTS
    root.mkdir(exist_ok=True)
    n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    target = root / str(n)
    target.mkdir()
    for name in present:
        os.replace(job_dir / name, target / name)
    return target


def same_job(recorded, overrides) -> bool:
    """Whether two override lists describe one job (order within a job does not matter)."""
    return recorded is not None and sorted(map(str, recorded)) == sorted(map(str, overrides))


def _recorded_summary(job_dir: Path, record: dict) -> dict:
    try:
        summary = json.loads((job_dir / layout.SUMMARY).read_text(encoding="utf-8"))
        if isinstance(summary, dict):
            return summary
    except (OSError, ValueError):
        pass
    return {"run_dir": str(job_dir), "status": "completed", "val_loss": record.get("val_loss")}


# --- a sweep ------------------------------------------------------------------------------------------

def sweep_manifest(sweep_dir: Path) -> dict | None:
    """`<sweep>/sweep.json` (written by the launcher at sweep start), or None."""
    try:
        record = json.loads((Path(sweep_dir) / layout.SWEEP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_sweep_manifest(sweep_dir: Path, overrides: list[str], jobs: list[list[str]] | None,
                         subdir_is_num: bool) -> None:
    """sweep.json: the sweep's overrides and, for a sweep whose job list is known up front (Hydra's
    basic sweeper), every job's overrides, plus a pending status.json in each job's folder
    (`subdir_is_num`: hydra.sweep.subdir is the job number, so the folder is known)."""
    sweep_dir = Path(sweep_dir)
    record = {"created": now(), "overrides": list(overrides), "jobs": jobs}
    write_atomic(sweep_dir / layout.SWEEP, json.dumps(record, indent=2) + "\n")
    if jobs is not None and subdir_is_num:
        for num, job in enumerate(jobs):
            pending(sweep_dir / str(num), num, job, sweep_dir.absolute())


def job_rows(sweep_dir: Path) -> list[dict]:
    """Every job of a sweep as a reader sees it (`read_status`), by job number: the folders with a
    status.json, plus the manifest's jobs that have none (never started, status pending)."""
    sweep_dir = Path(sweep_dir)
    rows: dict[int | str, dict] = {}
    if sweep_dir.is_dir():
        for status_file in sweep_dir.glob(f"*/{layout.STATUS}"):
            record = read_status(status_file.parent)
            if record is not None:
                key = record.get("job") if isinstance(record.get("job"), int) else status_file.parent.name
                rows[key] = {**record, "dir": str(status_file.parent)}
    manifest = sweep_manifest(sweep_dir) or {}
    for num, job in enumerate(manifest.get("jobs") or []):
        rows.setdefault(num, {"status": PENDING, "job": num, "overrides": job, "dir": str(sweep_dir / str(num))})
    return [rows[k] for k in sorted(rows, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0,
                                                          str(k)))]
