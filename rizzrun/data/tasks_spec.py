"""Config rules of `rizzrun.data.tasks` (TaskSFT, TaskPrompts), with no torch import (see
rizzrun.config.specs): option ranges, a usable alphabet, and a problem space big enough for
n_train + n_val distinct problems. The alphabet rule and the space size are the component's own
(rizzrun.data.tasks imports them from here)."""

from __future__ import annotations

from rizzrun.config.errors import message, show

TASKS = ("sort", "reverse", "count")
FORBIDDEN = ":="  # the prompt format's separators (module docstring of rizzrun.data.tasks)

_PROBLEMS = {
    "n_train": ((">=", 1),),
    "n_val": ((">=", 0),),
    "length": ((">=", 1),),
    "val_fraction": ((">", 0), ("<", 1)),
    "problem_seed": ((">=", 0),),
}
RANGES = {
    "TaskSFT": {**_PROBLEMS, "seq_len": ((">=", 1),), "batch_size": ((">=", 1),), "noise": ((">=", 0), ("<=", 1))},
    "TaskPrompts": {**_PROBLEMS, "batch_size": ((">=", 1),), "max_prompt_length": ((">=", 1),)},
}


def alphabet_problem(alphabet) -> str | None:
    """Why `alphabet` cannot spell problems (None when it can): a string of >= 1 distinct
    printable characters, none of them whitespace, ':' or '='."""
    if not isinstance(alphabet, str) or not alphabet:
        return "must be a non-empty string of distinct characters"
    bad = sorted({c for c in alphabet if not c.isprintable() or c.isspace() or c in FORBIDDEN})
    if bad:
        return (f"holds {', '.join(map(repr, bad))}; every character must be printable and none may be "
                f"whitespace, ':' or '=' (the prompt format's separators)")
    repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if repeated:
        return f"repeats {', '.join(map(repr, repeated))}; give each character once"
    return None


def space_size(task: str, alphabet: str, length: int) -> int:
    """How many distinct problems there are: strings of `length` characters (count: and the
    character to count, one of the alphabet)."""
    return len(alphabet) ** (length + (task == "count"))


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check(node: dict, path: str) -> list[str]:
    out = []
    alphabet, task, length = node.get("alphabet"), node.get("task"), _int(node.get("length"))
    why = alphabet_problem(alphabet) if isinstance(alphabet, str) else None
    if why:
        out.append(message(f"{path}.alphabet={show(alphabet)}", why))
        return out
    n_train, n_val = _int(node.get("n_train")), _int(node.get("n_val"))
    if (task in TASKS and isinstance(alphabet, str) and length is not None and length >= 1
            and n_train is not None and n_val is not None):
        size = space_size(task, alphabet, length)
        if n_train + n_val > size:
            out.append(message(f"{path}.n_train={n_train}", f"with {path}.n_val={n_val} needs {n_train + n_val} "
                               f"distinct problems; task {task!r} with {len(alphabet)} characters and length "
                               f"{length} has only {size}", f"lower them, or raise {path}.length or give "
                               f"{path}.alphabet more characters"))
    return out
