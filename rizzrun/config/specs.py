"""Component rules kept beside their components, found from the `_target_` (no list of targets).

The validator binds every component node to its target's signature, which is generic. What
only one component knows (Llama's size presets, a Hugging Face folder's config.json, a tokenizer
folder's vocabulary, whether a data path exists) lives in a torch-free *spec* module beside the
component: a target defined in module `pkg.mod` has its spec in `pkg/mod_spec.py`
(`rizzrun.models.llama.Llama` -> `rizzrun.models.llama_spec`). The module that *defines* the
target counts, wherever the name is re-exported from. The spec is located on disk and imported
only if that file exists; the component module itself is never imported (it may import torch).
Importing a spec runs its package's `__init__`, which rizzrun's packages keep torch-free (lazy).

A spec module defines any of these functions (each optional):

    check(node, path) -> list[str]           problems of this node, one line each (`path.key=VALUE: ...`)
    max_seq_len(node) -> Length | None       a model: the longest sequence it takes, and where from
    vocab_size(node) -> Vocab | int | None   a model: the ids it embeds when its `vocab_size` is null
                                             (Vocab); a tokenizer: the ids it produces (int)
    prompt_tokens(node, text) -> int | None  a tokenizer: the ids `text` encodes to; None when that
                                             needs the tokenizer loaded
    dims(node) -> dict | None                a model: its dimensions (`rizzrun show` prints them)
    check_with_model(node, path, dims) -> list[str]
                                             problems between this node and the model's `dims` (a
                                             token mixer's head layout, block size, budget, ...)

and, as a module attribute, `RANGES = {"ClassName": {"key": ((">=", 1), ...)}}`: the numeric
ranges of each component's arguments (checked for every option, like the generic type checks).

`node` is the component's config as plain Python, interpolations resolved. A value the validator
could not read (`???`, a broken interpolation) arrives as a marker that is reported already:
`readable(value)` is False for it, and a spec skips it.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType
from typing import Any, NamedTuple

SPEC_SUFFIX = "_spec"


class _Marker:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


MISSING = _Marker("???")  # a mandatory value nobody set
BROKEN = _Marker("<unresolvable>")  # an interpolation that failed (already reported)


def readable(value: Any) -> bool:
    """False for a value the validator could not read (reported already)."""
    return value is not MISSING and value is not BROKEN


class Length(NamedTuple):
    """A model's longest sequence: `value` tokens, set by `source` (a key as the user types it, or
    a file); `fix` says how to make it longer ('' when it cannot be)."""

    value: int
    source: str
    fix: str = ""


class Vocab(NamedTuple):
    """A model's vocabulary when it does not come from its `vocab_size` key: `value` ids, blamed on
    `key` (`model.from_pretrained='/m'`), read from `origin`; `fix` says what to change."""

    value: int
    key: str
    origin: str
    fix: str


@lru_cache(maxsize=64)
def spec_module(defining_module: str) -> ModuleType | None:
    """The spec of the components defined in `defining_module`, or None when it has none."""
    from rizzrun.config.signatures import find_module

    name = defining_module + SPEC_SUFFIX
    found = find_module(name)
    if found is None or found.file is None:
        return None
    return importlib.import_module(name)


def spec_of(target: str) -> ModuleType | None:
    """The spec of `_target_` `target` (read from source, not imported), or None."""
    from rizzrun.config.signatures import TargetNotFound, resolve

    try:
        found = resolve(target)
    except (TargetNotFound, OSError, SyntaxError):
        return None
    return spec_module(found.module) if found.module else None


def ranges(target) -> dict[str, tuple[tuple[str, float], ...]]:
    """{key: ((op, bound), ...)} of a resolved `signatures.Target`, from its spec's `RANGES`."""
    spec = spec_module(target.module) if target.module else None
    return getattr(spec, "RANGES", {}).get(target.target.rsplit(".", 1)[-1], {})


def hook(spec: ModuleType | None, name: str):
    """The spec's function `name`, or None."""
    return getattr(spec, name, None) if spec is not None else None
