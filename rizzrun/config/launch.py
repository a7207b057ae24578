"""`rizzrun [overrides...]`: check the config, then hand over to Hydra to run the job(s).

Before Hydra starts, every job's config is composed and validated (for `-m`, every
combination of the sweep), so bad input stops at once with rizzrun's message and exit code 2.
Then `hydra.main` runs as usual (run/sweep dirs, launchers, sweepers, `--cfg`, `--info`,
`.hydra/` in every run folder). The task function calls `rizzrun.runner.train.run(cfg, run_dir)`.

Sweeps (rizzrun.job_status, rizzrun.sweeps): every job keeps `<job dir>/status.json` (pending,
written for every job before Hydra starts; running; done; failed with why and the traceback's
path). A job that raises or diverges leaves `error.txt` and the sweep goes on; a table of every
job is printed when the sweep ends, and the exit code is 1 when a job did not finish.
`rizzrun -m ... resume=true` continues a sweep's folder: done jobs are skipped (their recorded
summary is returned), the others continue from their checkpoints.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rizzrun import job_status, layout, paths, sweeps
from rizzrun.config import catalog
from rizzrun.config.check import check_jobs
from rizzrun.config.compose import CONFIG_NAME, compose, sweep_jobs
from rizzrun.config.errors import ConfigError
from rizzrun.config.search import register_sweeper
from rizzrun.config.resume import override_value, requests_resume, resumed_job, resuming, with_overrides
from rizzrun.errors import InputError, RunEnded, RunFolderBusy
from rizzrun.ranks import is_lead

log = logging.getLogger("rizzrun")

EXIT_CONFIG = 2  # the config is wrong: nothing ran
EXIT_FAILED_JOBS = 1  # a sweep ran, some of its jobs failed
ERROR_FILE = layout.ERROR


def fail(error: Exception | str) -> None:
    print(f"error: {error}", file=sys.stderr)


def launch(argv: list[str]) -> int:
    """Run one job (or a sweep with -m) for `argv` (Hydra's command line); the exit code."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    try:
        argv = check(args, argv)
    except (ConfigError, InputError) as e:
        fail(e)
        return EXIT_CONFIG
    return _run_hydra(argv, multirun=bool(args.multirun))


def check(args, argv: list[str]) -> list[str]:
    """Validate what Hydra is about to run; returns argv. For resume, argv's overrides become the
    resumed job's (the run's own, then the user's: rizzrun.config.resume) and `hydra.run.dir`
    names the run folder. A fresh sweep's folder is claimed and given sweep.json and a pending
    status.json per job; a sweep resume pins the sweep folder it continues (`resume_sweep`)."""
    if args.help or args.hydra_help or args.info or args.shell_completion \
            or args.experimental_rerun or args.config_path or args.config_dir:
        return argv  # nothing runs, or configs come from elsewhere: Hydra's own checks apply
    config_name = args.config_name or CONFIG_NAME
    # A resumed job is composed and validated as it will run: on the run's own config.
    resuming = not args.multirun and requests_resume(args.overrides)
    if args.cfg:  # shown even if invalid, but it must compose (a sweep: its first job)
        if resuming:
            return with_overrides(argv, args.overrides, resumed_job(args.overrides, config_name).overrides)
        compose(sweep_jobs(args.overrides)[0] if args.multirun else args.overrides, config_name=config_name)
        return argv
    if args.multirun:
        if requests_resume(args.overrides):
            return resume_sweep(args.overrides, argv, config_name)
        cfg = check_jobs(args.overrides, multirun=True, config_name=config_name)[0]
        argv, sweep_dir = claim_folder(cfg, args.overrides, argv, "hydra.sweep.dir")
        job_status.write_sweep_manifest(sweep_dir, list(args.overrides), sweeps.planned_jobs(cfg, args.overrides),
                                        sweeps.subdir_is_num(cfg))
        return argv
    if not resuming:
        cfg = check_jobs(args.overrides, config_name=config_name)[0]
        if cfg.get("resume", False) in (False, None):
            return claim_folder(cfg, args.overrides, argv, "hydra.run.dir")[0]
    resumed = resumed_job(args.overrides, config_name)
    print(resumed.summary(), file=sys.stderr)
    return [*with_overrides(argv, args.overrides, resumed.overrides), f"hydra.run.dir={override_value(resumed.folder)}"]


def resume_sweep(overrides: list[str], argv: list[str], config_name: str) -> list[str]:
    """`rizzrun -m OVERRIDES resume=true|PATH`: the sweep folder to continue (rizzrun.sweeps), checked
    to hold this command's job list; argv without `resume=` and with the folder pinned. Each job
    then decides for itself what to do in its folder (rizzrun.job_status.plan_job)."""
    from rizzrun.config.compose import parse_overrides

    resumes = [o for o in parse_overrides(overrides) if o.key_or_group == "resume" and not o.is_delete()]
    value = resumes[-1].value()
    sweep_overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0].strip() != "resume"]
    cfg = check_jobs(sweep_overrides, multirun=True, config_name=config_name)[0]
    jobs = sweeps.planned_jobs(cfg, sweep_overrides)
    if jobs is None:
        raise InputError(f"resume={value}: with -m, only a sweep whose jobs are known up front (Hydra's basic sweeper) "
                         "can be resumed; an optimising sweeper continues its study from its own storage")
    named = any(o.lstrip("+").startswith("hydra.sweep.dir=") for o in sweep_overrides)
    named_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))).expanduser() if named else None
    folder = sweeps.folder_to_resume(cfg, jobs, value if value is True else str(value), named_dir)
    rows = job_status.job_rows(folder)
    counts = {s: sum(r.get("status") == s for r in rows) for s in (job_status.DONE, job_status.FAILED,
                                                                   job_status.PENDING, job_status.RUNNING)}
    print(f"resuming sweep {folder}: {len(jobs)} jobs ({counts[job_status.DONE]} done: skipped; "
          f"{counts[job_status.FAILED] + counts[job_status.RUNNING]} to continue; {counts[job_status.PENDING]} "
          "never started)", file=sys.stderr)
    kept = [o for o in argv if o not in overrides or o in sweep_overrides]
    return [*kept, f"hydra.sweep.dir={override_value(folder)}"]


