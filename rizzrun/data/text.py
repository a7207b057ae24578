"""TextFiles: local .txt / .jsonl / .parquet files as an LM corpus, loaded through `datasets`.

Every row is checked before tokenization. A bad row is one whose text is empty or only
whitespace, holds bytes that are not UTF-8, lacks the text field (or has null there), has a
non-string value there, or (.jsonl) is not valid JSON. on_bad_row="error" stops at the first
one with the file, the row (0-based) and, for line-based files, the line (1-based);
on_bad_row="skip" drops them and counts them by reason in `stats["skipped"]`.

Rows are numbered as `datasets` numbers them: a .jsonl row is a non-blank line; a .txt row is a
line, a paragraph (text between blank lines) or the whole file, per `sample_by`. In .txt files
read by line or paragraph, blank lines are separators, not bad rows: they are dropped in both
modes and counted as skipped["blank_segment"].
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from rizzrun.data.lm import SPLIT_NAMES, LMCorpus, empty_splits_error, plural, stable_unit
from rizzrun.errors import InputError

SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".parquet")
SAMPLE_BY = ("document", "paragraph", "line")
ON_BAD_ROW = ("error", "skip")
FORMAT_VERSION = 1
_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape turns undecodable bytes into


class _Bad:
    """One bad row: where it is and what is wrong."""

    def __init__(self, row: int, reason: str, detail: str, line: int | None = None):
        self.row, self.reason, self.detail, self.line = row, reason, detail, line

    def message(self, path: Path) -> str:
        where = f"row {self.row} (0-based)" + (f", line {self.line} (1-based)" if self.line is not None else "")
        return f"{path}: {where}: {self.detail}"


def show(value) -> str:
    """A file list as the user types it on the command line: a, or [a,b]."""
    if value is None:
        return "null"
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return "[" + ",".join(os.fspath(v) for v in value) + "]"


def _expand(files, role: str) -> list[Path]:
    """The files of data.<role> (a path, a glob or a list of them), checked to exist."""
    if files is None:
        return []
    key = f"data.{role}={show(files)}"
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for f in list(files):
        f = os.fspath(f)
        matches = sorted(glob.glob(f)) if glob.has_magic(f) else [f]
        if not matches:
            raise InputError(f"{key}: the pattern {f!r} matches no file; name existing files")
        for m in matches:
            path = Path(m).expanduser()
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                raise InputError(f"{key}: {path} has an unsupported extension {path.suffix!r}; "
                                 f"supported: {', '.join(SUPPORTED_EXTENSIONS)}")
            if not path.is_file():
                raise InputError(f"{key}: {path} does not exist or is not a file; name existing files")
            out.append(path)
    if not out and role == "train_files":
        raise InputError(f"{key}: no files given; pass a path, a glob or a list of them")
    return out


def _is_string(arrow_type) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with open(path, "rb") as f:
        try:
            while chunk := f.read(1 << 24):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _scan_strings(column: pa.ChunkedArray, field: str):
    """Check a string column row by row: (indices of good rows, bad rows)."""
    good, bad, row0 = [], [], 0
    for chunk in column.chunks:
        try:
            values = chunk.to_pylist()
        except (UnicodeDecodeError, pa.ArrowInvalid):
            values = []
            for b in chunk.cast(pa.binary()).to_pylist():
                try:
                    values.append(None if b is None else b.decode("utf-8"))
                except UnicodeDecodeError as err:
                    values.append(err)
        for i, v in enumerate(values):
            row = row0 + i
            if v is None:
                bad.append(_Bad(row, "missing_field", f"field {field!r} is missing or null"))
            elif isinstance(v, UnicodeDecodeError):
                detail = f"text is not valid UTF-8 (byte 0x{v.object[v.start]:02x} at byte {v.start} of the text)"
                bad.append(_Bad(row, "non_utf8", detail))
            elif not v.strip():
                bad.append(_Bad(row, "empty", f"text in field {field!r} is empty or only whitespace"))
            else:
                good.append(row)
        row0 += len(chunk)
    return good, bad


def _txt_rows(raw: bytes, sample_by: str) -> list[tuple[str, int]]:
    """Split a .txt file the way `datasets`' text loader does, keeping undecodable bytes as
    surrogates: [(row text, first line (1-based))]."""
    text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
    if sample_by == "document":
        return [(text, 1)]
    rows, line = [], 1
    if sample_by == "line":
        for part in text.split("\n")[: -1 if text.endswith("\n") else None]:
            rows.append((part, line))
            line += 1
        return rows
    for part in text.split("\n\n"):
        if part:  # datasets drops empty paragraphs (runs of 4+ newlines) without a row
            rows.append((part, line))
        line += part.count("\n") + 2
    return rows


class TextFiles(LMCorpus):
    """Local text files as an LM corpus ("lm" batches).

    train_files, val_files: a path, a glob, or a list of them (.txt, .jsonl, .parquet).
    val_fraction: without val_files, this share of training rows (by hash of file name and
        row) becomes the validation split; 0 means no validation. Ignored with val_files.
    text_field: the column holding the text (.jsonl, .parquet).
    sample_by: for .txt, one document per "document" (file), "paragraph" or "line".
    on_bad_row: "error" (default) or "skip"; see the module docstring.
    cache_dir: cache root (None: $RIZZRUN_CACHE or ~/.cache/rizzrun).
    """

    batch_kind = "lm"

    def __init__(
        self,
        train_files,
        val_files=None,
        val_fraction: float = 0.05,
        text_field: str = "text",
        sample_by: str = "document",
        seq_len: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        on_bad_row: str = "error",
        cache_dir: str | None = None,
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir)
        if sample_by not in SAMPLE_BY:
            raise InputError(f"data.sample_by={sample_by!r}: valid values are {', '.join(SAMPLE_BY)}")
        if on_bad_row not in ON_BAD_ROW:
            raise InputError(f"data.on_bad_row={on_bad_row!r}: valid values are {', '.join(ON_BAD_ROW)}")
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"data.val_fraction={val_fraction!r}: must be in [0, 1)")
        if not isinstance(text_field, str) or not text_field:
            raise InputError(f"data.text_field={text_field!r}: must be a non-empty column name")
        self._files_arg = {"train": train_files, "val": val_files}  # as given, for messages
        self.train_files = _expand(train_files, "train_files")
        self.val_files = _expand(val_files, "val_files")
        self.val_fraction = float(val_fraction)
        self.text_field = text_field
        self.sample_by = sample_by
        self.on_bad_row = on_bad_row
        self.skipped_examples: list[str] = []  # the first few skipped rows, for the run log
        self._splits = None

    @property
    def fingerprint(self) -> str:
        """Hash of the files (absolute path, size, modification time, as `datasets` keys
        local files) and of every option that changes the documents."""

        def describe(paths):
            return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]

        key = [
            "textfiles", FORMAT_VERSION, describe(self.train_files), describe(self.val_files),
            self.text_field, self.sample_by, self.on_bad_row,
            None if self.val_files else self.val_fraction,
        ]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    # -- loading ---------------------------------------------------------------------------

    def _hf_cache(self) -> str:
        from rizzrun.paths import cache_root

        return str(cache_root(self.cache_dir) / "hf_datasets")

    def _load_txt(self, path: Path):
        from datasets import Dataset, load_dataset

        blank_ok = self.sample_by != "document"
        if _is_utf8(path):
            ds = load_dataset("text", data_files=str(path), sample_by=self.sample_by, split="train",
                              cache_dir=self._hf_cache())
            good, bad = _scan_strings(ds.data.column("text"), "text")
            # Decoded text has no nulls and no bad bytes: every bad row here is a blank one.
            blank = len(bad) if blank_ok else 0
            bad = [] if blank_ok else [_Bad(b.row, "empty", "the file is empty or only whitespace") for b in bad]
            return (ds if len(good) == len(ds) else ds.select(good)), good, bad, blank
        # Some bytes are not UTF-8: datasets would fail without naming a row, so split by hand.
        rows = _txt_rows(path.read_bytes(), self.sample_by)
        good, texts, bad, blank = [], [], [], 0
        for row, (text, line) in enumerate(rows):
            m = _SURROGATE.search(text)
            if m:
                byte = ord(m.group()) - 0xDC00
                bad.append(_Bad(row, "non_utf8", f"byte 0x{byte:02x} is not valid UTF-8",
                                line=line + text.count("\n", 0, m.start())))
            elif not text.strip():
                if blank_ok:
                    blank += 1
                else:
                    bad.append(_Bad(row, "empty", "the file is empty or only whitespace", line=line))
            else:
                good.append(row)
                texts.append(text)
        return Dataset.from_dict({"text": texts}), good, bad, blank

    def _load_jsonl(self, path: Path):
        from datasets import load_dataset

        field = self.text_field
        if _is_utf8(path):
            from datasets.utils import logging as hf_logging

            # The loader logs its own failure at error level; we diagnose it ourselves below.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity(hf_logging.CRITICAL)
            try:
                ds = load_dataset("json", data_files=str(path), split="train", cache_dir=self._hf_cache())
            except Exception:  # noqa: BLE001 - any loader failure is diagnosed line by line below
                ds = None
            finally:
                hf_logging.set_verbosity(verbosity)
            if ds is not None and field in ds.column_names and _is_string(ds.data.column(field).type):
                good, bad = _scan_strings(ds.data.column(field), field)
                if not bad:
                    ds = ds.select_columns([field])
                    return (ds.rename_column(field, "text") if field != "text" else ds), good, [], 0
        # Something is wrong in this file: read it line by line to say exactly where.
        return self._jsonl_by_line(path)

    def _jsonl_by_line(self, path: Path):
        from datasets import Dataset

        field, good, texts, bad, row = self.text_field, [], [], [], 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines are not rows (pyarrow skips them too)
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as err:
                    detail = f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not valid UTF-8"
                    bad.append(_Bad(row, "non_utf8", detail, line_no))
                except ValueError as err:
                    bad.append(_Bad(row, "invalid_json", f"not valid JSON ({err})", line_no))
                else:
                    value = obj.get(field) if isinstance(obj, dict) else None
                    if not isinstance(obj, dict):
                        detail = f"expected a JSON object with field {field!r}, got {type(obj).__name__}"
                        bad.append(_Bad(row, "missing_field", detail, line_no))
                    elif value is None:
                        what = "null" if field in obj else f"missing (keys: {', '.join(map(repr, obj)) or 'none'})"
                        bad.append(_Bad(row, "missing_field", f"field {field!r} is {what}", line_no))
                    elif not isinstance(value, str):
                        detail = f"field {field!r} is not a string but {type(value).__name__} {json.dumps(value)[:40]}"
                        bad.append(_Bad(row, "non_string", detail, line_no))
                    elif not value.strip():
                        bad.append(_Bad(row, "empty", f"field {field!r} is empty or only whitespace", line_no))
                    else:
                        good.append(row)
                        texts.append(value)
                row += 1
        return Dataset.from_dict({"text": texts}), good, bad, 0

    def _load_parquet(self, path: Path):
        from datasets import Dataset, load_dataset

        field = self.text_field
        ds = load_dataset("parquet", data_files=str(path), split="train", cache_dir=self._hf_cache())
        if field not in ds.column_names:
            bad = [_Bad(r, "missing_field", f"field {field!r} is missing; the file's columns are {ds.column_names}")
                   for r in range(len(ds))]
            return Dataset.from_dict({"text": []}), [], bad, 0
        column = ds.data.column(field)
        if not _is_string(column.type):
            nulls = column.is_null().to_pylist()
            bad = [_Bad(r, "missing_field", f"field {field!r} is null") if n else
                   _Bad(r, "non_string", f"field {field!r} has type {column.type}, not string")
                   for r, n in enumerate(nulls)]
            return Dataset.from_dict({"text": []}), [], bad, 0
        good, bad = _scan_strings(column, field)
        if any(b.reason == "non_utf8" for b in bad):
            texts = column.cast(pa.binary()).to_pylist()
            return Dataset.from_dict({"text": [texts[r].decode("utf-8") for r in good]}), good, bad, 0
        ds = ds.select_columns([field])
        ds = ds.rename_column(field, "text") if field != "text" else ds
        return (ds if not bad else ds.select(good)), good, bad, 0

    def _load(self):
        """Load, check and split every file once."""
        from datasets import Value, concatenate_datasets
        from datasets.exceptions import DatasetGenerationError

        if self._splits is not None:
            return self._splits
        loaders = {".txt": self._load_txt, ".jsonl": self._load_jsonl, ".parquet": self._load_parquet}
        self._bad_rows = {"train": 0, "val": 0}
        skipped: Counter = Counter()
        examples: list[str] = []
        parts = {"train": [], "val": []}
        for role, files in (("train", self.train_files), ("val", self.val_files)):
            for path in files:
                try:
                    ds, rows, bad, blank = loaders[path.suffix.lower()](path)
                except (OSError, pa.ArrowException, DatasetGenerationError) as err:
                    raise InputError(
                        f"data.{role}_files={show(self._files_arg[role])}: cannot read {path} "
                        f"({type(err).__name__}: {' '.join(str(err).split())}); fix the file or leave it out"
                    ) from err
                if bad and self.on_bad_row == "error":
                    more = f" ({len(bad) - 1} more bad rows in this file)" if len(bad) > 1 else ""
                    column = (" or set data.text_field to the field that holds the text,"
                              if bad[0].reason == "missing_field" else "")
                    raise InputError(
                        f"{bad[0].message(path)}{more}. Fix the data,{column} or set data.on_bad_row=skip to "
                        f"drop bad rows and count them"
                    )
                skipped.update(b.reason for b in bad)
                self._bad_rows[role] += len(bad)
                if blank:
                    skipped["blank_segment"] += blank
                examples.extend(b.message(path) for b in bad[: max(0, 10 - len(examples))])
                if ds.features["text"] != Value("string"):
                    ds = ds.cast_column("text", Value("string"))
                if role == "val" or self.val_files or self.val_fraction == 0:
                    parts[role].append(ds)
                    continue
                to_val = [i for i, r in enumerate(rows) if stable_unit(f"{path.name}:{r}") < self.val_fraction]
                if to_val:
                    val_set = set(to_val)
                    parts["val"].append(ds.select(to_val))
                    parts["train"].append(ds.select([i for i in range(len(rows)) if i not in val_set]))
                else:
                    parts["train"].append(ds)
        splits = {}
        for role in ("train", "val"):
            if role == "val" and not self.val_files and self.val_fraction == 0:
                continue
            nonempty = [p for p in parts[role] if len(p)]
            if nonempty:
                splits[role] = concatenate_datasets(nonempty)
            else:
                from datasets import Dataset, Features

                splits[role] = Dataset.from_dict({"text": []}, features=Features({"text": Value("string")}))
        self._skipped = {k: skipped[k] for k in sorted(skipped)}
        self.skipped_examples = examples
        self._splits = splits
        return splits

    def _empty_documents(self, role: str, splits: dict) -> str:
        """Why split `role` holds no document, naming the key that decides it."""
        skipped = self._bad_rows[role]
        note = f"; {plural(skipped, 'bad row')} skipped (data.on_bad_row=skip)" if skipped else ""
        total = sum(len(d) for d in splits.values())
        held_out = not self.val_files and self.val_fraction > 0
        if role == "train" and held_out and total:
            detail = f"all {plural(total, 'document')} held out for validation"
            setting = f"data.val_fraction={self.val_fraction}"
            fix = "lower data.val_fraction or set data.val_files=PATH"
        elif role == "val" and held_out:
            detail = f"0 of the {plural(total, 'document')} held out"
            setting, fix = self._split_origin(role)
        else:
            detail = f"0 documents{note}"
            setting, fix = self._split_origin(role)
        return f"{setting}: the {SPLIT_NAMES[role]} split is empty ({detail}): {fix}"

    def _split_origin(self, split: str) -> tuple[str, str]:
        if split == "train":
            return f"data.train_files={show(self._files_arg['train'])}", "add documents"
        if self.val_files:
            return (f"data.val_files={show(self._files_arg['val'])}",
                    "add documents, or set data.val_files=null to hold out data.val_fraction of the training documents")
        return (f"data.val_fraction={self.val_fraction}",
                "raise data.val_fraction, set data.val_files=PATH, or set data.val_fraction=0 for no validation")

    def _split_datasets(self) -> dict:
        """The splits, each holding at least one document (else one error naming every empty one)."""
        splits = self._load()
        problems = [self._empty_documents(role, splits) for role in splits if len(splits[role]) == 0]
        if problems:
            raise empty_splits_error(problems)
        return splits

    def train_texts(self):
        for batch in self._load()["train"].iter(batch_size=1000):
            yield from batch["text"]
