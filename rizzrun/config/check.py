"""Compose + validate what a command line would run: one job, or every job of a sweep.

`check_jobs` (what `rizzrun validate` and a launch run; for an Optuna search, the jobs at the
edges of its space: rizzrun.config.search) also checks that this machine has the
accelerator each job asks for; `check_job` / `rizzrun.config.load` check the config alone.

Problems from composing (bad overrides) and from validating (the config built from the
overrides that did work) are reported together. In a sweep, a problem found in only some jobs
names them.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from rizzrun.config import devices
from rizzrun.config.compose import CONFIG_NAME, compose_report, first_sweep_job, sweep_jobs
from rizzrun.config.errors import ConfigError, show
from rizzrun.config.search import is_search, search_jobs
from rizzrun.config.validate import problems as validation_problems


def check_job(overrides: Sequence[str], config_name: str = CONFIG_NAME,
              here: bool = False) -> tuple[DictConfig | None, list[str]]:
    """(the composed config with its hydra node, or None; every problem of this job). `here`:
    the job is to run on this machine, which must have the accelerator it asks for."""
    cfg, found = compose_report(overrides, config_name=config_name)
    if cfg is not None:
        found += [p for p in validation_problems(cfg) if p not in found]
        if here:
            found += machine_problems(cfg)
    return cfg, found


def machine_problems(cfg: DictConfig) -> list[str]:
    """What this machine lacks for `cfg` (a GPU for trainer.accelerator=gpu), for a job Hydra's
    local launcher runs here; a job another launcher sends elsewhere is not checked."""
    launcher = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    launcher = launcher.get("hydra/launcher") if launcher is not None else None
    trainer = cfg.get("trainer")
    accelerator = OmegaConf.select(trainer, "accelerator", default=None, throw_on_resolution_failure=False) \
        if isinstance(trainer, DictConfig) else None
    return devices.accelerator_problems({"accelerator": accelerator}, launcher)


def check_jobs(overrides: Sequence[str], multirun: bool = False,
               config_name: str = CONFIG_NAME) -> list[DictConfig]:
    """The config of every job (`multirun`: every combination of the sweep); raises one
    ConfigError with every problem of every job."""
    overrides = list(overrides)
    jobs = [first_sweep_job(overrides) if multirun else overrides]
    checked = {tuple(jobs[0]): check_job(jobs[0], config_name, here=True)}
    if multirun:
        first_cfg = checked[tuple(jobs[0])][0]
        # An Optuna search: the jobs at the edges of its space, not a grid (rizzrun.config.search).
        jobs = search_jobs(overrides, first_cfg) if first_cfg is not None and is_search(first_cfg) \
            else sweep_jobs(overrides)
    found: dict[str, list[str]] = {}
    configs = []
    for job in jobs:
        cfg, job_problems = checked.pop(tuple(job), None) or check_job(job, config_name, here=True)
        if multirun and cfg is not None and cfg.get("resume", False) is not False:
            job_problems.append(f"resume={show(cfg.resume)}: a sweep's jobs are continued by the sweep, not one by one: "
                                "rizzrun -m <the sweep's overrides> resume=true (rizzrun.sweeps)")
        configs.append(cfg)
        label = " ".join(o for o in job if o not in overrides)
        for p in job_problems:
            found.setdefault(p, []).append(label)
    if found:
        raise ConfigError([p if len(labels) == len(jobs) else f"{p} [in jobs: {'; '.join(labels)}]"
                           for p, labels in found.items()])
    return configs
