"""Config rules of `rizzrun.data.hf.HFDataset`, with no torch or `datasets` import (see
rizzrun.config.specs): a local `path` must exist and be readable. A name that is no local path
and does not start like one is a Hub dataset name, looked up only at run time, so it passes."""

from __future__ import annotations

import glob

from rizzrun.config.errors import message, show
from rizzrun.data.hf_source import looks_local  # HFDataset's own rule (a torch-free module)
from rizzrun.data.path_checks import expand, unreadable


def check(node: dict, path: str) -> list[str]:
    value = node.get("path")
    if not isinstance(value, str) or not value:
        return []  # ??? or not a string: reported already
    head = f"{path}.path={show(value)}"
    found = expand(value)
    if not found:
        if glob.has_magic(value):
            return [message(head, "the pattern matches no file", "give an existing local folder, file or glob")]
        if looks_local(value):
            return [message(head, "no such file or folder (a path starting with /, ./, ../ or ~ is never looked "
                                  "up on the Hub)", "give an existing local folder or file, or a Hub dataset name")]
        return []  # a Hub dataset name
    return [message(head, why) for why in filter(None, map(unreadable, found))][:1]
