"""OptunaSweeper: `hydra/sweeper=optuna`. Asks Optuna for a batch of `n_jobs` trials, launches them
as jobs through the configured launcher, tells Optuna each job's objective (or that it failed),
until `n_trials` ran; then writes the best trial to <sweep dir>/optimization_results.yaml.

A trial whose job raised, returned nothing, lacks the objective or returned NaN is told to Optuna
as FAIL and the search goes on. The study lives in `storage` (default: sqlite in the sweep
folder), so a later search with the same storage and study_name continues it; a seeded sampler
is then seeded with seed + the trials already there (with the same seed it would repeat the first
search's draws).
"""

import logging
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.rizzrun_optuna.config import DEFAULT_DB, settings_problems
from hydra_plugins.rizzrun_optuna._objective import objective_value
from hydra_plugins.rizzrun_optuna._search_space import Dimension, search_space, spell

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: str, storage: str | None, study_name: str, n_trials: int,
                 n_jobs: int, objective: str, params: Any = None, custom_search_space: str | None = None):
        problems = settings_problems({"direction": direction, "storage": storage, "study_name": study_name,
                                      "n_trials": n_trials, "n_jobs": n_jobs, "objective": objective})
        if problems:
            raise ValueError("; ".join(problems))
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.objective = objective
        self.params = params
        self.custom_search_space = custom_search_space
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> list:
        import optuna
        from hydra.utils import get_method

        assert self.config is not None and self.launcher is not None
        loader = self.hydra_context.config_loader
        entries = search_space(self.params, arguments, options_of=lambda group: loader.get_group_options(group))
        dimensions = {e.name: e for e in entries if isinstance(e, Dimension)}
        extend = get_method(self.custom_search_space) if self.custom_search_space else None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        storage = storage_url(self.storage, sweep_dir)
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"hydra.sweeper.direction={self.direction}: study '{self.study_name}' in {storage} "
                             f"was made to {study.direction.name.lower()}; give another study_name")
        earlier = len(study.trials)
        study.sampler = build_sampler(self.sampler, earlier)
        log.info("Study %s in %s (%s %s, %s earlier trials), sampler %s: %d trials, %d at a time",
                 self.study_name, storage, self.direction, self.objective, earlier,
                 type(study.sampler).__name__, self.n_trials, self.n_jobs)
        job_idx, returns = 0, []
        while job_idx < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - job_idx)
            trials = [study.ask({name: d.distribution for name, d in dimensions.items()}) for _ in range(batch)]
            told: set[int] = set()
            try:
                overrides = [self._overrides(trial, entries, extend) for trial in trials]
                batch_returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
                for trial, job_return in zip(trials, batch_returns):
                    self._tell(study, trial, job_return)
                    told.add(trial.number)
            finally:  # interrupted (a signal, a launcher error): no trial stays RUNNING in the study
                for trial in trials:
                    if trial.number not in told:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
            returns.append(batch_returns)
            job_idx += batch
        self._report(study, storage, sweep_dir)
        return returns

    def _overrides(self, trial, entries, extend) -> list[str]:
        """The trial's job: every entry, searched ones at the trial's values, then the parameters
        the custom search space suggested."""
        if extend is not None:
            extend(self.config, trial)
        names = {e.name for e in entries}
        clash = [e.name for e in entries if not isinstance(e, Dimension) and e.name in trial.params]
        if clash:
            raise ValueError(f"custom_search_space suggests {', '.join(clash)}, which the overrides fix")
        lines = [e.override(trial.params.get(e.name)) for e in entries]
        lines += [f"{name}={spell(value)}" for name, value in trial.params.items() if name not in names]
        trial.set_user_attr("overrides", lines)
        return lines

    def _tell(self, study, trial, job_return) -> None:
        import optuna

        job_dir = _job_dir(job_return)
        if job_dir is not None:
            trial.set_user_attr("job_dir", job_dir)
        value, why = objective_value(job_return, self.objective)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("Trial %d (%s) failed: %s; the search goes on", trial.number, job_dir, why)
            return
        study.tell(trial, value)
        log.info("Trial %d (%s): %s=%s", trial.number, job_dir, self.objective, value)

    def _report(self, study, storage: str, sweep_dir: Path) -> None:
        """Log the best trial of the whole study and write it to <sweep dir>/optimization_results.yaml."""
        from optuna.trial import TrialState

        states = [t.state for t in study.trials]
        completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {
            "name": "optuna", "study_name": self.study_name, "storage": storage, "direction": self.direction,
            "objective": self.objective,
            "trials": {"complete": states.count(TrialState.COMPLETE), "fail": states.count(TrialState.FAIL),
                       "total": len(states)},
            "best_trial": None, "best_job_dir": None, "best_params": None, "best_value": None}
        if completed:
            best = study.best_trial
            results.update(best_trial=best.number, best_job_dir=best.user_attrs.get("job_dir"),
                           best_params=dict(best.params), best_value=best.value)
            log.info("Best %s: %s (trial %d, %s)", self.objective, best.value, best.number,
                     best.user_attrs.get("job_dir"))
            log.info("Best parameters: %s", " ".join(f"{k}={spell(v)}" for k, v in best.params.items()))
        else:
            log.error("No trial of study %s completed: there is no best value", self.study_name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)


def build_sampler(sampler: Any, earlier_trials: int):
    """The sampler from its config. Continuing a study that holds `earlier_trials` trials, a seeded
    sampler gets seed + earlier_trials: with the same seed it would draw its first (random start-up)
    trials again, repeating the first search's parameters."""
    from hydra.utils import instantiate

    if not OmegaConf.is_config(sampler) and not isinstance(sampler, dict):
        return sampler  # already a sampler object (a caller that built it)
    seed = sampler.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and earlier_trials:
        return instantiate(sampler, seed=seed + earlier_trials)
    return instantiate(sampler)


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage URL: null means sqlite in the sweep folder. A sqlite file's folder is created
    (sqlite does not) and `~` expanded; a relative path is relative to the working directory."""
    url = storage or f"sqlite:///{sweep_dir / DEFAULT_DB}"
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:"):
        path = Path(url[len(prefix):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"{prefix}{path}"
    return url


def _job_dir(job_return) -> str | None:
    try:
        return str(job_return.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # noqa: BLE001 - a launcher that returns no hydra config: only a label is lost
        return None
