"""The processes of one distributed run (DDP, FSDP): which one this is, and how ranks > 0 get
their job without Hydra. Torch-free: `rizzrun`'s entry point asks before anything is imported.

Two ways ranks start:
- Lightning starts them (one node, `trainer.devices=N`): its subprocess launcher executes the
  command line again with LOCAL_RANK=1..N-1. Under Hydra that would compose the config again,
  claim new run folders and, under `-m`, launch the whole sweep again. So rank 0 hands its job
  over in the environment the children inherit (`handing_over`: the run folder, and the
  checkpoint it resumes from), and `rizzrun` sends such a process straight to `run_handed_job`:
  it loads the resolved config rank 0 wrote into the run folder and joins the run.
- A cluster starts them (srun under SLURM, torchrun): every process runs the job itself, with
  its rank in the environment (SLURM_PROCID, RANK); `is_lead()` is false for all but rank 0.

Only the lead process (global rank 0) writes into the run folder: config, summary, metrics,
samples, checkpoints, the run lock. The others train and take part in every collective.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

HANDED_JOB = "RIZZRUN_RANK_JOB"
# What Lightning's subprocess launcher sets in the lead's own environment for its children;
# removed again after the run, so the next job of a sweep starts a fresh process group.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def launch_rank(environ=None) -> int:
    """This process's global rank as its launcher set it, before any process group exists:
    RANK (torchrun), SLURM_PROCID (a task srun started, in a job of several tasks; not in an
    interactive SLURM shell, job name `bash` or `interactive`, as Lightning's SLURMEnvironment has
    it), else LOCAL_RANK + NODE_RANK (Lightning's launcher; any non-zero value means "not the
    lead"); 0 for a lone process."""
    env = os.environ if environ is None else environ
    if env.get("RANK"):
        return int(env["RANK"])
    srun_task = env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    if srun_task and env.get("SLURM_PROCID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    return int(env.get("LOCAL_RANK") or 0) + int(env.get("NODE_RANK") or 0)


def is_lead(environ=None) -> bool:
    return launch_rank(environ) == 0


def handed_job(environ=None) -> dict | None:
    """The job rank 0 handed over ({"run_dir", "resume_from"}) when this process is a rank
    Lightning started; None otherwise."""
    env = os.environ if environ is None else environ
    text = env.get(HANDED_JOB)
    if not text or int(env.get("LOCAL_RANK") or 0) == 0:
        return None
    return json.loads(text)


@contextmanager
def handing_over(run_dir: Path, resume_from: Path | None):
    """While the lead trains: the job in the environment its children inherit. Afterwards the
    environment is as before (the launcher's variables included)."""
    saved = {key: os.environ.get(key) for key in (HANDED_JOB, *_LAUNCHER_ENV)}
    os.environ[HANDED_JOB] = json.dumps({"run_dir": str(run_dir),
                                         "resume_from": str(resume_from) if resume_from else None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_handed_job(job: dict) -> int:
    """A rank > 0 started by Lightning: train `job` alongside rank 0; the exit code. A run that
    rank 0 ends (signal, divergence: every rank agrees) exits 0 here, since Lightning kills the
    whole run when a child exits otherwise; rank 0 reports how the run ended."""
    import logging

    from omegaconf import OmegaConf

    from rizzrun import layout
    from rizzrun.errors import RunEnded

    logging.basicConfig(level=logging.WARNING, format=f"[rank {launch_rank()}] %(levelname)s %(name)s: %(message)s")
    run_dir = Path(job["run_dir"])
    cfg = OmegaConf.load(run_dir / layout.CONFIG)
    from rizzrun.runner.train import run_rank

    try:
        run_rank(cfg, run_dir, Path(job["resume_from"]) if job.get("resume_from") else None)
    except RunEnded:
        pass  # rank 0 says how the run ended
    return 0
