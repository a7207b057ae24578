"""Config rules of `rizzrun.data.prompt_file.PromptFile`, with no torch or `datasets` import (see
rizzrun.config.specs): a local `path` must exist and be readable (a name that is no local path and
does not start like one is a Hub dataset name, looked up only at run time), as for
PreferencePairs; `columns` is null or a list of other fields than the prompt's."""

from __future__ import annotations

from rizzrun.config.errors import message, show
from rizzrun.data.preference_spec import _check_path  # the same path rule as data=preference

RANGES = {"PromptFile": {"max_prompts": ((">=", 1),), "batch_size": ((">=", 1),), "max_prompt_length": ((">=", 1),),
                         "val_fraction": ((">=", 0), ("<", 1))}}


def check(node: dict, path: str) -> list[str]:
    out = []
    value = node.get("path")
    if isinstance(value, str) and value:
        out += _check_path(value, f"{path}.path={show(value)}", in_list=False)
    columns, field = node.get("columns"), node.get("prompt_field")
    if isinstance(columns, list) and isinstance(field, str) and field in columns:
        out.append(message(f"{path}.columns={show(columns)}", f"holds the prompt's own field {field!r} "
                           f"({path}.prompt_field)", "list the other fields the rewards need"))
    return out
