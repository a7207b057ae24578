"""PreferencePairs (`data=preference`): (prompt, chosen, rejected) rows from local files, a
save_to_disk folder or a `datasets` Hub name, as `preference` batches (rizzrun.data.pairs).

Where the rows come from (`data.path`), as HFDataset resolves it (rizzrun.data.hf_source): a
.jsonl / .json / .parquet file, a glob or a list of such files (one split, "train"), a folder
written by `save_to_disk`, any other local folder `datasets` can load, or a Hub name. A path that
starts like a file system path (/, ./, ../, ~) and does not exist is an error, never a Hub lookup.

Which rows: the first `max_pairs` rows of `split`. Validation is `val_split` when given; else
row r of `split` is held out when stable_unit("<source name>|<name>|<split>:<r>") < val_fraction,
the source name being the file names (or folder name, or Hub name): it does not depend on the
files' contents, so editing a file moves no other row between the splits; val_fraction=0: no
validation.

Every row is checked before tokenization (rizzrun.data.pairs.normalize_row): a field that is
null or missing, not a string (plain rows) or not a list of {"role", "content"} messages (chat
rows), or an empty prompt makes a bad row. on_bad_row="error" stops at the first one with the
dataset, the split and the row (0-based); "skip" drops them and counts them by reason in
stats[split]["skipped"] and stats["skipped"]. A missing column is always an error, naming the
closest column.
"""

from __future__ import annotations

import difflib
import numbers
from collections import Counter
from typing import Literal

from rizzrun.data import hf_source
from rizzrun.data.hf_fingerprint import fingerprint
from rizzrun.data.lm import plural, stable_unit
from rizzrun.data.pairs import FIELDS, FORMATS, ON_BAD_ROW, PairData, good_rows, normalize_row, rows_dataset
from rizzrun.errors import InputError

__all__ = ["PreferencePairs"]

FORMAT_VERSION = 1


def _show(path) -> str:
    return path if isinstance(path, str) else "[" + ",".join(map(str, path)) + "]"


