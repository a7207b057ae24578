"""Config rules of `rizzrun.data.text.TextFiles`, with no torch or `datasets` import (see
rizzrun.config.specs): every file or glob in `train_files` and `val_files` names readable files."""

from __future__ import annotations

import glob

from rizzrun.config.errors import message, show
from rizzrun.data.path_checks import expand, unreadable


def check(node: dict, path: str) -> list[str]:
    out = []
    for key in ("train_files", "val_files"):
        value = node.get(key)
        entries = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for entry in entries:
            if not isinstance(entry, str):
                continue  # a type problem, reported already
            head = f"{path}.{key}={show(value)}"
            where = "" if entries == [value] else f"{show(entry)}: "
            found = expand(entry)
            if not found:
                what = "the pattern matches no file" if glob.has_magic(entry) else "no such file"
                out.append(message(head, f"{where}{what}", "give existing .txt, .jsonl or .parquet files (or globs)"))
                continue
            for file in found:
                why = "is a folder, not a file" if file.is_dir() else unreadable(file)
                if why:
                    out.append(message(head, f"{where}{file} {why}" if file.is_dir() else f"{where}{why}"))
                    break
    return out