def claim_folder(cfg: DictConfig, overrides: list[str], argv: list[str], key: str) -> tuple[list[str], Path]:
    """Create the fresh run's (or sweep's) folder before Hydra writes into it, so that no run
    lands in another's folder (rizzrun.run_dirs.claim); (argv with the folder pinned, the folder)."""
    from rizzrun.run_dirs import claim, holds_run

    named = any(o.lstrip("+").startswith(f"{key}=") for o in overrides)
    folder = Path(str(OmegaConf.select(cfg, key))).expanduser()
    if key == "hydra.sweep.dir" and named and folder.is_dir():
        taken = [job for job in folder.iterdir() if job.is_dir() and holds_run(job)]
        if taken:
            raise InputError(f"{key}={folder}: holds the runs of another sweep ({taken[0].name}, ...); "
                             "give a new folder, or continue that sweep with resume=true")
    claimed = claim(folder, unique=not named, key=key)
    return [*argv, f"{key}={override_value(claimed)}"], claimed


def _run_hydra(argv: list[str], multirun: bool) -> int:
    import hydra

    catalog.register_recipes()
    register_sweeper()  # hydra/sweeper=optuna for --help/--info too, which skip the checks
    register_launchers()
    FailedJobsReport.sweep_dir = None
    saved = sys.argv
    sys.argv = [saved[0] if saved else "rizzrun", *argv]
    try:
        hydra.main(config_path=str(paths.conf_dir()), config_name=CONFIG_NAME, version_base="1.3")(task)()
    finally:  # also when a signal stopped the sweep: the table says which jobs never ran
        sys.argv = saved
        unfinished = FailedJobsReport.report() if multirun else False
    return EXIT_FAILED_JOBS if unfinished else 0