class PreferencePairs(PairData):
    """Preference pairs from files or a `datasets` dataset; see the module docstring and
    rizzrun.data.pairs for tokenization, truncation and batches.

    path: a .jsonl / .json / .parquet file, a glob or a list of files, a save_to_disk folder, a
        local folder, or a Hub dataset name. name: the dataset configuration (Hub / folder).
    split / val_split: the training split and, optionally, the validation split.
    val_fraction: without val_split, the share of rows held out (by a stable hash of the row).
    prompt_field, chosen_field, rejected_field: the columns holding the three parts.
    format: "auto" (chat when the prompt is a message list), "plain" or "chat".
    max_pairs: use only the first max_pairs rows of `split`.
    on_bad_row: "error" or "skip" (see the module docstring).
    max_length, max_prompt_length, truncation: rizzrun.data.pairs.
    batch_size, seed, cache_dir: as every data component.
    """

    batch_kind = "preference"

    def __init__(
        self,
        path: str | list,
        name: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.05,
        prompt_field: str = "prompt",
        chosen_field: str = "chosen",
        rejected_field: str = "rejected",
        format: Literal["auto", "plain", "chat"] = "auto",
        max_pairs: int | None = None,
        on_bad_row: Literal["error", "skip"] = "error",
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        truncation: Literal["keep_start", "keep_end"] = "keep_start",
        batch_size: int = 16,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir, max_length=max_length,
                         max_prompt_length=max_prompt_length, truncation=truncation, format=format)
        path = hf_source.plain(path)
        if isinstance(path, list):
            if not path or not all(isinstance(p, str) and p for p in path):
                raise InputError(f"data.path={path!r}: a list must name one or more files")
        elif not isinstance(path, str) or not path:
            raise InputError(f"data.path={path!r}: must be a local file, glob, list of files or folder, "
                             f"or a Hub dataset name")
        hf_source.check_split_args(split, name, val_split, val_fraction, {"prompt_field": prompt_field,
                                                                            "chosen_field": chosen_field,
                                                                            "rejected_field": rejected_field})
        if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, numbers.Integral)
                                      or max_pairs < 1):
            raise InputError(f"data.max_pairs={max_pairs!r}: must be null or an integer >= 1")
        if on_bad_row not in ON_BAD_ROW:
            raise InputError(f"data.on_bad_row={on_bad_row!r}: allowed: {', '.join(ON_BAD_ROW)}")
        assert format in FORMATS  # checked by PairData
        self.path, self.name, self.split, self.val_split = path, name, split, val_split
        self.val_fraction = float(val_fraction)
        self.fields = {"prompt": prompt_field, "chosen": chosen_field, "rejected": rejected_field}
        self.max_pairs = None if max_pairs is None else int(max_pairs)
        self.on_bad_row = on_bad_row
        self._source = self._resolve()
        self._all = None
        self._raw = None
        self._key = None

    # -- where the data is -----------------------------------------------------------------

    def _what(self, split: str | None = None) -> str:
        name = f" (name={self.name!r})" if self.name else ""
        return f"PreferencePairs {_show(self.path)!r}{name}" + (f" split {split!r}" if split else "")

    def _resolve(self) -> dict:
        if isinstance(self.path, str):
            return hf_source.resolve(self.path, self.name, None, self._what)
        files, builders = [], set()
        for entry in self.path:
            source = hf_source.resolve(entry, self.name, None, self._what)
            if source["kind"] != "files":
                raise InputError(f"{self._what()}: {entry!r} is not a data file; a list in data.path names "
                                 f"files (.jsonl, .json, .parquet) or globs of them")
            files += source["files"]
            builders.add(source["builder"])
        if len(builders) != 1:
            raise InputError(f"{self._what()}: the files have different formats ({', '.join(sorted(builders))}); "
                             f"give files of one kind")
        return {"kind": "files", "files": files, "builder": builders.pop()}

    def _hf_cache(self) -> str:
        from rizzrun.paths import cache_root

        return str(cache_root(self.cache_dir) / "hf_datasets")

    def _splits(self) -> dict:
        if self._all is None:
            path = self.path if isinstance(self.path, str) else self.path[0]
            self._all = hf_source.load_splits(self._source, path, self.name, None, False, self._hf_cache(),
                                              self._what)
        return self._all

    def _dataset(self, split: str):
        splits = self._splits()
        if split not in splits:
            key = "data.val_split" if split == self.val_split else "data.split"
            raise InputError(f"{self._what()}: no split {split!r}; available splits: "
                             f"{', '.join(map(repr, splits)) or 'none'}; set {key} to one of them")
        ds = splits[split]
        columns = ds.column_names
        for part, field in self.fields.items():
            if field not in columns:
                close = difflib.get_close_matches(field, columns, n=1, cutoff=0.5) or [
                    c for c in columns if c.lower() == field.lower()]
                hint = f"did you mean data.{part}_field={close[0]!r}? " if close else ""
                raise InputError(f"{self._what(split)}: no column {field!r} (data.{part}_field); {hint}"
                                 f"available columns: {', '.join(map(repr, columns))}")
        return ds

    def _source_name(self) -> str:
        """What the hold-out hash names the source by (not its contents; module docstring)."""
        if self._source["kind"] == "files":
            return ",".join(p.name for p in self._source["files"])
        if self._source["kind"] in ("disk", "folder"):
            return self._source["root"].resolve().name
        return self.path

    # -- PairData hooks --------------------------------------------------------------------

    def _data_key(self) -> str:
        if self._key is None:
            options = ["preference", FORMAT_VERSION, self.name, self.split, self.val_split,
                       None if self.val_split else self.val_fraction, self.fields, self.format, self.max_pairs,
                       self.on_bad_row]
            path = self.path if isinstance(self.path, str) else _show(self.path)
            self._key = fingerprint(self._source, path, self._hub_revision, options)
        return self._key

    def _hub_revision(self):
        return [getattr(self._dataset(s), "_fingerprint", None) for s in (self.split, self.val_split) if s]

    def _rows(self, split: str, limit: int | None) -> tuple[list, list, Counter, list[str]]:
        """(normalized row tuples, source row indices, bad rows by reason, examples) of `split`."""
        ds = self._dataset(split)
        n = len(ds) if limit is None else min(len(ds), limit)
        if n == 0:
            raise InputError(f"{self._what(split)}: the split has no rows; pick a split with data")
        columns = list(dict.fromkeys(self.fields.values()))
        data = ds.select_columns(columns)[:n]
        parsed, bad, examples = good_rows(
            n, lambda r: normalize_row(*(data[self.fields[f]][r] for f in FIELDS), self.format, self.fields),
            self._what(split), self.on_bad_row, " set the data.*_field keys to the columns that hold the pair,")
        return [row for _, row in parsed], [r for r, _ in parsed], bad, examples

    def _raw_parts(self) -> dict:
        if self._raw is not None:
            return self._raw
        rows, index, bad, examples = self._rows(self.split, self.max_pairs)
        parts = {"train": (rows, index)}
        self._skipped = {"train": bad}
        if self.val_split is not None:
            vrows, vindex, vbad, vexamples = self._rows(self.val_split, None)
            parts["val"] = (vrows, vindex)
            self._skipped["val"] = vbad
            examples += vexamples
        elif self.val_fraction > 0:
            name = f"{self._source_name()}|{self.name}|{self.split}"
            held = [stable_unit(f"{name}:{r}") < self.val_fraction for r in index]
            parts["val"] = ([x for x, h in zip(rows, held) if h], [r for r, h in zip(index, held) if h])
            parts["train"] = ([x for x, h in zip(rows, held) if not h], [r for r, h in zip(index, held) if not h])
            self._skipped["val"] = Counter()
        problems = []
        held_out = self.val_split is None
        total = sum(len(p[0]) for p in parts.values()) if held_out else None
        for part, (prs, _) in parts.items():
            if prs:
                continue
            what = {"train": "training", "val": "validation"}[part]
            if part == "train" and held_out and total:
                problems.append(f"data.val_fraction={self.val_fraction}: the training split is empty (all "
                                f"{plural(total, 'pair')} held out for validation): lower data.val_fraction or set "
                                f"data.val_split=NAME")
                continue
            setting, fix = self._split_origin(part)
            skipped = sum(self._skipped[part].values())
            detail = (f"0 of the {plural(total, 'pair')} held out" if part == "val" and held_out
                      else "0 pairs" + (f"; {plural(skipped, 'bad row')} skipped" if skipped else ""))
            problems.append(f"{setting}: the {what} split is empty ({detail}): {fix}")
        if problems:
            raise InputError("; ".join(problems))
        self.skipped_examples = examples[:10]
        self._raw = {part: rows_dataset(*zip(*prs), index) for part, (prs, index) in parts.items()}
        return self._raw

    def _split_origin(self, part: str) -> tuple[str, str]:
        if part == "train":
            return (f"data.path={_show(self.path)} (data.split={self.split})",
                    "add pairs, pick another data.split, or fix the bad rows")
        if self.val_split is not None:
            return f"data.val_split={self.val_split}", "add pairs, or pick another data.val_split"
        return (f"data.val_fraction={self.val_fraction}",
                "raise data.val_fraction, set data.val_split=NAME, or set data.val_fraction=0 for no validation")
