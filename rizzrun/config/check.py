"""Compose + validate what a command line would run: one job, or every job of a sweep.

Problems from composing (bad overrides) and from validating (the config built from the
overrides that did work) are reported together. In a sweep, a problem found in only some jobs
names them.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from rizzrun.config.compose import CONFIG_NAME, compose_report, sweep_jobs
from rizzrun.config.errors import ConfigError, show
from rizzrun.config.validate import problems as validation_problems


def check_job(overrides: Sequence[str], config_name: str = CONFIG_NAME) -> tuple[DictConfig | None, list[str]]:
    """(the composed config with its hydra node, or None; every problem of this job)."""
    cfg, found = compose_report(overrides, config_name=config_name)
    if cfg is not None:
        found += [p for p in validation_problems(cfg) if p not in found]
    return cfg, found


def check_jobs(overrides: Sequence[str], multirun: bool = False,
               config_name: str = CONFIG_NAME) -> list[DictConfig]:
    """The config of every job (`multirun`: every combination of the sweep); raises one
    ConfigError with every problem of every job."""
    overrides = list(overrides)
    jobs = sweep_jobs(overrides) if multirun else [overrides]
    found: dict[str, list[str]] = {}
    configs = []
    for job in jobs:
        cfg, job_problems = check_job(job, config_name)
        if multirun and cfg is not None and cfg.get("resume", False) is not False:
            job_problems.append(f"resume={show(cfg.resume)}: cannot be used with -m/--multirun, since a sweep starts "
                                "fresh jobs; resume one job at a time with resume=PATH")
        configs.append(cfg)
        label = " ".join(o for o in job if o not in overrides)
        for p in job_problems:
            found.setdefault(p, []).append(label)
    if found:
        raise ConfigError([p if len(labels) == len(jobs) else f"{p} [in jobs: {'; '.join(labels)}]"
                           for p, labels in found.items()])
    return configs
