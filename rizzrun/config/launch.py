"""`rizzrun [overrides...]`: check the config, then hand over to Hydra to run the job(s).

Before Hydra starts, every job's config is composed and validated (for `-m`, every
combination of the sweep), so bad input stops at once with rizzrun's message and exit code 2.
Then `hydra.main` runs as usual (run/sweep dirs, launchers, sweepers, `--cfg`, `--info`,
`.hydra/` in every run folder). The task function calls `rizzrun.runner.train.run(cfg, run_dir)`.
In a sweep, a failing job leaves `<job dir>/error.txt` and the sweep goes on; the failures are
named at the end and the exit code is 1.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rizzrun import layout, paths
from rizzrun.config import catalog
from rizzrun.config.check import check_jobs
from rizzrun.config.compose import CONFIG_NAME, compose, sweep_jobs
from rizzrun.config.errors import ConfigError
from rizzrun.config.resume import override_value, requests_resume, resumed_job, with_overrides
from rizzrun.errors import InputError, RunEnded, RunFolderBusy

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
    names the run folder."""
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
    if not resuming:
        cfg = check_jobs(args.overrides, multirun=bool(args.multirun), config_name=config_name)[0]
        if args.multirun:
            return claim_folder(cfg, args.overrides, argv, "hydra.sweep.dir")
        if cfg.get("resume", False) in (False, None):
            return claim_folder(cfg, args.overrides, argv, "hydra.run.dir")
    resumed = resumed_job(args.overrides, config_name)
    print(resumed.summary(), file=sys.stderr)
    return [*with_overrides(argv, args.overrides, resumed.overrides), f"hydra.run.dir={override_value(resumed.folder)}"]


def claim_folder(cfg: DictConfig, overrides: list[str], argv: list[str], key: str) -> list[str]:
    """Create the fresh run's (or sweep's) folder before Hydra writes into it, so that no run
    lands in another's folder (rizzrun.run_dirs.claim); argv with the folder pinned."""
    from omegaconf import OmegaConf

    from rizzrun.run_dirs import claim, holds_run

    named = any(o.lstrip("+").startswith(f"{key}=") for o in overrides)
    folder = Path(str(OmegaConf.select(cfg, key))).expanduser()
    if key == "hydra.sweep.dir" and named and folder.is_dir():
        taken = [job for job in folder.iterdir() if job.is_dir() and holds_run(job)]
        if taken:
            raise InputError(f"{key}={folder}: holds the runs of another sweep ({taken[0].name}, ...); "
                             "give a new folder")
    claimed = claim(folder, unique=not named, key=key)
    return [*argv, f"{key}={override_value(claimed)}"]


def _run_hydra(argv: list[str], multirun: bool) -> int:
    import hydra

    catalog.register_recipes()
    FailedJobsReport.failures = []
    saved = sys.argv
    sys.argv = [saved[0] if saved else "rizzrun", *argv]
    try:
        hydra.main(config_path=str(paths.conf_dir()), config_name=CONFIG_NAME, version_base="1.3")(task)()
    finally:
        sys.argv = saved
    if multirun and FailedJobsReport.failures:
        lines = [f"- {folder} ({overrides}): {reason}; traceback in {folder / ERROR_FILE}"
                 for folder, overrides, reason in FailedJobsReport.failures]
        fail(f"{len(lines)} job(s) of the sweep failed:\n" + "\n".join(lines))
        return EXIT_FAILED_JOBS
    return 0


def task(cfg: DictConfig) -> Any:
    """Hydra's task function: one job. `run_dir` is Hydra's output folder for this job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    error_file = run_dir / ERROR_FILE
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        from rizzrun.runner.train import run

        return run(cfg, run_dir)
    except RunFolderBusy as e:  # another process's folder: write nothing into it
        fail(e)
        raise SystemExit(EXIT_CONFIG) from None
    except Exception as e:
        error_file.write_text(traceback.format_exc(), encoding="utf-8")
        stopped = isinstance(e, RunEnded) and e.status.startswith("stopped")
        if not sweep or stopped:  # a signal stops the whole sweep, as it would one run
            if stopped:
                print(e, file=sys.stderr)  # not an error: how to continue
            elif isinstance(e, InputError | RunEnded):
                fail(e)
            else:
                raise  # a crash: Hydra prints the traceback
            raise SystemExit(e.exit_code if isinstance(e, RunEnded) else EXIT_CONFIG) from None
        overrides = " ".join(hydra_cfg.overrides.task)
        log.error("job %s (%s) failed: %s: %s; traceback in %s; the sweep goes on",
                  hydra_cfg.job.num, overrides, type(e).__name__, e, error_file)
        return None


class FailedJobsReport(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks): after a sweep, collect the job folders
    that hold an error.txt written during it. Works for any launcher sharing the filesystem."""

    failures: list[tuple[Path, str, str]] = []  # (job folder, its overrides, last line of error.txt)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        started = getattr(self, "_started", 0.0) - 1.0
        found = []
        for error_file in sorted(sweep_dir.rglob(ERROR_FILE)):
            if error_file.stat().st_mtime >= started:
                lines = error_file.read_text(encoding="utf-8").strip().splitlines()
                found.append((error_file.parent, _job_overrides(error_file.parent), lines[-1] if lines else "failed"))
        FailedJobsReport.failures = found


def _job_overrides(job_dir: Path) -> str:
    try:
        from omegaconf import OmegaConf

        return " ".join(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - only decorates the report
        return "?"
