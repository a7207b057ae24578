"""Config rules of `rizzrun.tokenizers.hf.HFTokenizer`, with no torch or `tokenizers` import (see
rizzrun.config.specs): the folder at `path` must hold a readable tokenizer, and its vocabulary
size (read from the JSON files by `folder_vocab_size`) is what the model must cover."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.tokenizers.hf import folder_vocab_size


def _path(node: dict) -> str | None:
    value = node.get("path")
    return value if isinstance(value, str) else None  # ??? or not a string: reported already


def check(node: dict, path: str) -> list[str]:
    folder = _path(node)
    if folder is None:
        return []
    try:
        folder_vocab_size(folder)
    except (OSError, ValueError) as e:
        return [message(f"{path}.path={show(folder)}", str(e))]
    return []


def vocab_size(node: dict) -> int | None:
    folder = _path(node)
    if folder is None:
        return None
    try:
        return folder_vocab_size(folder)  # cached: `check` read it already
    except (OSError, ValueError):
        return None
