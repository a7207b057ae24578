"""Where rizzrun's files live: the config tree (`conf/`), the recipes (`recipes/`) and the cache
of derived artefacts (`cache_root`). Torch-free.

Two layouts are supported, found from this file's own location (no environment variables):

- a wheel (`pip install .`): pyproject maps the packages `rizzrun.conf` -> `conf/` and
  `rizzrun.recipes` -> `recipes/`, so the yaml files sit inside the package,
  `site-packages/rizzrun/conf/` and `site-packages/rizzrun/recipes/`;
- a checkout (editable install, or `python -m` from the repo root): they are the top-level
  `conf/` and `recipes/` folders beside the `rizzrun/` package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_ENV = "RIZZRUN_CACHE"


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


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where rizzrun caches derived artefacts (tokenized data, trained tokenizers, the pydoc
    corpus), shared by runs: `cache_dir` (the config's top-level `cache_dir`), else
    $RIZZRUN_CACHE, else ~/.cache/rizzrun; `~` is expanded."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rizzrun"
    return Path(os.fspath(root)).expanduser()
