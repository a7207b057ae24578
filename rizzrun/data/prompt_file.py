"""PromptFile (`data=prompt_file`): prompts (with per-row columns, e.g. a reference answer) from
local files, a save_to_disk folder or a `datasets` Hub name, as `prompts` batches
(rizzrun.data.prompts.PromptData) for on-policy objectives.

Where the rows come from (`data.path`), as PreferencePairs and HFDataset resolve it
(rizzrun.data.hf_source): a .jsonl / .json / .parquet file or a glob of them (one split,
"train"), a folder written by `save_to_disk`, any other local folder `datasets` can load, or a
Hub name. A path that starts like a file system path (/, ./, ../, ~) and does not exist is an
error, never a Hub lookup.

Which rows: the first `max_prompts` rows of `split`. Validation is `val_split` (all its rows) when
given; else a row of `split` is held out when stable_unit(prompt) < val_fraction, the prompt being
the string, or the JSON of its message list (keys sorted): the rule depends on the prompt alone,
so a prompt repeated in the file is never on both sides, and no other row moves when a file is
edited; val_fraction=0: no validation. Rows: {"prompt": the prompt, **columns}; `columns` lists
the fields kept (None: every field but the prompt's), which the reward functions receive by name.

A prompt is a string (plain) or a list of {"role", "content"} messages (chat: rendered by
PromptData's setup with the tokenizer's chat template, tokenizer=hf). A row whose prompt is
missing, null, neither a string nor a message list, or a malformed message list is a bad row:
on_bad_row="error" stops at the first one, naming the file, the split, the row (0-based) and the
field; "skip" drops them and counts them by reason in stats[split]["skipped"] (the bad rows of
data.split count under "train", before the hold-out; those of data.val_split under "val").
A missing column is an error naming the closest column. No default rewards: rewards
must name them.
"""

from __future__ import annotations

import difflib
import json
import numbers
from collections import Counter
from typing import Literal

from rizzrun.data import hf_source
from rizzrun.data.hf_fingerprint import fingerprint
from rizzrun.data.lm import plural, stable_unit
from rizzrun.data.pairs import ON_BAD_ROW, BadRow, _messages, good_rows
from rizzrun.data.prompts import PromptData
from rizzrun.errors import InputError

__all__ = ["PromptFile", "RESERVED"]

FORMAT_VERSION = 1
# Row keys PromptData uses itself, and the reward functions' own argument names.
RESERVED = ("prompt", "prompt_text", "ids", "prompts", "completions")


def _prompt(value, field: str):
    """A source row's prompt as a string or a list of message dicts; BadRow otherwise."""
    if value is None:
        raise BadRow("missing_field", f"field {field!r} (prompt) is missing or null")
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return _messages(value, "prompt", field, one_ok=False)
    shown = json.dumps(value, default=str)[:40]
    raise BadRow("non_string", f"field {field!r} (prompt) is {type(value).__name__} {shown}, not a string or a "
                               f"list of {{'role', 'content'}} messages")


