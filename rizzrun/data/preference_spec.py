"""Config rules of `rizzrun.data.preference.PreferencePairs`, with no torch or `datasets` import
(see rizzrun.config.specs): a local `path` (or each file of a list) must exist and be readable;
a name that is no local path and does not start like one is a Hub dataset name, looked up only
at run time, so it passes; max_prompt_length < max_length."""

from __future__ import annotations

import glob

from rizzrun.config.errors import message, show
from rizzrun.data.hf_source import looks_local  # the component's own rule (a torch-free module)
from rizzrun.data.pairs_spec import PAIR_RANGES, check_lengths
from rizzrun.data.path_checks import expand, unreadable

RANGES = {"PreferencePairs": {**PAIR_RANGES, "max_pairs": ((">=", 1),)}}


def _check_path(value: str, head: str, in_list: bool) -> list[str]:
    where = f"{show(value)}: " if in_list else ""
    found = expand(value)
    if not found:
        if glob.has_magic(value):
            return [message(head, f"{where}the pattern matches no file", "give existing files or globs")]
        if in_list or looks_local(value):
            return [message(head, f"{where}no such file or folder (a path starting with /, ./, ../ or ~ is never "
                                  f"looked up on the Hub)", "give an existing local file or folder, or a Hub dataset "
                                                            "name")]
        return []  # a Hub dataset name
    return [message(head, f"{where}{why}") for why in filter(None, map(unreadable, found))][:1]


def check(node: dict, path: str) -> list[str]:
    out = []
    value = node.get("path")
    head = f"{path}.path={show(value)}"
    if isinstance(value, str) and value:
        out += _check_path(value, head, in_list=False)
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, str) and entry:
                out += _check_path(entry, head, in_list=True)
    return out + check_lengths(node, path)
