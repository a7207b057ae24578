"""Whether the local paths a data option names exist and can be read, without torch or `datasets`
(shared by the data specs; see rizzrun.config.specs)."""

from __future__ import annotations

import glob
import os
from pathlib import Path


def unreadable(path: Path) -> str | None:
    """Why `path` (which exists) cannot be read, or None: a folder must list, a file open."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except OSError as e:
        return f"cannot read {path} ({e.strerror or e})"
    return None


def expand(pattern: str) -> list[Path]:
    """The paths `pattern` names: the glob's matches, or the path itself when it exists."""
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(os.path.expanduser(pattern)))]
    path = Path(pattern).expanduser()
    try:
        return [path] if path.exists() else []
    except OSError:  # e.g. a parent folder this user may not enter: there, but unreadable
        return [path]
