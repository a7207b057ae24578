"""Compose a config from conf/ + recipes/ + overrides with Hydra's compose API, and turn Hydra's
errors into ConfigErrors that name the group or key, the bad value and the closest valid one.

Group options (`model=lama`, `+recipe=tny`) are checked before Hydra runs, against the files
on disk. Keys Hydra cannot set are collected in the same composition (each key override is
applied on its own), so one call reports every bad override, each with the nearest existing key.
Only the recipes the overrides name are registered with Hydra.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from rizzrun import paths
from rizzrun.config import catalog, schema
from rizzrun.config.errors import ConfigError, listing, message, suggest

CONFIG_NAME = "config"
_MAX_RETRIES = 20


def compose(overrides: Sequence[str] = (), *, hydra_config: bool = False,
            config_name: str = CONFIG_NAME) -> DictConfig:
    """The composed config for `overrides` (Hydra override syntax, no sweeps).

    With `hydra_config=True` the `hydra` node is kept (`hydra.runtime.choices` says which
    option of each group was picked). Raises ConfigError listing every bad override.
    """
    cfg, problems = compose_report(overrides, config_name=config_name)
    if problems:
        raise ConfigError(problems)
    assert cfg is not None
    if not hydra_config:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def compose_report(overrides: Sequence[str] = (), *, config_name: str = CONFIG_NAME
                   ) -> tuple[DictConfig | None, list[str]]:
    """(the config composed from the overrides that work, hydra node included; the problems with
    the others). The config is None only when nothing composes (e.g. a recipe names a missing
    option), so that a caller can still validate the rest and report everything at once."""
    from rizzrun.config.search import store_sweeper_config

    overrides = list(overrides)
    parsed = parse_overrides(overrides)
    catalog.register_recipes(_recipes_named(parsed))
    store_sweeper_config()  # hydra/sweeper=optuna composes, under an editable install too
    problems = check_overrides(overrides, parsed)
    bad_keys: list[tuple[str, str]] = []  # (override, key) Hydra could not set
    remaining = [o for o in overrides if not _is_flagged(o, problems)]

    def note(e: Exception) -> tuple[str, str] | None:
        culprit, text = _translate(e, remaining)
        if text is not None:
            problems.append(text)
        elif culprit is not None:
            bad_keys.append(culprit)
        return culprit

    cfg = None
    for _ in range(_MAX_RETRIES):
        try:
            cfg, refused = _hydra_compose(remaining, config_name)
        except Exception as e:  # noqa: BLE001 - every Hydra/OmegaConf failure is translated
            culprit = note(e)  # a bad group choice, say: compose again without it
            if culprit is None:
                break
            remaining = [o for o in remaining if o != culprit[0]]
            continue
        for e in refused:  # keys Hydra could not set, all found in this one composition
            note(e)
        break
    else:
        problems.append("too many bad overrides; fix the ones above first")
    problems.extend(_unknown_key_message(o, key, cfg) for o, key in bad_keys)
    return cfg, problems


def _is_flagged(override: str, problems: list[str]) -> bool:
    return any(p.startswith(f"{override}: ") for p in problems)


def _recipes_named(parsed) -> list[str]:
    """The recipes the overrides add (`+recipe=a`, `+recipe=[a,b]`, a sweep `+recipe=a,b`)."""
    names: list[str] = []
    for o in parsed:
        if o.key_or_group != catalog.RECIPE_GROUP:
            continue
        if o.is_sweep_override():
            names += list(o.sweep_string_iterator()) if o.is_discrete_sweep() else catalog.options(catalog.RECIPE_GROUP)
        elif isinstance(o.value(), str):
            names.append(o.value())
        elif isinstance(o.value(), list):
            names += [str(v) for v in o.value()]
    return names


def _hydra_compose(overrides: list[str], config_name: str) -> tuple[DictConfig, list[Exception]]:
    """(the composed config, the errors of the key overrides that could not be applied).

    The config of the group choices comes from `compose_cache` when an earlier command composed
    the same choices from the same files; the key overrides are then applied as Hydra applies
    them. Overrides that steer Hydra itself (`hydra.*`, `hydra/...`, `@package`) and sweeps
    (which Hydra refuses in one job with its own message) always go through Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rizzrun.config import compose_cache

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(_needs_hydra(o) for o in parsed):
        return _compose_with_hydra(overrides, config_name)
    groups = set(catalog.groups()) | {catalog.RECIPE_GROUP}
    choices = [o.input_line for o in parsed if _is_group_override(o, groups)]
    name = compose_cache.key(config_name, choices)
    cfg = compose_cache.load(name)
    if cfg is None:
        cfg, _ = _compose_with_hydra(choices, config_name)  # choices only: no key to refuse
        compose_cache.store(name, cfg)
    else:
        from hydra.core.utils import setup_globals

        setup_globals()  # the resolvers Hydra registers when it composes (${now:...} in hydra.run.dir)
    return cfg, _apply_key_overrides(cfg, parsed, [o for o in parsed if not _is_group_override(o, groups)])


