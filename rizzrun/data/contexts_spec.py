"""Config rules of `rizzrun.data.contexts.DiversityLabels`, with no torch import (see
rizzrun.config.specs): ranges, and the label file must exist."""

from __future__ import annotations

from pathlib import Path

from rizzrun.config.errors import message
from rizzrun.config.specs import readable
from rizzrun.data.path_checks import unreadable

RANGES = {"DiversityLabels": {"val_fraction": ((">=", 0), ("<", 1)), "batch_size": ((">=", 1),)}}


def check(node: dict, path: str) -> list[str]:
    value = node.get("path")
    if not readable(value) or not isinstance(value, str):
        return []
    file = Path(value).expanduser()
    if not file.is_file():
        return [message(f"{path}.path={value}", "no such file",
                        "give a .jsonl of {text, diversity} rows (rizzrun.eval.diversity.label_contexts writes one)")]
    why = unreadable(file)
    return [message(f"{path}.path={value}", why)] if why else []
