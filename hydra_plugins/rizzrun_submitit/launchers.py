"""hydra-submitit-launcher's launchers, with one change: a sweep waits for every job.

The plugin collects its jobs' results in order and raises at the first job submitit could not
finish (a job process killed with SIGKILL, by the OOM killer, a lost node, a job cancelled with
`scancel`), so the sweep ends while its other jobs still run, unreported. Here every job is
waited for; a lost job is logged with submitit's reason and returned as a job without a result
(as rizzrun's task function returns a job that failed), so the sweep goes on, the end-of-sweep
table names it (its status.json says "running" with no live process: killed) and an Optuna search
tells it as a failed trial. `hydra/launcher=slurm` and `hydra/launcher=local`
(conf/hydra/launcher/) use these; everything else is the plugin's.
"""

import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin

log = logging.getLogger("rizzrun")


class _EveryJob:
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        import submitit

        real_map_array = submitit.AutoExecutor.map_array

        def map_array(executor, *args, **kwargs):  # the plugin's jobs, each waited for without raising
            return [_Settled(job) for job in real_map_array(executor, *args, **kwargs)]

        submitit.AutoExecutor.map_array = map_array
        try:
            settled = super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = real_map_array
        returns = []
        for num, (overrides, result) in enumerate(zip(job_overrides, settled), start=initial_job_idx):
            if isinstance(result, BaseException):
                log.error("job %s (%s) was lost: %s; the sweep goes on", num, " ".join(overrides),
                          str(result).strip().splitlines()[0])
                result = lost_job(list(overrides))
            returns.append(result)
        return returns


class _Settled:
    """A submitted job whose `results()` waits for it and hands back its failure instead of raising."""

    def __init__(self, job):
        self.job = job

    def results(self) -> list:
        try:
            return self.job.results()
        except Exception as e:  # noqa: BLE001 - submitit's UncompletedJobError / FailedJobError
            return [e]


def lost_job(overrides: list[str]) -> JobReturn:
    """The return of a job that produced none: completed without a value, like a failed job of a
    rizzrun sweep (the job's own status.json says what happened)."""
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED)


class LocalLauncher(_EveryJob, plugin.LocalLauncher):
    pass


class SlurmLauncher(_EveryJob, plugin.SlurmLauncher):
    pass