def _needs_hydra(o) -> bool:
    key = o.key_or_group
    return (key == "hydra" or key.startswith(("hydra.", "hydra/")) or "/" in key or o.package is not None
            or o.is_sweep_override())


def _is_group_override(o, groups: set[str]) -> bool:
    """Hydra's rule (hydra/_internal/defaults_list.py, Overrides): an override of an existing
    config group whose value is not a mapping chooses an option; any other sets a key."""
    return o.key_or_group in groups and not isinstance(o.value(), dict)


def _apply_key_overrides(cfg: DictConfig, parsed: list, key_overrides: list) -> list[Exception]:
    """What Hydra does after composing (hydra/_internal/config_loader_impl.py,
    _load_configuration_impl): apply the key overrides (each on its own here, keeping the errors),
    then record the overrides, the working directory and the override dirname in `cfg.hydra`."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra.errors import ConfigCompositionException

    refused: list[Exception] = []
    for override in key_overrides:
        try:
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
        except ConfigCompositionException as e:
            refused.append(e)
    import os

    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = [o.input_line for o in parsed]
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys)
    return refused


def _compose_with_hydra(overrides: list[str], config_name: str) -> tuple[DictConfig, list[Exception]]:
    """Hydra's compose, except that each key override is applied on its own and its error kept
    (Hydra stops at the first), so one composition finds every bad key."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    refused: list[Exception] = []
    apply_all = ConfigLoaderImpl.__dict__["_apply_overrides_to_config"]

    def apply_each(overrides, cfg) -> None:
        for override in overrides:
            try:
                apply_all.__func__([override], cfg)
            except ConfigCompositionException as e:
                refused.append(e)

    # Composing from inside a running Hydra app must not disturb it: set its state aside.
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply_each)
    try:
        with initialize_config_dir(config_dir=str(paths.conf_dir()), version_base="1.3", job_name="rizzrun"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        return cfg, refused
    finally:
        ConfigLoaderImpl._apply_overrides_to_config = apply_all
        restore_gh_from_backup(backup)


# --- checks made before Hydra runs ---------------------------------------------------------------

def parse_overrides(overrides: Sequence[str]):
    """Hydra's parsed overrides; raises ConfigError naming an override that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed, problems = [], []
    for override in overrides:
        try:
            parsed.extend(parser.parse_overrides([override]))
        except OverrideParseException as e:
            detail = e.message.splitlines()[1] if len(e.message.splitlines()) > 1 else e.message
            problems.append(f"{override}: not a valid override ({detail}); the forms are key=value, "
                            f"+key=value (add), ~key (delete), group=option")
    if problems:
        raise ConfigError(problems)
    return parsed


def check_overrides(overrides: Sequence[str], parsed=None) -> list[str]:
    """Problems with group choices in `overrides` (unknown option, recipe without '+');
    `parsed`: `parse_overrides(overrides)` when the caller has it."""
    problems = []
    groups = set(catalog.groups()) | {catalog.RECIPE_GROUP}
    for o in parsed if parsed is not None else parse_overrides(overrides):
        group = o.key_or_group
        if group not in groups or o.package is not None or o.is_delete():
            continue
        if group == catalog.RECIPE_GROUP and not (o.is_add() or o.is_force_add()):
            problems.append(f"{o.input_line}: a recipe is added to the defaults, not overridden; "
                            f"write +{o.input_line.lstrip('+')}")
            continue
        if o.is_sweep_override():
            if not o.is_discrete_sweep() or o.value_type.name == "GLOB_CHOICE_SWEEP":
                continue
            values = list(o.sweep_string_iterator())
        elif isinstance(o.value(), str):
            values = [o.value()]
        elif isinstance(o.value(), list) and all(isinstance(v, str) for v in o.value()):
            values = list(o.value())  # several options merged, in order
        elif isinstance(o.value(), dict):
            continue  # `+data={_target_: ...}` sets a whole node: not an option name
        else:
            problems.append(message(o.input_line, f"'{group}' is a config group, so its value names an option",
                                    f"options: {listing(catalog.options(group))}"))
            continue
        valid = catalog.options(group)
        for value in values:
            if value not in valid:
                problems.append(option_message(o.input_line, group, value, valid))
    return problems


def option_message(where: str, group: str, value: str, valid: Sequence[str]) -> str:
    if group == catalog.RECIPE_GROUP:
        return message(where, f"no recipe '{value}'", suggest(value, valid),
                       f"recipes: {listing(valid)} (the files in {paths.recipes_dir()})")
    return message(where, f"no option '{value}' in group '{group}'", suggest(value, valid),
                   f"options: {listing(valid)}")


# --- translating Hydra's errors --------------------------------------------------------------------

_COULD_NOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_ALREADY_THERE = re.compile(r"Could not append to config\. An item is already at '([^']+)'")
_NOT_THERE = re.compile(r"Could not delete from config\. '([^']+)' does not exist")
_IN_CONFIG = re.compile(r"In '([^']+)'")
_AMBIGUOUS = re.compile(r"Ambiguous value for argument '([^']+)'")


def _key_of(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _find_override(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        if _key_of(o) == key:
            return o
    return None


def _translate(e: Exception, overrides: list[str]) -> tuple[tuple[str, str] | None, str | None]:
    """(the override to drop and its key, or None to stop; a finished message, or None when
    the message needs the composed config — an unknown key)."""
    from hydra.errors import MissingConfigException

    text = str(e)
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, value = e.missing_cfg_file.rpartition("/")
        where = _IN_CONFIG.search(text)
        origin = where.group(1) if where else CONFIG_NAME
        culprit = next((o for o in overrides if _key_of(o) == group and o.split("=", 1)[-1] == value), None)
        if culprit is not None:
            return (culprit, group), option_message(culprit, group, value, e.options)
        # Hydra names the config whose defaults list holds the entry; an `override /group: x` in a
        # recipe changes the primary config's entry, so look for the recipe that wrote it.
        recipe = origin.split("/", 1)[1] if origin.startswith(f"{catalog.RECIPE_GROUP}/") else \
            _recipe_choosing(overrides, group, value)
        if recipe is not None:
            where_text = f"recipe '{recipe}' ({catalog.option_file(catalog.RECIPE_GROUP, recipe)})"
        else:
            where_text = f"'{origin}'"
        return None, option_message(f"{where_text}, defaults entry {group}: {value}", group, value, e.options)
    match = _AMBIGUOUS.search(text)
    if match and match.group(1) in overrides:
        culprit = match.group(1)
        return (culprit, _key_of(culprit)), message(
            culprit, "several values for one key", f"to run one job per value add -m (rizzrun -m {culprit})",
            "for a list write key=[a,b]", "for text with a comma quote it: key='a,b'")
    match = _COULD_NOT_OVERRIDE.search(text)
    if match:
        key = match.group(1)
        culprit = _find_override(overrides, key)
        if culprit is not None:
            return (culprit, key), None
        return None, _clean(text)
    match = _ALREADY_THERE.search(text)
    if match:
        key = match.group(1)
        culprit = _find_override(overrides, key)
        if culprit is not None:
            value = culprit.split("=", 1)[1]
            return (culprit, key), (f"{culprit}: '{key}' already exists, so it is set, not added: "
                                    f"write {key}={value}")
    match = _NOT_THERE.search(text)
    if match:
        key = match.group(1)
        culprit = _find_override(overrides, key)
        if culprit is not None:
            return (culprit, key), None  # worded once the config shows whether the key exists
    return None, _clean(text)


def _recipe_choosing(overrides: list[str], group: str, value: str) -> str | None:
    """The recipe among `+recipe=...` overrides whose defaults list picks `group: value`."""
    from omegaconf import OmegaConf

    for o in overrides:
        if not o.lstrip("+").startswith(f"{catalog.RECIPE_GROUP}="):
            continue
        name = o.split("=", 1)[1]
        try:
            defaults = OmegaConf.load(catalog.option_file(catalog.RECIPE_GROUP, name)).get("defaults") or []
        except Exception:  # noqa: BLE001 - only to attribute the error
            continue
        for entry in defaults:
            if isinstance(entry, DictConfig):
                for k, v in entry.items():
                    if str(k).split()[-1].strip("/") == group and str(v) == value:
                        return name
    return None


def _clean(text: str) -> str:
    text = text.split("\nConfig search path:")[0].strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _keys_at(node) -> list[str]:
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _unknown_key_message(override: str, key: str, cfg: DictConfig | None) -> str:
    """`override` names `key`, which the config lacks: say so, with the nearest real key."""
    deleting = override.startswith("~")
    add = f"+{override.lstrip('+')}" if "=" in override and not deleting else None
    tail = f"to add a new key write {add}" if add else ""
    if not deleting and add and not override.startswith("+") and key in catalog.groups():
        # A group no defaults list picks (hparams_search): Hydra sees a key, but the user meant an option.
        return message(override, f"no defaults list picks an option of group '{key}', so one is added, not chosen",
                       f"write {add}")
    if cfg is None:
        return message(override, f"unknown key '{key}'", tail)
    if deleting and OmegaConf.select(cfg, key, default="<absent>", throw_on_resolution_failure=False) is None:
        return message(override, f"'{key}' is null, and Hydra cannot delete a key whose value is null",
                       "leave it out, or replace the whole node")
    parts = key.split(".")
    node, known = cfg, []
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            known.append(part)
            node = node._get_node(part)  # no interpolation resolution needed to walk
            continue
        prefix = ".".join(parts[:i])
        candidates = _keys_at(node)
        if isinstance(node, DictConfig) and "_target_" in node:
            supplied = schema.RUNNER_SUPPLIED.get(prefix, ())
            candidates = sorted(set(candidates) | {p for p in _target_params(node) if p not in supplied})
        if not prefix:  # top level: keys, but also groups (model=...) and the recipe group
            candidates = [c for c in candidates if c != "hydra"] + catalog.groups()
        candidates = [c for c in candidates if not (c.startswith("_") and c.endswith("_"))]
        where = f"'{prefix}'" if prefix else "the config"
        if isinstance(node, ListConfig):
            return message(override, f"'{prefix}' is a list, so it has no key '{part}'")
        hint = suggest(part, candidates, prefix=f"{prefix}." if prefix else "")
        if deleting:
            return message(override, f"there is no '{key}' to delete", hint)
        return message(override, f"{where} has no key '{part}'", hint,
                       f"keys: {listing(sorted(set(candidates)))}", "" if hint else tail)
    return message(override, f"cannot set '{key}'", tail)


def _target_params(node: DictConfig) -> list[str]:
    from rizzrun.config import signatures

    try:
        target = signatures.resolve(str(node._get_node("_target_")._value()))
    except Exception:  # noqa: BLE001 - only a source of suggestions; validate reports it properly
        return []
    return [p.name for p in target.keyword_params()]


# --- sweeps ------------------------------------------------------------------------------------------

def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job of a multirun sweep, as Hydra's basic sweeper expands it.

    A range or choice sweep (`a=1,2`, `b=range(3)`, `model=glob(*)`) gives one value per job; an
    interval (`lr=interval(1e-4,1e-2)`, for optimising sweepers) is checked at both ends.
    """
    import itertools

    return [list(job) for job in itertools.product(*_sweep_values(overrides).values())]


def first_sweep_job(overrides: Sequence[str]) -> list[str]:
    """The first job of `sweep_jobs(overrides)`, without listing the others."""
    return [values[0] for values in _sweep_values(overrides).values()]


def _sweep_values(overrides: Sequence[str]) -> dict[str, list[str]]:
    """Each key's overrides, one per value the sweep gives it."""
    from hydra.core.override_parser.types import Glob

    lists: dict[str, list[str]] = {}
    for o in parse_overrides(overrides):
        key = o.get_key_element()
        if not o.is_sweep_override():
            lists[key] = [o.input_line]
        elif o.value_type.name == "GLOB_CHOICE_SWEEP":
            glob: Glob = o.value()
            group = o.key_or_group
            lists[key] = [f"{key}={v}" for v in glob.filter(catalog.options(group))] or [o.input_line]
        elif o.is_discrete_sweep():
            lists[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        elif o.value_type.name == "INTERVAL_SWEEP":
            interval = o.value()
            lists[key] = [f"{key}={interval.start}", f"{key}={interval.end}"]
        else:
            lists[key] = [o.input_line]
    return lists
