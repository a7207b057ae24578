"""Sweeps through hydra-submitit-launcher: a real `submitit_local` sweep, the sbatch script of
`hydra/launcher=slurm` (written by the plugin and submitit themselves, handed to a stand-in
`sbatch`), the SLURM world as Lightning sees it (rizzrun.runner.cluster), and preemption with one
owner: SIGUSR2 mid-run saves at the step boundary, then the handler that was there before the run
(submitit's) gets the signal and requeues the job.

Real processes and real signals; tiny model, few steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rizzrun.errors import InputError
from rizzrun.layout import LATEST, LOCK, METRICS, SUMMARY
from rizzrun.runner.metrics import read_metrics
from test_run_lifecycle import REPO, RIZZRUN, TINY, wait_for


@pytest.fixture
def cache(shared_cache):
    return shared_cache


@pytest.fixture(autouse=True)
def process_state_restored():
    """What a Trainer built in this process under a faked SLURM world leaves behind for the tests
    after it: MASTER_ADDR/MASTER_PORT in os.environ (SLURMEnvironment sets them) and Lightning's
    process-wide rank (rank_zero_only.rank, which silences every rank-zero-only logger)."""
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pytorch_rank_zero
    from lightning_utilities.core import rank_zero as utilities_rank_zero

    holders = [m.rank_zero_only for m in (fabric_rank_zero, pytorch_rank_zero, utilities_rank_zero)]
    ranks = [getattr(h, "rank", None) for h in holders]
    environ = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(environ)
    for holder, rank in zip(holders, ranks):
        if rank is not None:
            holder.rank = rank


def env(cache: Path, **extra: str) -> dict:
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "PYTHONPATH": str(REPO), "WANDB_SILENT": "true", **extra}


def rizzrun(cache: Path, *argv: str, timeout: int = 240, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([RIZZRUN, *argv], env=env(cache, **extra), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def trained_steps(run_dir: Path) -> list[int]:
    rows = read_metrics(run_dir / METRICS) if (run_dir / METRICS).exists() else []
    return [r["step"] for r in rows if "train/loss" in r]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / SUMMARY).read_text())


# --- submitit_local: a real sweep ------------------------------------------------------------------

def test_a_submitit_local_sweep_runs_each_job_in_its_own_folder(tmp_path, cache):
    sweep = tmp_path / "sweep"
    done = rizzrun(cache, "-m", "+recipe=tiny", "seed=0,1", "hydra/launcher=submitit_local", *TINY,
                   "trainer.max_steps=6", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [sweep / "0", sweep / "1"]
    for job in jobs:
        assert summary(job)["status"] == "completed" and summary(job)["step"] == 6
        assert trained_steps(job) == [3, 6]
    assert summary(jobs[0])["train_loss"] != summary(jobs[1])["train_loss"]  # two seeds, two runs
    # submitit's own files (pickles, each job's stdout/stderr) stay inside the sweep folder
    logs = sorted((sweep / ".submitit").glob("*/*_0_log.err"))  # where the progress lines go
    assert len(logs) == 2
    assert all("step 6/6" in log.read_text() for log in logs)


def test_a_job_killed_outright_does_not_end_the_sweep_and_the_table_says_killed(tmp_path, cache):
    """Each job of `hydra/launcher=local` is its own process: SIGKILL one (as the OOM killer
    would) and the sweep still waits for the other, which finishes; the table names the lost job."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([RIZZRUN, "-m", "+recipe=tiny", "seed=0,1", "hydra/launcher=local", *TINY,
                             "trainer.max_steps=40", "trainer.checkpoint_every=1000", f"hydra.sweep.dir={sweep}"],
                            env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    wait_for(lambda: len(trained_steps(sweep / "0")) >= 1, proc)
    os.kill(int((sweep / "0" / LOCK).read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    assert summary(sweep / "1")["status"] == "completed" and summary(sweep / "1")["step"] == 40
    lines = err[err.index(f"sweep {sweep}: "):].splitlines()
    assert lines[0] == f"sweep {sweep}: 2 jobs, 1 done, 1 failed"
    assert lines[2].split()[:4] == ["0", "failed", "seed=0", "-"] and "killed" in lines[2]
    assert lines[3].split()[:3] == ["1", "done", "seed=1"]


def test_launcher_choices_and_keys_are_validated_before_anything_runs(cache):
    ok = rizzrun(cache, "validate", "-m", "+recipe=tiny", "seed=0,1", "hydra/launcher=submitit_slurm",
                 "hydra.launcher.partition=gpu", timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok (2 jobs)"), ok.stderr
    bad = rizzrun(cache, "validate", "-m", "hydra/launcher=slrum", "hydra.launcher.partiton=gpu", timeout=60)
    assert bad.returncode == 2
    assert "hydra/launcher=slrum: no option 'slrum' in group 'hydra/launcher'; did you mean 'slurm'?" in bad.stderr
    typo = rizzrun(cache, "validate", "-m", "hydra/launcher=slurm", "hydra.launcher.partiton=gpu", timeout=60)
    assert typo.returncode == 2 and "did you mean 'hydra.launcher.partition'?" in typo.stderr


# --- submitit_slurm: the submission script ---------------------------------------------------------

# A stand-in for SLURM's `sbatch` (beside an `srun` that submitit only looks for): keeps the script it is given and reports every job of the array
# finished (the result file submitit waits for), so the launcher's own code path runs to its end.
FAKE_SBATCH = """\
#!{python}
import pickle, re, shutil, sys
from pathlib import Path
from hydra.core.utils import JobReturn, JobStatus

script = Path(sys.argv[1])
shutil.copy(script, Path({record!r}) / "submission.sh")
text = script.read_text()
last = int(re.search(r"^#SBATCH --array=0-(\\d+)", text, re.M).group(1))
output = re.search(r"^#SBATCH --output=(\\S+)", text, re.M).group(1)
ranks = int(re.search(r"^#SBATCH --nodes=(\\d+)", text, re.M).group(1)) * int(
    re.search(r"^#SBATCH --ntasks-per-node=(\\d+)", text, re.M).group(1))
returned = JobReturn()
returned.status = JobStatus.COMPLETED
for job in range(last + 1):
    for rank in range(ranks):  # a job is done when each of its tasks left its result
        name = output.replace("%A", "4242").replace("%a", str(job)).replace("_0_log.out", f"_{{rank}}_result.pkl")
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(pickle.dumps(("success", returned)))
print("Submitted batch job 4242")
"""


def test_the_slurm_launcher_writes_the_sbatch_script_for_the_cluster(tmp_path, cache):
    record, fake_bin = tmp_path / "record", tmp_path / "bin"
    record.mkdir()
    fake_bin.mkdir()
    sbatch = fake_bin / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(python=sys.executable, record=str(record)))
    sbatch.chmod(0o755)
    srun = fake_bin / "srun"  # submitit looks for it before it submits; never called here
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    sweep = tmp_path / "sweep"
    done = rizzrun(cache, "-m", "+recipe=tiny", "seed=0,1", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=300",
                   "hydra.launcher.signal_delay_s=180", f"hydra.sweep.dir={sweep}",
                   timeout=60, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    # The stand-in cluster runs nothing: the sweep ends with both jobs never started, and says so.
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"sweep {sweep}: 2 jobs, 2 pending" in done.stderr
    script = (record / "submission.sh").read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?$", script, re.M))
    jobs = f"{sweep}/.submitit/%A_%a"
    assert flags == {
        "array": "0-1%2",  # one array task per job of the sweep
        "job-name": "rizzrun",
        "partition": "gpu",
        "nodes": "2",
        "ntasks-per-node": "4",  # one task per GPU
        "gpus-per-node": "4",
        "time": "300",
        "signal": "USR2@180",  # submitit's preemption signal, 180 s before the limit
        "requeue": "",
        "open-mode": "append",  # a requeued job appends to its logs
        "output": f"{jobs}/%A_%a_0_log.out",
        "error": f"{jobs}/%A_%a_0_log.err",
        "wckey": "submitit",
    }
    command = script.strip().splitlines()[-1]
    assert re.fullmatch(f"srun --unbuffered --output {jobs}/%A_%a_%t_log.out --error {jobs}/%A_%a_%t_log.err "
                        rf"{Path(sys.executable).parent}/python\S* -u -m submitit.core._submit {sweep}/.submitit/%j",
                        command), command
    assert "export SUBMITIT_EXECUTOR=slurm" in script
    # each job's submission: how often it may be requeued after a time limit, and the limit
    from submitit.core.utils import DelayedSubmission

    for task in (0, 1):
        job = DelayedSubmission.load(sweep / ".submitit" / f"4242_{task}" / f"4242_{task}_submitted.pkl")
        assert (job._timeout_min, job._timeout_countdown) == (300, 3)
        assert job.args[0][-1] == f"seed={task}" and job.args[1:3] == ("hydra.sweep.dir", task)


# --- the SLURM world, as Lightning sees it -----------------------------------------------------------

def slurm_env(monkeypatch, **values) -> None:
    """This process as one task of a SLURM job: only `values` of the cluster's variables are set."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "SUBMITIT_")) or name in (
                "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


# Two nodes, two GPUs (tasks) each; this process is the second task of the second node.
TASK_3_OF_4 = dict(SLURM_JOB_ID=123456, SLURM_JOB_NAME="rizzrun", SLURM_NTASKS=4, SLURM_NTASKS_PER_NODE=2,
                   SLURM_NNODES=2, SLURM_PROCID=3, SLURM_LOCALID=1, SLURM_NODEID=1,
                   SLURM_NODELIST="gpu-node[07-08]")


def trainer(**kwargs):
    import lightning as L

    return L.Trainer(accelerator="cpu", strategy="ddp", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_under_slurm_lightning_sees_the_job_s_world_and_leaves_requeue_to_submitit(monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from rizzrun.ranks import launch_rank
    from rizzrun.runner.cluster import cluster_num_nodes, cluster_plugins

    slurm_env(monkeypatch, **TASK_3_OF_4)
    assert launch_rank() == 3  # known before a Trainer exists
    plugins = cluster_plugins()
    t = trainer(devices=2, num_nodes=cluster_num_nodes(), plugins=plugins)
    environment = t.strategy.cluster_environment
    assert len(plugins) == 1 and environment is plugins[0] and isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue is False
    assert environment.creates_processes_externally  # srun started the ranks: Lightning starts none
    assert (t.global_rank, t.world_size, t.local_rank, t.node_rank, t.num_nodes) == (3, 4, 1, 1, 2)
    assert environment.main_address == "gpu-node07"  # the first host of the job
    assert environment.main_port == 15000 + 3456  # the job id's last four digits, on every rank
    # Lightning's own requeue handler is not installed (it would requeue on SIGUSR1 by itself)
    before = signal.getsignal(signal.SIGUSR1)
    t._signal_connector.register_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGUSR1) is before
    finally:
        t._signal_connector.teardown()
    # what Lightning would do without rizzrun's plugin: requeue on its own
    assert trainer(devices=2, num_nodes=2).strategy.cluster_environment.auto_requeue is True
    # devices per node that differ from the tasks srun started are refused before anything starts
    from omegaconf import OmegaConf

    assert cluster_plugins(2) and cluster_plugins([0, 1]) and cluster_plugins(OmegaConf.create([0, 1]))
    for devices in (1, [0], OmegaConf.create([0])):
        with pytest.raises(InputError, match=r"SLURM started 2 tasks per node .*; set trainer.devices=2,"):
            cluster_plugins(devices)


def test_outside_slurm_or_in_an_interactive_slurm_shell_nothing_is_added(monkeypatch):
    from rizzrun.ranks import launch_rank
    from rizzrun.runner.cluster import cluster_num_nodes, cluster_plugins

    slurm_env(monkeypatch)
    assert (cluster_plugins(), cluster_num_nodes(), launch_rank()) == ([], 1, 0)
    slurm_env(monkeypatch, **{**TASK_3_OF_4, "SLURM_JOB_NAME": "interactive"})
    assert (cluster_plugins(), cluster_num_nodes(), launch_rank()) == ([], 1, 0)


# --- preemption: SIGUSR2 saves at the step boundary, then submitit's handler requeues -------------

# Runs rizzrun in a process where a SIGUSR2 handler was installed first, as submitit installs its
# own before it calls the job: it records what the run folder holds when it is called, then exits
# with submitit's local "requeue me" status.
STAND_IN = """\
import json, signal, sys
from pathlib import Path
run_dir, record = Path(sys.argv[1]), Path(sys.argv[2])

def requeue(signum, frame):
    record.write_text(json.dumps({{"signal": signum, "summary": json.loads((run_dir / {summary!r}).read_text()),
                                  "latest": (run_dir / {latest!r}).read_text().strip()}}))
    sys.exit(144)

signal.signal(signal.SIGUSR2, requeue)
from rizzrun.cli import main
sys.argv = ["rizzrun", *sys.argv[3:]]
main()
"""


def test_sigusr2_saves_at_the_step_boundary_then_the_earlier_handler_gets_it(tmp_path, cache):
    run_dir, record = tmp_path / "run", tmp_path / "handler.json"
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN.format(summary=SUMMARY, latest=str(LATEST)))
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(record), *TINY, "trainer.max_steps=400",
                             f"hydra.run.dir={run_dir}"], env=env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for(lambda: len(trained_steps(run_dir)) >= 1, proc)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 144, err[-3000:]  # the earlier handler decided how the process ends
    seen = json.loads(record.read_text())
    stopped_at = seen["summary"]["step"]
    assert seen["signal"] == signal.SIGUSR2
    # when it was called, the run had ended: checkpoint of the step it stopped at, summary written
    assert seen["summary"]["status"] == "stopped by SIGUSR2"
    assert seen["summary"]["reason"] == (f"stopped by SIGUSR2 at step {stopped_at}; checkpoint "
                                         f"step-{stopped_at:06d}; continue with: rizzrun resume={run_dir}")
    assert seen["latest"] == f"step-{stopped_at:06d}"
    assert max(trained_steps(run_dir)) <= stopped_at < 400
    assert summary(run_dir) == seen["summary"]  # nothing was written after the hand-over


def test_a_signal_during_the_wind_down_waits_for_the_hand_over(monkeypatch):
    """After the run stopped, SignalStop.restore() puts the handlers back, except those of an
    earlier owner (submitit's), which keep recording until hand_over: the owner is called once
    per signal, after the run's end, however often the signal came; SIG_DFL and Python's SIGINT
    handler are put back at once and never called."""
    from rizzrun.runner.control import SignalStop, Stopped

    calls = []
    owner = lambda signum, frame: calls.append(signum)  # noqa: E731 - submitit's handler's stand-in
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    for sig, handler in ((signal.SIGUSR2, owner), (signal.SIGTERM, signal.SIG_DFL),
                         (signal.SIGINT, signal.default_int_handler)):
        signal.signal(sig, handler)
    stopper = SignalStop(checkpointer=None, resume_hint="resume")
    try:
        stopper.install()
        stopper.training = True
        os.kill(os.getpid(), signal.SIGUSR2)  # recorded; the run would stop at the next boundary
        stopper.restore()  # train.py's finally: loggers and summary.json come next
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        os.kill(os.getpid(), signal.SIGUSR2)  # again, while the run winds down
        assert calls == []
        stopper.hand_over(Stopped("stopped by SIGUSR2", signal.SIGUSR2))
        assert calls == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is owner
        # a run that ended otherwise (diverged) puts the handler back and calls nothing
        calls.clear()
        again = SignalStop(checkpointer=None, resume_hint="resume")
        again.install()
        again.training = True
        os.kill(os.getpid(), signal.SIGUSR2)
        again.restore()
        again.hand_over(RuntimeError("diverged"))
        assert calls == [] and signal.getsignal(signal.SIGUSR2) is owner
    finally:
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_job_requeued_by_submitit_on_sigusr2_resumes_from_its_checkpoint(tmp_path, cache):
    """submitit's own handler, under its local executor: the job stops at a step boundary with a
    checkpoint, submitit requeues it (exit 144, started again with the same arguments) and the new
    attempt continues the run in the same folder. The resume of a job that finds its own earlier
    attempt in its folder is the sweep's rule (rizzrun/job_status.py)."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    proc = subprocess.Popen([RIZZRUN, "-m", "+recipe=tiny", "seed=0", "hydra/launcher=local", *TINY,
                             "trainer.max_steps=100", f"hydra.sweep.dir={sweep}"], env=env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for(lambda: len(trained_steps(job)) >= 1, proc)
    job_pid = int((job / LOCK).read_text().split()[0])  # the job's process: it holds the run's lock
    os.kill(job_pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    log = "".join(p.read_text() for p in sorted((sweep / ".submitit").glob("*/*_0_log.out")))  # submitit's lines
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log, log[-3000:]
    final = summary(job)
    assert final["status"] == "completed" and final["step"] == 100
    [resumed] = final["resumed"]
    assert resumed["previous_segment_ended"] == "stopped by SIGUSR2"
    assert resumed["from_checkpoint"] == f"step-{resumed['step']:06d}" and 0 < resumed["step"] < 100
    steps = trained_steps(job)
    assert steps == list(range(3, 100, 3))  # every logged step once: continued, not restarted


# --- several ranks stop at the same step -----------------------------------------------------------

# One rank of a 2-process CPU (gloo) DDP world, started the way srun starts ranks (Lightning finds
# them through LOCAL_RANK/WORLD_SIZE and starts none). Rank 1 alone gets SIGUSR2; at the step
# boundary both ranks must save and stop, for the signal rank 1 got.
RANK = """\
import json, os, signal, sys
import lightning as L
from rizzrun.runner.control import SignalStop, Stopped

class Saves:  # the checkpointer's side of the contract: where SignalStop asks for a save
    last_saved_step, last_saved_name, asked = None, None, 0
    def save_after_validation_or_now(self, trainer):
        self.asked += 1
        self.last_saved_step, self.last_saved_name = trainer.global_step, "step-000000"

class Module(L.LightningModule):
    def micro_batches_in_step(self):
        return 0

trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.strategy.setup_environment()  # joins the process group
module, saves = Module(), Saves()
stopper = SignalStop(saves, resume_hint="resume")
stopper.install()
stopper.training = True
seen = {"rank": trainer.global_rank, "world": trainer.world_size}
stopper.on_train_batch_end(trainer, module, None, None, 0)  # a boundary before any signal
seen["saves_before"] = saves.asked
if trainer.global_rank == 1:
    os.kill(os.getpid(), signal.SIGUSR2)
stopper.on_train_batch_end(trainer, module, None, None, 0)
seen["saves"], seen["signum"] = saves.asked, stopper.signum
try:
    stopper.on_train_batch_start(trainer, module, None, 0)
except Stopped as e:
    seen["stopped"] = str(e)
stopper.restore()
print(json.dumps(seen))
"""


def test_a_signal_that_reaches_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    import socket

    with socket.socket() as free:  # a port no other test's process group holds
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    world = {**env(tmp_path), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
             "NODE_RANK": "0"}
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_PROCID"):
        world.pop(name, None)
    ranks = [subprocess.Popen([sys.executable, str(script)], env={**world, "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    seen = []
    for proc in ranks:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        seen.append(json.loads(out.strip().splitlines()[-1]))
    for rank, s in enumerate(seen):
        assert (s["rank"], s["world"], s["saves_before"], s["saves"]) == (rank, 2, 0, 1)
        assert s["signum"] == signal.SIGUSR2
        assert s["stopped"] == "stopped by SIGUSR2 at step 0; checkpoint step-000000; resume"