def register_launchers() -> None:
    """`hydra/launcher=slurm|local` name rizzrun's launcher classes (hydra_plugins/rizzrun_submitit);
    registered here because Hydra's plugin scan cannot list hydra_plugins/ under `pip install -e`."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.rizzrun_submitit.launchers import LocalLauncher, SlurmLauncher

    for launcher in (LocalLauncher, SlurmLauncher):
        Plugins.instance().register(launcher)


def task(cfg: DictConfig) -> Any:
    """Hydra's task function: one job. `run_dir` is Hydra's output folder for this job; status.json
    says where it stands. In a sweep, a job its folder records as done is skipped (its recorded
    summary is returned, so sweepers see every job's result), and an unfinished one continues
    from its checkpoint (rizzrun.job_status.plan_job: a resumed sweep, or a cluster requeue)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    error_file = run_dir / ERROR_FILE
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    num = int(hydra_cfg.job.num) if sweep else None
    sweep_dir = Path(str(hydra_cfg.sweep.dir)).absolute() if sweep else None
    try:
        if not sweep:
            plan = job_status.JobPlan()
        else:
            plan = job_status.plan_job(run_dir, overrides) if is_lead() else job_status.follow_job(run_dir)
    except RunFolderBusy as e:  # another job's or process's folder: write nothing into it
        fail(e)
        raise SystemExit(EXIT_CONFIG) from None
    if plan.skip:
        log.info("job %s (%s): done already (%s), skipped", num, " ".join(overrides), run_dir / layout.STATUS)
        return plan.summary
    if plan.restart and is_lead():  # the other ranks of a cluster job run the same plan
        moved = job_status.move_attempt_aside(run_dir)
        log.warning("job %s: the earlier attempt saved no checkpoint; it starts again (its files: %s)", num, moved)
    if sweep:
        with open_dict(cfg):
            cfg.resume = plan.resume if plan.resume is not None else False
        if plan.resume is not None:
            log.info("job %s (%s): continuing %s", num, " ".join(overrides), run_dir)
    writes = _writes_status(run_dir, cfg)
    if writes:
        job_status.started(run_dir, num, overrides, sweep_dir, resumed_from=plan.resume)
    try:
        from rizzrun.runner.train import run

        summary = run(cfg, run_dir)
    except RunFolderBusy as e:  # another process's folder: write nothing (more) into it
        fail(e)
        raise SystemExit(EXIT_CONFIG) from None
    except BaseException as e:
        if isinstance(e, Exception):
            error_file.write_text(traceback.format_exc(), encoding="utf-8")
        if writes:
            job_status.failed(run_dir, job_status.failure_reason(e), e)
        if not isinstance(e, Exception):
            raise
        stopped = isinstance(e, RunEnded) and e.status.startswith("stopped")
        if not sweep or stopped:  # a signal stops the whole sweep, as it would one run
            if stopped:
                print(e, file=sys.stderr)  # not an error: how to continue
            elif isinstance(e, InputError | RunEnded):
                fail(e)
            else:
                raise  # a crash: Hydra prints the traceback
            raise SystemExit(e.exit_code if isinstance(e, RunEnded) else EXIT_CONFIG) from None
        log.error("job %s (%s) failed: %s: %s; traceback in %s; the sweep goes on",
                  num, " ".join(overrides), type(e).__name__, e, error_file)
        return None
    if writes:
        job_status.finished(run_dir, summary)
    return summary


def _writes_status(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether this process keeps the job's status.json: not when the runner is about to refuse the
    folder (a fresh run into a folder holding a run, a folder another process holds), and only on
    the first process of a multi-process job (the others run the same job)."""
    from rizzrun.run_dirs import holds_run

    if not is_lead():
        return False
    return not job_status.is_locked(run_dir) and (resuming(cfg) or not holds_run(run_dir))


class FailedJobsReport(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks): remembers the sweep's folder when a
    sweep starts, so that when it ends (or is stopped) `report` prints every job's status
    (rizzrun.sweeps.table). Reads only the job folders: works for any launcher sharing the
    filesystem."""

    sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        FailedJobsReport.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()

    @staticmethod
    def report() -> bool:
        """Print the table of the sweep that ran (to stderr); whether a job did not finish."""
        sweep_dir = FailedJobsReport.sweep_dir
        if sweep_dir is None:
            return False
        rows = job_status.job_rows(sweep_dir)
        if not rows:
            return False
        print(sweeps.table(sweep_dir, rows), file=sys.stderr)
        if sweeps.unfinished(rows):
            print(f"continue the sweep with: rizzrun -m <the same overrides> resume=true "
                  f"(or hydra.sweep.dir={sweep_dir} resume=true)", file=sys.stderr)
            return True
        return False
