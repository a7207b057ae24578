"""The composed config of a set of group choices, kept on disk so that the next command with the
same choices skips Hydra's composition (~0.1 s of a ~0.5 s `rizzrun validate`).

What Hydra composes from the defaults lists depends only on the group overrides (`model=llama`,
`+recipe=tiny`, `~scheduler`), the yaml files and Hydra itself; key overrides (`model.n_layer=2`)
are applied afterwards (`compose._hydra_compose` applies them to a copy of the cached config as
Hydra would). So the key is: the config name, the group overrides in order, Hydra's version, and
the path, size and modification time of every yaml file under conf/ and recipes/. A changed,
added or removed file gives another key; an old entry is never read again. Entries live in
`<cache root>/compose/` (RIZZRUN_CACHE, else ~/.cache/rizzrun); a cache that cannot be read or
written is skipped, never an error. Entries are pickles: the cache folder must be the user's own,
like every other rizzrun cache.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from rizzrun import paths

FORMAT = 1  # bump when what is stored changes
KEEP = 64  # entries kept: every edit of a yaml file keys new ones, so the oldest are dropped


def _root() -> Path:
    return paths.cache_root() / "compose"


def key(config_name: str, group_overrides: list[str]) -> str:
    import hydra

    parts = [f"format={FORMAT}", f"hydra={hydra.__version__}", f"config={config_name}", *group_overrides, "--"]
    for folder in (paths.conf_dir(), paths.recipes_dir()):
        parts.append(str(folder))
        for file in sorted(folder.rglob("*.yaml")):
            stat = file.stat()
            parts.append(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def load(name: str):
    """The stored config, or None (absent, unreadable, another format)."""
    try:
        return pickle.loads((_root() / f"{name}.pkl").read_bytes())
    except Exception:  # noqa: BLE001 - a cache miss in every case
        return None


def store(name: str, cfg) -> None:
    """Keep `cfg` under `name`, and only the KEEP newest entries."""
    try:
        from omegaconf import OmegaConf

        from rizzrun.files import write_atomic

        if OmegaConf.is_config(cfg):
            OmegaConf.clear_cache(cfg)  # no resolved ${now:...} travels to a later command
        write_atomic(_root() / f"{name}.pkl", pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
        entries = sorted(_root().glob("*.pkl"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - read-only home, full disk, a race with another process: compose again
        pass
