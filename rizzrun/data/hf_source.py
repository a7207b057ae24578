"""Where an HFDataset's documents come from: `data.path` resolved to a save_to_disk folder, a
local folder, local data files or a Hub name; its splits loaded; its text column checked.

- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`load_from_disk`);
- any other local folder: `load_dataset(folder, name, data_files=...)`;
- local data files (a file or a glob): `load_dataset(<builder by extension>, data_files=...)`,
  one split named "train";
- anything else is a dataset name on the Hugging Face Hub. A path that starts like a file
  system path (/, ./, ../, ~) and does not exist is an error, never a Hub lookup.
"""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path
from typing import Callable

from rizzrun.errors import InputError

# Builders for local data files, by extension.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv", ".arrow": "arrow"}
ROWS = 1000  # rows per batch when reading or tokenizing

What = Callable[..., str]  # what(split=None) -> "HFDataset 'path' split 'x'", for messages


def plain(value):
    """OmegaConf containers (what Hydra passes) and tuples as plain dicts / lists / str."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    return [plain(v) for v in value]


def check_split_args(split, name, val_split, val_fraction, fields: dict) -> None:
    """The arguments every `datasets` source of rizzrun takes (HFDataset, PreferencePairs): `split`
    and the `fields` ({key: value}) non-empty strings, `name`/`val_split` null or one, `val_split`
    not `split`, `val_fraction` in [0, 1); InputError naming data.KEY otherwise."""
    import numbers

    for key, value in (("split", split), *fields.items()):
        if not isinstance(value, str) or not value:
            raise InputError(f"data.{key}={value!r}: must be a non-empty string")
    for key, value in (("name", name), ("val_split", val_split)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f"data.{key}={value!r}: must be null or a non-empty string")
    if val_split is not None and val_split == split:
        raise InputError(f"data.val_split={val_split!r}: the same as split (data.split); validation would be "
                         f"training data. Pick another split, or leave data.val_split null to hold out rows")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
        raise InputError(f"data.val_fraction={val_fraction!r}: must be in [0, 1)")


def looks_local(path: str) -> bool:
    """A path starting with /, ./, ../ or ~ names the file system, never the Hub."""
    return path.startswith(("/", "./", "../", "~")) or path in (".", "..") or os.path.isabs(path)


def is_string_feature(feature) -> bool:
    dtype = getattr(feature, "dtype", None)
    return type(feature).__name__ == "Value" and dtype in ("string", "large_string")


def resolve(path: str, name: str | None, data_files, what: What) -> dict:
    """{"kind": "disk" | "folder", "root"} or {"kind": "files", "files", "builder"} or
    {"kind": "hub"}; nothing is read but the file system's listing."""
    local = Path(path).expanduser()
    if local.is_dir():
        saved = any((local / f).is_file() for f in ("dataset_dict.json", "state.json"))
        if saved and (name is not None or data_files is not None):
            raise InputError(f"{what()}: a save_to_disk folder has no configurations or data files; "
                             f"leave data.name and data.data_files null")
        return {"kind": "disk" if saved else "folder", "root": local}
    files = sorted(glob.glob(os.path.expanduser(path))) if glob.has_magic(path) else (
        [str(local)] if local.is_file() else [])
    if files:
        if data_files is not None:
            raise InputError(f"{what()}: data.data_files goes with a folder, a builder or a Hub name, "
                             f"not with a path to files; put the files in data.path or in data.data_files")
        exts = {Path(f).suffix.lower() for f in files}
        builders = {BUILDERS.get(e) for e in exts}
        if None in builders or len(builders) != 1:
            raise InputError(f"{what()}: cannot read files with extension(s) {sorted(exts)} together; "
                             f"supported, one kind at a time: {', '.join(BUILDERS)}")
        return {"kind": "files", "files": [Path(f) for f in files], "builder": builders.pop()}
    if glob.has_magic(path):
        raise InputError(f"{what()}: the pattern matches no file; data.path must name existing files")
    if looks_local(path):
        raise InputError(f"{what()}: no such file or folder (a path starting with /, ./, ../ "
                         f"or ~ is never looked up on the Hub); data.path must be an existing local path")
    return {"kind": "hub"}


def hub_error(what: What, err: Exception) -> InputError:
    return InputError(
        f"{what()}: not a local file or folder, so it was looked up as a dataset on the Hugging Face "
        f"Hub, which failed ({type(err).__name__}: {one_line(err)}). Pass an existing local path as data.path, "
        f"or a Hub name with network access"
    )


def one_line(err: BaseException) -> str:
    """An exception's text on one line (library messages often span several)."""
    return " ".join(str(err).split())


