"""Where the config tree (`conf/`) and the recipes (`recipes/`) live.

Two layouts are supported, found from this file's own location (no environment variables):

- a wheel (`pip install .`): pyproject maps the packages `rizzrun.conf` -> `conf/` and
  `rizzrun.recipes` -> `recipes/`, so the yaml files sit inside the package,
  `site-packages/rizzrun/conf/` and `site-packages/rizzrun/recipes/`;
- a checkout (editable install, or `python -m` from the repo root): they are the top-level
  `conf/` and `recipes/` folders beside the `rizzrun/` package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    candidates = (PACKAGE_DIR / name, PACKAGE_DIR.parent / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"cannot find rizzrun's {name}/ folder: looked in {looked}; a checkout keeps it at the "
        f"repository root, a wheel inside the package (reinstall rizzrun if it is missing)"
    )


def conf_dir() -> Path:
    """The Hydra config tree: `config.yaml` and one folder per component group."""
    return _locate("conf")


def recipes_dir() -> Path:
    """The recipe files, `NAME.yaml`, selected with `+recipe=NAME`."""
    return _locate("recipes")