def hold_out_key(prompt) -> str:
    """What the hold-out hashes: the prompt string, or its message list as JSON (keys sorted)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)


class PromptFile(PromptData):
    """Prompts from files or a `datasets` dataset (module docstring).

    path: a .jsonl / .json / .parquet file or a glob of them, a save_to_disk folder, a local folder,
        or a Hub dataset name. name: the dataset configuration (Hub / folder).
    split / val_split: the training split and, optionally, the validation split.
    val_fraction: without val_split, the share of prompts held out (by a stable hash of the prompt).
    prompt_field: the column holding the prompt. columns: the fields kept for the rewards (None:
        all but the prompt's).
    max_prompts: use only the first max_prompts rows of `split`.
    on_bad_row: "error" or "skip" (module docstring).
    batch_size, seed, max_prompt_length, cache_dir: rizzrun.data.prompts.PromptData (cache_dir
        also holds `datasets`' cache of files it reads).
    """

    batch_kind = "prompts"

    def __init__(
        self,
        path: str,
        name: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.05,
        prompt_field: str = "prompt",
        columns: list[str] | None = None,
        max_prompts: int | None = None,
        on_bad_row: Literal["error", "skip"] = "error",
        batch_size: int = 16,
        seed: int = 0,
        max_prompt_length: int | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir, max_prompt_length=max_prompt_length)
        path, columns = hf_source.plain(path), hf_source.plain(columns)
        if not isinstance(path, str) or not path:
            raise InputError(f"data.path={path!r}: must be a local file, glob or folder, or a Hub dataset name")
        hf_source.check_split_args(split, name, val_split, val_fraction, {"prompt_field": prompt_field})
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
                raise InputError(f"data.columns={columns!r}: must be null (every field) or a list of field names, "
                                 f"e.g. data.columns=[answer]")
            if len(set(columns)) != len(columns) or prompt_field in columns:
                twice = sorted({c for c in columns if columns.count(c) > 1 or c == prompt_field})
                raise InputError(f"data.columns={columns!r}: names {', '.join(map(repr, twice))} twice (or the "
                                 f"prompt, data.prompt_field={prompt_field!r}); list each other field once")
            clash = [c for c in columns if c in RESERVED]
            if clash:
                raise InputError(f"data.columns={columns!r}: {clash[0]!r} is a name rizzrun uses itself "
                                 f"({', '.join(RESERVED)}); rename that field in the data")
        if max_prompts is not None and (isinstance(max_prompts, bool) or not isinstance(max_prompts, numbers.Integral)
                                        or max_prompts < 1):
            raise InputError(f"data.max_prompts={max_prompts!r}: must be null or an integer >= 1")
        if on_bad_row not in ON_BAD_ROW:
            raise InputError(f"data.on_bad_row={on_bad_row!r}: allowed: {', '.join(ON_BAD_ROW)}")
        self.path, self.name, self.split, self.val_split = path, name, split, val_split
        self.val_fraction, self.prompt_field = float(val_fraction), prompt_field
        self.keep = columns
        self.max_prompts = None if max_prompts is None else int(max_prompts)
        self.on_bad_row = on_bad_row
        self._source = hf_source.resolve(path, name, None, self._what)
        self._all = None
        self._cached = None
        self._key = None
        self._skipped: dict[str, Counter] = {}
        self.skipped_examples: list[str] = []

    # -- where the data is -----------------------------------------------------------------

    def _what(self, split: str | None = None) -> str:
        name = f" (name={self.name!r})" if self.name else ""
        return f"PromptFile {self.path!r}{name}" + (f" split {split!r}" if split else "")

    def _hf_cache(self) -> str:
        from rizzrun.paths import cache_root

        return str(cache_root(self.cache_dir) / "hf_datasets")

    def _splits(self) -> dict:
        if self._all is None:
            self._all = hf_source.load_splits(self._source, self.path, self.name, None, False, self._hf_cache(),
                                              self._what)
        return self._all

    def _missing(self, split: str, field: str, key: str, columns: list[str]) -> InputError:
        close = difflib.get_close_matches(field, columns, n=1, cutoff=0.5) or [
            c for c in columns if c.lower() == field.lower()]
        hint = f"did you mean {key}={close[0]!r}? " if close else ""
        return InputError(f"{self._what(split)}: no column {field!r} ({key}); {hint}available columns: "
                          f"{', '.join(map(repr, columns))}")

    def _dataset(self, split: str):
        splits = self._splits()
        if split not in splits:
            key = "data.val_split" if split == self.val_split else "data.split"
            raise InputError(f"{self._what()}: no split {split!r}; available splits: "
                             f"{', '.join(map(repr, splits)) or 'none'}; set {key} to one of them")
        ds = splits[split]
        columns = ds.column_names
        if self.prompt_field not in columns:
            raise self._missing(split, self.prompt_field, "data.prompt_field", columns)
        for field in self.keep or ():
            if field not in columns:
                raise self._missing(split, field, f"a field of data.columns={self.keep}", columns)
        return ds

    def _read(self, split: str, limit: int | None) -> tuple[list[dict], Counter, list[str]]:
        """(rows, bad rows by reason, examples) of `split`'s first `limit` rows."""
        ds = self._dataset(split)
        n = len(ds) if limit is None else min(len(ds), limit)
        if n == 0:
            raise InputError(f"{self._what(split)}: the split has no rows; pick a split with data")
        keep = self.keep if self.keep is not None else [c for c in ds.column_names if c != self.prompt_field]
        clash = [c for c in keep if c in RESERVED]
        if clash:
            raise InputError(f"{self._what(split)}: field {clash[0]!r} is a name rizzrun uses itself "
                             f"({', '.join(RESERVED)}); list the fields to keep in data.columns without it, "
                             f"or rename it in the data")
        data = ds.select_columns([self.prompt_field, *keep])[:n]
        parsed, bad, examples = good_rows(
            n, lambda r: {"prompt": _prompt(data[self.prompt_field][r], self.prompt_field), **{c: data[c][r] for c in keep}},
            self._what(split), self.on_bad_row, " set data.prompt_field to the column holding the prompts,")
        return [row for _, row in parsed], bad, examples

    # -- PromptData hooks ------------------------------------------------------------------

    def _rows(self) -> dict[str, list[dict]]:
        if self._cached is not None:
            return self._cached
        rows, bad, examples = self._read(self.split, self.max_prompts)
        self._skipped = {"train": bad}
        if self.val_split is not None:
            val, vbad, vexamples = self._read(self.val_split, None)
            self._skipped["val"] = vbad
            examples += vexamples
            parts = {"train": rows, "val": val}
        elif self.val_fraction > 0:
            held = [stable_unit(hold_out_key(r["prompt"])) < self.val_fraction for r in rows]
            parts = {"train": [r for r, h in zip(rows, held) if not h], "val": [r for r, h in zip(rows, held) if h]}
            if rows and not parts["train"]:
                raise InputError(f"data.val_fraction={self.val_fraction}: the training split is empty (all "
                                 f"{plural(len(rows), 'prompt')} held out for validation): lower data.val_fraction "
                                 f"or set data.val_split=NAME")
            if rows and not parts["val"]:
                raise InputError(f"data.val_fraction={self.val_fraction}: the validation split is empty (0 of the "
                                 f"{plural(len(rows), 'prompt')} held out): raise data.val_fraction, set "
                                 f"data.val_split=NAME, or set data.val_fraction=0 for no validation")
        else:
            parts = {"train": rows}
        self.skipped_examples = examples[:10]
        self._cached = parts
        return parts

    def _split_origin(self, split: str) -> tuple[str, str]:
        skipped = sum(self._skipped.get(split, Counter()).values())
        note = f"; {plural(skipped, 'bad row')} skipped" if skipped else ""
        if split == "train":
            return (f"data.path={self.path} (data.split={self.split}{note})",
                    "add prompts, pick another data.split, or fix the bad rows")
        if self.val_split is not None:
            return f"data.val_split={self.val_split}{note}", "add prompts, or pick another data.val_split"
        return f"data.val_fraction={self.val_fraction}", "raise data.val_fraction, or set data.val_split=NAME"

    @property
    def fingerprint(self) -> str:
        if self._key is None:
            options = ["prompt-file", FORMAT_VERSION, self.name, self.split, self.val_split,
                       None if self.val_split else self.val_fraction, self.prompt_field, self.keep, self.max_prompts,
                       self.on_bad_row]
            self._key = fingerprint(self._source, self.path, self._hub_revision, options)
        return self._key

    def _hub_revision(self):
        return [getattr(self._dataset(s), "_fingerprint", None) for s in (self.split, self.val_split) if s]

    def train_texts(self):
        """The training prompts (a chat prompt's message contents) and any string columns."""
        for row in self._rows()["train"]:
            prompt = row["prompt"]
            yield from ([prompt] if isinstance(prompt, str) else [m["content"] for m in prompt])
            yield from (v for k, v in row.items() if k != "prompt" and isinstance(v, str))

    @property
    def stats(self) -> dict:
        """PromptData's stats, plus stats[split]["skipped"]: bad rows dropped by reason (module docstring)."""
        out = super().stats
        for split, bad in self._skipped.items():
            if split in out:
                out[split]["skipped"] = dict(bad)
        return out
