"""What exists: the config groups, their options, the recipes; and putting recipes where Hydra
looks for them.

Recipes live in the top-level `recipes/` folder, not in `conf/recipe/`, so that they read as
the project's main artefact. Hydra only knows config groups under its search path; each
`recipes/NAME.yaml` is therefore stored in Hydra's ConfigStore as option NAME of group `recipe`
in package `_global_` (the `# @package` header of the file is honoured). Its own `defaults:`
list, `override /objective: ...` entries included, works as in any config file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from rizzrun import paths

RECIPE_GROUP = "recipe"
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")


def groups() -> list[str]:
    """The component groups of conf/ (folders holding at least one yaml), sorted."""
    root = paths.conf_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def options(group: str) -> list[str]:
    """The options of `group` (`recipe` included), sorted; [] for an unknown group."""
    folder = paths.recipes_dir() if group == RECIPE_GROUP else paths.conf_dir() / group
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def option_file(group: str, option: str) -> Path:
    folder = paths.recipes_dir() if group == RECIPE_GROUP else paths.conf_dir() / group
    return folder / f"{option}.yaml"


def yaml_description(path: Path) -> str:
    """The first comment line of a yaml file that is not a `# @package` header, else ''."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        if _PACKAGE_HEADER.match(stripped):
            continue
        return stripped.lstrip("#").strip()
    return ""


def recipe_package(path: Path) -> str:
    """The `# @package` of a recipe file; recipes are `_global_` unless they say otherwise."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        match = _PACKAGE_HEADER.match(stripped)
        if match:
            return match.group(1)
        if not stripped.startswith("#"):
            break
    return "_global_"


_PROVIDER = "rizzrun recipes"
_registered: dict[str, tuple[int, list[str]]] = {}  # recipe file -> (mtime when stored, recipes it names)


def register_recipes(names: Iterable[str] | None = None) -> list[str]:
    """Store recipes/*.yaml in Hydra's ConfigStore as group `recipe` (when `names` is given, only
    those and the recipes their defaults lists name, transitively: a composition needs no more);
    returns the names of every recipe.

    Cheap to call again: a file is re-read only when it changed, and recipes whose file is gone
    are dropped from the store.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    from rizzrun.config.errors import ConfigError

    store = ConfigStore.instance()
    files = sorted(paths.recipes_dir().glob("*.yaml"))
    by_name = {p.stem: p for p in files}
    queue = list(by_name) if names is None else [n for n in names if n in by_name]
    seen: set[str] = set()
    problems = []
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = by_name[name]
        stamp = path.stat().st_mtime_ns
        known = _registered.get(str(path))
        if known is not None and known[0] == stamp:
            queue += known[1]
            continue
        try:
            node = OmegaConf.load(path)
        except Exception as e:  # yaml syntax: name the file, keep the parser's position
            problems.append(f"{path}: not valid YAML: {e}")
            continue
        if not isinstance(node, DictConfig):
            problems.append(f"{path}: a recipe must be a mapping of keys to values, not {type(node).__name__}")
            continue
        store.store(group=RECIPE_GROUP, name=path.stem, node=node, package=recipe_package(path),
                    provider=_PROVIDER)
        refs = [r for r in _recipes_in_defaults(node) if r in by_name]
        _registered[str(path)] = (stamp, refs)
        queue += refs
    current = {f"{p.stem}.yaml" for p in files}
    stored = store.repo.get(RECIPE_GROUP, {})
    for key in list(stored):
        if key not in current and getattr(stored[key], "provider", None) == _PROVIDER:
            del stored[key]
    for path in list(_registered):
        if Path(path) not in files:
            del _registered[path]
    if problems:
        raise ConfigError(problems)
    return [p.stem for p in files]


def _recipes_in_defaults(node) -> list[str]:
    """The recipes a recipe's defaults list names: `- other` (its own group), `- /recipe/other`,
    `- recipe: other` / `- /recipe: other` (an `@package` suffix dropped)."""
    found = []
    for entry in node.get("defaults") or []:
        if isinstance(entry, str):
            text = entry.strip().split("@")[0]
            parts = text.lstrip("/").split("/")
            if text.startswith("/") and len(parts) == 2 and parts[0] == RECIPE_GROUP:
                found.append(parts[1])
            elif "/" not in text and text != "_self_":
                found.append(text)
        elif hasattr(entry, "items"):
            for key, value in entry.items():
                if str(key).split()[-1].strip("/").split("@")[0] == RECIPE_GROUP and isinstance(value, str):
                    found.append(value)
    return found
