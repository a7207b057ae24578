"""What the Trainer needs to know about the cluster that started the run's processes.

Under SLURM (hydra-submitit-launcher's `submitit_slurm`, or any `srun`) every rank is a task
that srun started, one per GPU (`--ntasks-per-node` = GPUs per node), and Lightning reads the
world from SLURM's variables (its `SLURMEnvironment`): SLURM_NTASKS (world size), SLURM_PROCID
(global rank), SLURM_LOCALID (local rank), SLURM_NODEID (node rank), the first host of
SLURM_NODELIST (MASTER_ADDR, unless set) and SLURM_JOB_ID (MASTER_PORT = 15000 + its last four
digits, unless set). Lightning's own SLURM requeue (on SIGUSR1, `auto_requeue`) is switched
off: requeue belongs to submitit (rizzrun.runner.control, SignalStop.hand_over).

Elsewhere (a laptop, `submitit_local`, a plain `torchrun`) nothing is added: Lightning starts
or finds the ranks itself. An interactive SLURM shell (job name `bash` or `interactive`) counts
as elsewhere, as Lightning has it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rizzrun.errors import InputError


def under_slurm() -> bool:
    """True when this process is a task started by srun (Lightning's own test)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def cluster_plugins(devices=None) -> list:
    """Trainer plugins for the cluster: `[SLURMEnvironment(auto_requeue=False)]` under SLURM, else [].
    `devices` (trainer.devices) is checked against the tasks SLURM started on each node."""
    if not under_slurm():
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if devices is not None:
        check_tasks_per_node(devices)
    return [SLURMEnvironment(auto_requeue=False)]


def check_tasks_per_node(devices) -> None:
    """InputError unless `devices` (an int, or a list of device ids, ListConfig included) equals the tasks SLURM started
    per node: srun starts every rank, so a mismatch would give ranks without a device, or devices
    without a rank (Lightning checks this only where it starts the ranks itself)."""
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE", "")
    count = len(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else devices
    if not (tasks.isdigit() and isinstance(count, int) and count > 0) or count == int(tasks):
        return  # "auto" / -1: Lightning takes the devices it finds
    raise InputError(f"trainer.devices={devices}: SLURM started {tasks} tasks per node (hydra.launcher.tasks_per_node, "
                     f"one per GPU); set trainer.devices={tasks}, or launch with hydra.launcher.gpus_per_node={count} "
                     "(hydra/launcher=slurm sets tasks_per_node to it)")


def cluster_num_nodes() -> int:
    """Trainer(num_nodes=...): the job's node count under SLURM (SLURM_NNODES), else 1. Under srun
    Lightning does not compare the two; DDP derives each rank's place from num_nodes."""
    if not under_slurm():
        return 1
    return int(os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES") or 1)
