"""The jobs to check before an Optuna search (`hydra/sweeper=optuna`, hydra_plugins/rizzrun_optuna) starts.

A search's jobs are not a grid: Optuna picks each trial's values as the search goes. So the
search space is parsed with the sweeper's own parser (one error line per bad entry), the
sweeper's settings are checked, and the jobs composed are the edges of the space: every
dimension at its first value (the low end, or the first choice), then each dimension at each of
its other edges (the high end, every other choice) with the rest at their first values.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from rizzrun.config import catalog
from rizzrun.config.errors import ConfigError

SWEEPER_TARGET = "hydra_plugins.rizzrun_optuna.sweeper.OptunaSweeper"


def store_sweeper_config() -> None:
    """Make `hydra/sweeper=optuna` compose in this process, also where Hydra's plugin scan cannot
    list hydra_plugins/: under `pip install -e`, setuptools serves that namespace through an import
    hook which pkgutil cannot iterate, so the scan finds nothing there. Only the config (Hydra's
    ConfigStore); composing needs no plugin instance, and the plugin scan costs a fast `validate`
    more than its whole budget."""
    import hydra_plugins.rizzrun_optuna.config  # noqa: F401 - stores hydra/sweeper/optuna in the ConfigStore


def register_sweeper() -> None:
    """Before Hydra runs a job: the config, and the sweeper class among Hydra's plugins (the scan
    misses it under an editable install)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.rizzrun_optuna.sweeper import OptunaSweeper

    store_sweeper_config()
    Plugins.instance().register(OptunaSweeper)


def is_search(cfg: DictConfig) -> bool:
    """Whether `cfg` (composed with its hydra node) runs rizzrun's Optuna sweeper."""
    return OmegaConf.select(cfg, "hydra.sweeper._target_", default=None) == SWEEPER_TARGET


def search_jobs(overrides: Sequence[str], cfg: DictConfig) -> list[list[str]]:
    """The override lists of the jobs at the edges of the search `cfg` (composed from
    `overrides`, hydra node included) runs; ConfigError naming every bad setting or entry."""
    from hydra_plugins.rizzrun_optuna.config import settings_problems
    from hydra_plugins.rizzrun_optuna._search_space import Dimension, SearchSpaceError, search_space

    from rizzrun.config.compose import parse_overrides

    try:
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    except Exception as e:  # noqa: BLE001 - an interpolation in the sweeper's settings
        raise ConfigError(f"hydra.sweeper: cannot resolve its settings ({str(e).splitlines()[0]})") from None
    problems = settings_problems(sweeper)
    parsed = parse_overrides(overrides)
    hydra_lines = [o.input_line for o in parsed if o.is_hydra_override()]
    task_lines = [o.input_line for o in parsed if not o.is_hydra_override()]
    entries = []
    try:
        entries = search_space(sweeper.get("params"), task_lines, options_of=catalog.options)
    except SearchSpaceError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    dimensions = [e for e in entries if isinstance(e, Dimension)]
    first = {d.name: d.edges()[0] for d in dimensions}

    def job(values: dict) -> list[str]:
        return [*hydra_lines, *(e.override(values.get(e.name)) for e in entries)]

    jobs = [job(first)]
    for d in dimensions:
        jobs += [job({**first, d.name: value}) for value in d.edges()[1:]]
    return [j for i, j in enumerate(jobs) if j not in jobs[:i]]  # interval(2,2) has one edge