def load_splits(source: dict, path: str, name: str | None, data_files, streaming: bool, cache_dir: str,
                what: What) -> dict:
    """{split name: Dataset | IterableDataset}, or DiskStream views of a save_to_disk folder
    when streaming; nothing is read yet in streaming mode."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    from rizzrun.data.hf_views import DiskStream

    try:
        if source["kind"] == "disk":
            loaded = load_from_disk(str(source["root"]))
            if isinstance(loaded, Dataset):
                loaded = {str(loaded.split) if loaded.split else "train": loaded}
            elif isinstance(loaded, DatasetDict):
                loaded = dict(loaded)
            if streaming:
                loaded = {k: DiskStream(v) for k, v in loaded.items()}
            return loaded
        if source["kind"] == "files":
            args = (source["builder"],)
            kwargs = {"data_files": {"train": [str(f) for f in source["files"]]}}
        else:
            args = (str(source["root"]) if source["kind"] == "folder" else path,)
            kwargs = {"name": name, "data_files": data_files}
        return dict(load_dataset(*args, **kwargs, streaming=streaming, cache_dir=cache_dir))
    except Exception as err:  # noqa: BLE001 - loaders, network and the Hub fail in many types
        if source["kind"] == "hub":
            raise hub_error(what, err) from err
        cause = f" <- {type(err.__cause__).__name__}: {one_line(err.__cause__)}" if err.__cause__ else ""
        empty = type(err).__name__ in ("StopIteration", "IndexError", "DatasetGenerationError", "EmptyDatasetError")
        note = "; `datasets` fails like this on an empty data file or split" if empty else ""
        raise InputError(
            f"{what()}: `datasets` cannot load it ({type(err).__name__}: {one_line(err)}{cause}){note}; "
            f"fix the files at data.path"
        ) from err


def check_column(ds, split: str, field: str, streaming: bool, what: What) -> None:
    """The text column exists and holds strings (as far as the split's features tell)."""
    columns = ds.column_names if not streaming else ds.columns()
    if columns is not None and field not in columns:
        close = difflib.get_close_matches(field, columns, n=1, cutoff=0.5) or [
            c for c in columns if c.lower() == field.lower()]
        hint = f"did you mean data.text_field={close[0]!r}? " if close else ""
        raise InputError(f"{what(split)}: no column {field!r} (data.text_field); {hint}"
                         f"available columns: {', '.join(map(repr, columns))}")
    feature = (ds.features or {}).get(field) if not streaming else ds.feature(field)
    if feature is not None and not is_string_feature(feature):
        first = ""
        if not streaming and len(ds):
            first = f" (row 0: {str(ds[0][field])[:60]!r})"
        raise InputError(f"{what(split)}: column {field!r} holds {feature}, not strings{first}; "
                         f"data.text_field must name a string column")


def check_texts(texts, field: str, split: str, what: What, shard: int | None, offset: int,
                global_row: int | None = None) -> None:
    """Every value of `texts` is a string; the first that is not is an error naming its row."""
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            if global_row is not None:
                where = f"row {global_row + k} (0-based)"
            else:
                where = f"row {offset + k} (0-based) of shard {shard} (shards: the split's data files in order)"
            kind = "null" if text is None else f"{type(text).__name__} {str(text)[:40]!r}"
            raise InputError(f"{what(split)}: {where}: {field!r} is {kind}, not a string; every row needs "
                             f"a string: fix the data, or set data.text_field to a string column")


def text_rows(ds, split: str, field: str, limit: int | None, what: What, available) -> tuple:
    """(the split's first `limit` rows, its text column as "text"; the row count); a null text is
    an error naming the row."""
    n = len(ds) if limit is None else min(len(ds), limit)
    if n == 0:
        raise InputError(f"{what(split)}: the split has no rows; pick a split with data "
                         f"(available: {', '.join(map(repr, available))})")
    column = ds.data.column(field)
    if ds._indices is None:
        column = column.slice(0, n)
        if column.null_count:
            first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise InputError(f"{what(split)}: row {first} (0-based) has no text (null in {field!r}); "
                             f"every row needs a string: fix the data or set data.text_field")
    else:  # a selection (e.g. a Dataset saved after .select): check row by row
        for start in range(0, n, ROWS):
            for i, v in enumerate(ds[start:min(n, start + ROWS)][field]):
                if not isinstance(v, str):
                    raise InputError(f"{what(split)}: row {start + i} (0-based) has no text (null in {field!r}); "
                                     f"every row needs a string: fix the data or set data.text_field")
    ds = ds.select_columns([field])
    if field != "text":
        ds = ds.rename_column(field, "text")
    return (ds if n == len(ds) else ds.select(range(n))), n
