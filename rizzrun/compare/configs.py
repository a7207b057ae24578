"""Which config keys tell runs apart, and which runs are seeds of one configuration.

Keys compared are the flattened resolved configs' (`optimizer.lr`). Some keys differ between
runs without describing the experiment, and are never columns nor split groups: folders
(`output_root`, any `*_dir`), `resume`, the W&B run's labels (`logger.name`, `logger.group`,
`logger.tags`), Hydra's own `hydra.*`, and what `--ignore` adds. A key whose last part is
`seed` (`seed`, and `data.seed` / `objective.seed` that follow it) is a seed: runs that differ
only in seeds are one group."""

from __future__ import annotations

import json

from rizzrun.compare.runs import Run

IGNORED = ("output_root", "resume", "logger.name", "logger.group", "logger.tags")
MISSING = "—"  # a key a run's config does not have


def is_ignored(key: str, extra: tuple[str, ...] = ()) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return key in IGNORED or key in extra or leaf.endswith("_dir") or key.startswith("hydra.")


def is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def canonical(value) -> str:
    """A value as text that is equal for equal values (1 and 1.0 alike), for comparing."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def shown(value) -> str:
    """A config value as a user types it in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, default=str)


def differing_keys(runs: list[Run], ignore: tuple[str, ...] = ()) -> list[str]:
    """The config keys whose value is not the same in every run that has a config (a key some
    runs lack counts as differing), keys named in the runs' overrides first, in their order."""
    configured = [run for run in runs if run.has_config()]
    keys = {key for run in configured for key in run.config}
    differ = {key for key in keys if not is_ignored(key, ignore)
              and len({canonical(run.config.get(key, MISSING)) for run in configured}) > 1}
    named = [key for run in configured for key in map(override_key, run.overrides) if key in differ]
    return list(dict.fromkeys(named)) + sorted(differ - set(named))


def override_key(override: str) -> str:
    """`++optimizer.lr=0.1` -> `optimizer.lr`."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def group_runs(runs: list[Run], keys: list[str]) -> list[list[Run]]:
    """Runs with equal values for every key of `keys` but the seeds, in order of first
    appearance; a run without a config is a group of its own."""
    groups: dict[object, list[Run]] = {}
    for index, run in enumerate(runs):
        identity = (tuple(canonical(run.config.get(k, MISSING)) for k in keys if not is_seed(k))
                    if run.has_config() else ("no config", index))
        groups.setdefault(identity, []).append(run)
    return list(groups.values())
