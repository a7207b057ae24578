"""The sweeper's settings (`hydra.sweeper.*`), stored in Hydra's ConfigStore as `hydra/sweeper=optuna`,
and the samplers as `hydra/sweeper/sampler=tpe|random`.

The keys are the official hydra-optuna-sweeper's where they mean the same thing; `objective`
is new (which value of the job's result is optimised), `max_failure_rate` is gone (a failed
trial is told to Optuna as failed and the search goes on).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

DIRECTIONS = ("minimize", "maximize")
DEFAULT_STUDY_NAME = "search"
DEFAULT_DB = "optuna.db"  # in the sweep folder when `storage` is null


# Plain mappings, not dataclasses, so that a search file may add any argument of the sampler.
TPE_SAMPLER = {"_target_": "optuna.samplers.TPESampler", "seed": None}
RANDOM_SAMPLER = {"_target_": "optuna.samplers.RandomSampler", "seed": None}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.rizzrun_optuna.sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # The sampler arrives as config: the sweeper builds it once it knows how many trials the study
    # holds (a seeded sampler continuing a study is seeded with seed + that number).
    _recursive_: bool = False
    # Any `_target_` (an optuna.samplers class and its arguments); hydra/sweeper/sampler=random picks one.
    sampler: Any = MISSING  # MISSING, not None: the sampler default above merges in first
    # minimize or maximize the objective.
    direction: str = "minimize"
    # Optuna storage URL; null: sqlite:///<sweep dir>/optuna.db (kept with the sweep's jobs).
    # The same storage and study_name in a later search continue the study.
    storage: Optional[str] = None
    study_name: str = DEFAULT_STUDY_NAME
    # Trials this invocation runs (a continued study adds n_trials more).
    n_trials: int = 20
    # Trials launched together, as one batch of the launcher (asked from Optuna before any is told).
    n_jobs: int = 1
    # What a job's return value is judged by: a number is taken as it is; from a mapping (rizzrun's
    # run summary) the value at this dotted key.
    objective: str = "val_loss"
    # The search space: key -> Hydra override value (`choice(...)`, `interval(...)`, ...; a plain
    # value is fixed for every trial).
    params: Optional[Dict[str, Any]] = None
    # Optional dotted path of a function (cfg, optuna.trial.Trial) -> None that suggests more
    # parameters with trial.suggest_*; each becomes an override `name=value` of the trial's job.
    custom_search_space: Optional[str] = None


def settings_problems(sweeper: Mapping[str, Any]) -> list[str]:
    """What is wrong with a sweeper node's own settings (not its search space), one line each."""
    problems = []
    direction = sweeper.get("direction")
    if direction not in DIRECTIONS:
        problems.append(f"hydra.sweeper.direction={direction}: must be one of {', '.join(DIRECTIONS)} "
                        "(this sweeper optimises one objective)")
    for key in ("n_trials", "n_jobs"):
        value = sweeper.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"hydra.sweeper.{key}={value}: must be a whole number >= 1")
    objective = sweeper.get("objective")
    if not isinstance(objective, str) or not objective.strip("."):
        problems.append(f"hydra.sweeper.objective={objective}: must name a value of the job's result, e.g. val_loss")
    study_name = sweeper.get("study_name")
    if not isinstance(study_name, str) or not study_name:
        problems.append(f"hydra.sweeper.study_name={study_name}: must be a non-empty name")
    storage = sweeper.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        problems.append(f"hydra.sweeper.storage={storage}: must be null or a database URL such as "
                        "sqlite:///outputs/searches/NAME.db")
    return problems


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="rizzrun_optuna")
_store.store(group="hydra/sweeper/sampler", name="tpe", node=TPE_SAMPLER, provider="rizzrun_optuna")
_store.store(group="hydra/sweeper/sampler", name="random", node=RANDOM_SAMPLER, provider="rizzrun_optuna")
