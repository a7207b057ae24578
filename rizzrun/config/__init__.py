"""Compose and validate rizzrun configs without importing torch.

    from rizzrun.config import compose, validate, ConfigError
    cfg = compose(["+recipe=tiny", "model.n_layer=2"])   # Hydra compose API, recipes registered
    validate(cfg)                                         # raises one ConfigError listing all problems

`load(overrides)` does both. Modules: `compose` (Hydra + error translation), `compose_cache`
(the composition of a set of group choices, kept on disk), `validate` (signature binding,
value checks, relations between components), `specs` (component rules kept beside the
components, found from the `_target_`), `check` (both, for one job or a sweep; with the
machine's accelerator for a command that runs here), `devices` (is there a GPU, without
torch), `signatures` (targets read with `ast`, kept on disk), `schema`
(trainer/logger/top-level dataclasses), `catalog` (groups, options, recipes), `resume`
(which run folder `resume=` continues), `launch` (the Hydra run path), `errors`.
"""

from __future__ import annotations

from rizzrun.config import resolvers
from rizzrun.config.check import check_job, check_jobs
from rizzrun.config.compose import compose, sweep_jobs
from rizzrun.config.errors import ConfigError
from rizzrun.config.validate import problems, validate

resolvers.register()


def load(overrides=(), *, hydra_config: bool = False):
    """compose + validate: the config a run with these overrides would get. Raises one
    ConfigError with the bad overrides and every problem of the config the others give."""
    cfg, found = check_job(overrides)
    if found:
        raise ConfigError(found)
    if not hydra_config:
        from omegaconf import open_dict

        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


__all__ = ["ConfigError", "check_job", "check_jobs", "compose", "load", "problems", "sweep_jobs", "validate"]
