"""HFDataset: a Hugging Face `datasets` corpus as an LM corpus ("lm" batches).

Where the documents come from (`path`):
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`load_from_disk`);
- any other local folder: `load_dataset(folder, name, data_files=...)`, e.g. a folder laid out
  as `data/train-*.parquet`, `data/validation-*.parquet` (or jsonl, txt, csv, arrow);
- local data files (a file or a glob): `load_dataset(<builder by extension>, data_files=...)`,
  one split named "train";
- anything else is a dataset name on the Hugging Face Hub, `load_dataset(path, name, ...)`
  (also the packaged builders: path="parquet" with data_files=...). A path that starts like a
  file system path (/, ./, ../, ~) and does not exist is an error, never a Hub lookup.

Which documents (both modes): R = the first `max_docs` rows of `split` (all when null).
Validation is `val_split` (its first `val_docs` rows when set) if given; otherwise the first
`val_docs` rows of R when val_docs is set; otherwise a `val_fraction` hold-out; otherwise (0)
none. The hold-out differs by mode:
- non-streaming: row r of R is held out when u(r) < val_fraction, u(r) = splitmix64(r) / 2**64,
  a fixed hash of the row index (stable across runs, machines and seeds);
- streaming: the first ceil(val_fraction * |R|) rows, which needs |R| up front: from max_docs
  (counted at setup), or the split's row count in the dataset's metadata; when neither is
  known, set val_docs or val_split.
Rows whose text is empty or only whitespace are left out (after the split) and counted in
stats["skipped"]["blank"]; a null or non-string text is an error naming the row.

Non-streaming: the text column is tokenized with `Dataset.map(batched=True, num_proc=...)` into
a cache file under <cache_dir>/tokenized/ named by (data fingerprint, tokenizer fingerprint,
split), read back by the next run instead of tokenizing again; then the shared packer and the
seeded block permutation of `rizzrun.data.lm` (exact resume by construction).

Streaming (`streaming=True`, for corpora larger than the disk): nothing is downloaded,
tokenized or cached up front; setup reads only the validation rows (held-out ones, or
val_split), the first max_docs rows when max_docs is set (to count them), and the first
batch_size blocks (to check the stream). The training stream of epoch e is an `IterableDataset`
pipeline:
  documents: the split's shards (data files) in source order, or, when shuffle_buffer > 1 and
      there are several shards, in a permutation seeded by (seed, e); each shard's rows minus
      the held-out / beyond-max_docs ones;
  -> `map(batched=True)` tokenization on the fly (blank rows dropped)
  -> packing on the fly (`lm.iter_blocks`: the same blocks `pack_documents` cuts from the same
      documents in the same order; the tail of the epoch's stream is dropped)
  -> `shuffle(seed=seed, buffer_size=shuffle_buffer)` with `set_epoch(e)` (no shuffle when
      shuffle_buffer <= 1)
  -> `batch(batch_size, drop_last_batch=True)`.
Every epoch holds the same documents, hence the same number of tokens and blocks (only the
order changes), so the stream has a fixed number of batches per epoch P and global batch i is
batch i % P of epoch i // P. `train_batches(start)` re-creates epoch start // P and skips its
first start % P batches (the skipped batches are read, tokenized, packed and shuffled, never
returned: an exact resume costs at most one epoch of pipeline work, no model work). P is known
once one epoch has been streamed; it is then kept under <cache_dir>/streaming/ and reused by
later runs. While P is unknown, resume streams epoch 0 from its start (counting it, if `start`
lies beyond it). The order depends on `datasets`' shuffle, so resume with the same `datasets`
version. Validation is read in full at setup (`val_docs` caps it) and packed like the
non-streaming path. `train_texts()` (BPE training) yields the first TOKENIZER_DOCS training
documents in source order, not the whole corpus. `num_proc` has no effect when streaming.
"""

from __future__ import annotations

from typing import Literal

import atexit
import difflib
import glob
import hashlib
import itertools
import json
import math
import numbers
import os
import warnings
import weakref
from pathlib import Path

import numpy as np

from rizzrun.data.lm import PACKINGS, LMCorpus, _batch, _seed_for, encoder_of, is_blank, iter_blocks, pack_documents

FORMAT_VERSION = 1
# Streaming: how many training documents `train_texts()` yields (the BPE tokenizer's sample).
TOKENIZER_DOCS = 100_000
# Builders for local data files, by extension.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv", ".arrow": "arrow"}
_ROWS = 1000  # rows per batch when reading or tokenizing


# Streaming readers still open; closed before interpreter teardown, where the parquet reader
# would otherwise print an ignored exception.
_OPEN_READERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
    for reader in list(_OPEN_READERS):
        getattr(reader, "close", lambda: None)()


def row_units(n: int) -> np.ndarray:
    """u(r) = splitmix64(r) / 2**64 for rows r = 0..n-1: a fixed, well-mixed number in [0, 1)
    per row index (the non-streaming hold-out is the rows with u(r) < val_fraction)."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _plain(value):
    """OmegaConf containers (what Hydra passes) and tuples as plain dicts / lists / str."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value]


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or path in (".", "..") or os.path.isabs(path)


def _is_string_feature(feature) -> bool:
    dtype = getattr(feature, "dtype", None)
    return type(feature).__name__ == "Value" and dtype in ("string", "large_string")


def _gen_blocks(docs, eos_id, seq_len, tally):
    """Generator behind the streaming block dataset: packed blocks of the tokenized documents."""
    for block in iter_blocks((row["ids"] for row in docs), eos_id, seq_len, tally):
        yield {"ids": block}


def _iterable_from_generator(generator, gen_kwargs: dict, key: str, cache_dir: str):
    """`IterableDataset.from_generator`, with an explicit fingerprint (datasets would otherwise
    hash the arguments, pipeline included) and locks kept in our own cache folder."""
    try:
        from datasets.io.generator import GeneratorDatasetInputStream
    except ImportError:  # pragma: no cover - older/newer layouts
        from datasets import IterableDataset

        return IterableDataset.from_generator(generator, gen_kwargs=gen_kwargs)
    return GeneratorDatasetInputStream(generator=generator, gen_kwargs=gen_kwargs, streaming=True,
                                       cache_dir=cache_dir, fingerprint=key).read()


class HFDataset(LMCorpus):
    """A Hugging Face `datasets` corpus as an LM corpus ("lm" batches); see the module docstring.

    path: a save_to_disk folder, a local folder or data file(s) (a glob too), or a Hub name.
    name: the dataset configuration (load_dataset's `name`), if it has several.
    data_files: load_dataset's `data_files` (a pattern, a list, or {split: patterns}), for a
        folder, a packaged builder (path=parquet|json|text|csv) or a Hub dataset.
    split / val_split: the training split and, optionally, the validation split.
    val_fraction: without val_split or val_docs, the share of rows held out for validation.
    val_docs: hold out the first val_docs rows of the split (or cap val_split to its first
        val_docs rows).
    text_field: the column holding the text.
    streaming: stream the data instead of loading and tokenizing it up front.
    num_proc: worker processes for tokenization (non-streaming).
    shuffle_buffer: blocks in the streaming shuffle buffer (<= 1: stream order).
    max_docs: use only the first max_docs rows of the split.
    cache_dir: cache root (None: $RIZZRUN_CACHE or ~/.cache/rizzrun).
    packing: "concat" (documents joined by EOS) or "document" (each document starts its own
        padded row; non-streaming only): see rizzrun.data.lm.PACKINGS.
    """

    batch_kind = "lm"
    drop_blank = True
    _val_hint = " (val_split, val_docs or a larger val_fraction)"

    def __init__(
        self,
        path: str,
        name: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.01,
        val_docs: int | None = None,
        text_field: str = "text",
        data_files: str | list | dict | None = None,
        streaming: bool = False,
        num_proc: int | None = None,
        seq_len: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        shuffle_buffer: int = 10000,
        cache_dir: str | None = None,
        max_docs: int | None = None,
        packing: Literal["concat", "document"] = "concat",
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir)
        who = "HFDataset"
        if packing not in PACKINGS:
            raise ValueError(f"{who} packing={packing!r}: allowed: {', '.join(PACKINGS)}")
        if packing != "concat" and streaming:
            raise ValueError(f"{who} packing={packing!r}: streaming packs on the fly with packing='concat' only")
        self.packing = packing
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValueError(f"{who} path={path!r}: must be a local folder or file, or a Hub dataset name")
        for key, value in (("split", split), ("text_field", text_field)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{who} {key}={value!r}: must be a non-empty string")
        for key, value in (("name", name), ("val_split", val_split)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{who} {key}={value!r}: must be null or a non-empty string")
        if val_split is not None and val_split == split:
            raise ValueError(f"{who} val_split={val_split!r}: the same as split; validation would be "
                             f"training data. Pick another split, or leave val_split null to hold out rows")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
            raise ValueError(f"{who} val_fraction={val_fraction!r}: must be in [0, 1)")
        for key, value, low in (("val_docs", val_docs, 1), ("max_docs", max_docs, 1), ("num_proc", num_proc, 1)):
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if value is not None and (not integral or value < low):
                raise ValueError(f"{who} {key}={value!r}: must be null or an integer >= {low}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, numbers.Integral) or shuffle_buffer < 0:
            raise ValueError(f"{who} shuffle_buffer={shuffle_buffer!r}: must be an integer >= 0")
        if not isinstance(streaming, bool):
            raise ValueError(f"{who} streaming={streaming!r}: must be true or false")
        if val_split is None and val_docs is not None and max_docs is not None and val_docs >= max_docs:
            raise ValueError(f"{who} val_docs={val_docs}: holds out every one of the max_docs={max_docs} rows; "
                             f"need val_docs < max_docs")
        self.path = os.fspath(path)
        self.name = name
        self.split = split
        self.val_split = val_split
        self.val_fraction = float(val_fraction)
        self.val_docs = None if val_docs is None else int(val_docs)
        self.text_field = text_field
        self.data_files = _plain(data_files)
        self.streaming = streaming
        self.num_proc = None if num_proc is None else int(num_proc)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_docs = None if max_docs is None else int(max_docs)
        self._source = self._resolve_source()
        self._loaded: dict = {}  # split name -> Dataset / IterableDataset
        self._all_splits = None
        self._splits = None  # non-streaming: {"train": Dataset, "val": Dataset}
        self._rows: dict[str, int] = {}  # rows per split before blank rows are dropped
        self._fingerprint: str | None = None
        self._plan = None  # streaming: shards, row ranges, validation texts
        self._tokenizer = None
        self._n_blocks: int | None = None  # streaming: blocks per epoch, once known
        self._train_info: dict | None = None
        self._blank: dict[str, int] = {}

    # -- where the data is -----------------------------------------------------------------

    def _what(self, split: str | None = None) -> str:
        name = f" (name={self.name!r})" if self.name else ""
        return f"HFDataset {self.path!r}{name}" + (f" split {split!r}" if split else "")

    def _resolve_source(self) -> dict:
        path = self.path
        local = Path(path).expanduser()
        if local.is_dir():
            saved = any((local / f).is_file() for f in ("dataset_dict.json", "state.json"))
            if saved and (self.name is not None or self.data_files is not None):
                raise ValueError(f"{self._what()}: a save_to_disk folder has no configurations or data files; "
                                 f"leave name and data_files null")
            return {"kind": "disk" if saved else "folder", "root": local}
        files = sorted(glob.glob(os.path.expanduser(path))) if glob.has_magic(path) else (
            [str(local)] if local.is_file() else [])
        if files:
            if self.data_files is not None:
                raise ValueError(f"{self._what()}: data_files goes with a folder, a builder or a Hub name, "
                                 f"not with a path to files; put the files in path or in data_files")
            exts = {Path(f).suffix.lower() for f in files}
            builders = {BUILDERS.get(e) for e in exts}
            if None in builders or len(builders) != 1:
                raise ValueError(f"{self._what()}: cannot read files with extension(s) {sorted(exts)} together; "
                                 f"supported, one kind at a time: {', '.join(BUILDERS)}")
            return {"kind": "files", "files": [Path(f) for f in files], "builder": builders.pop()}
        if glob.has_magic(path):
            raise FileNotFoundError(f"{self._what()}: the pattern matches no file")
        if _looks_local(path):
            raise FileNotFoundError(f"{self._what()}: no such file or folder (a path starting with /, ./, ../ "
                                    f"or ~ is never looked up on the Hub)")
        return {"kind": "hub"}

    def _hf_cache(self) -> str:
        from rizzrun.paths import cache_root

        return str(cache_root(self.cache_dir) / "hf_datasets")

    def _load_all(self):
        """{split name: Dataset | IterableDataset | _DiskStream}; nothing is read yet in
        streaming mode."""
        if self._all_splits is not None:
            return self._all_splits
        from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

        src = self._source
        try:
            if src["kind"] == "disk":
                loaded = load_from_disk(str(src["root"]))
                if isinstance(loaded, Dataset):
                    loaded = {str(loaded.split) if loaded.split else "train": loaded}
                elif isinstance(loaded, DatasetDict):
                    loaded = dict(loaded)
                if self.streaming:
                    loaded = {k: _DiskStream(v) for k, v in loaded.items()}
            else:
                if src["kind"] == "files":
                    args = (src["builder"],)
                    kwargs = {"data_files": {"train": [str(f) for f in src["files"]]}}
                else:
                    args = (str(src["root"]) if src["kind"] == "folder" else self.path,)
                    kwargs = {"name": self.name, "data_files": self.data_files}
                loaded = dict(load_dataset(*args, **kwargs, streaming=self.streaming, cache_dir=self._hf_cache()))
        except Exception as err:  # noqa: BLE001 - loaders, network and the Hub fail in many types
            if src["kind"] == "hub":
                raise self._hub_error(err) from err
            cause = f" <- {type(err.__cause__).__name__}: {err.__cause__}" if err.__cause__ else ""
            empty = type(err).__name__ in ("StopIteration", "IndexError", "DatasetGenerationError", "EmptyDatasetError")
            note = "; `datasets` fails like this on an empty data file or split" if empty else ""
            raise ValueError(
                f"{self._what()}: `datasets` cannot load it ({type(err).__name__}: {err}{cause}){note}"
            ) from err
        self._all_splits = loaded
        return loaded

    def _hub_error(self, err: Exception) -> Exception:
        return ValueError(
            f"{self._what()}: not a local file or folder, so it was looked up as a dataset on the Hugging Face "
            f"Hub, which failed ({type(err).__name__}: {err}). Pass an existing local path, or a Hub name "
            f"with network access"
        )

    def _dataset(self, split: str):
        """The raw split, its text column checked: a Dataset (non-streaming) or a _DiskStream /
        _HubStream view (streaming)."""
        if split not in self._loaded:
            splits = self._load_all()
            if split not in splits:
                raise ValueError(f"{self._what()}: no split {split!r}; available splits: "
                                 f"{', '.join(map(repr, splits)) or 'none'}")
            ds = splits[split]
            if self.streaming and not isinstance(ds, _DiskStream):
                ds = _HubStream(ds)
            self._check_column(ds, split)
            self._loaded[split] = ds
        return self._loaded[split]

    def _check_column(self, ds, split: str) -> None:
        columns = ds.column_names if not self.streaming else ds.columns()
        field = self.text_field
        if columns is not None and field not in columns:
            close = difflib.get_close_matches(field, columns, n=1, cutoff=0.5) or [
                c for c in columns if c.lower() == field.lower()]
            hint = f"did you mean text_field={close[0]!r}? " if close else ""
            raise ValueError(f"{self._what(split)}: no column {field!r} (text_field); {hint}"
                             f"available columns: {', '.join(map(repr, columns))}")
        feature = (ds.features or {}).get(field) if not self.streaming else ds.feature(field)
        if feature is not None and not _is_string_feature(feature):
            first = ""
            if not self.streaming and len(ds):
                first = f" (row 0: {str(ds[0][field])[:60]!r})"
            raise ValueError(f"{self._what(split)}: column {field!r} holds {feature}, not strings{first}; "
                             f"text_field must name a string column")

    # -- fingerprint -----------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Hash of the source and of every option that changes the documents. Local data: every
        file's path, size and modification time (what `datasets` keys local files by); Hub data:
        the fingerprints `datasets` gives the loaded splits (non-streaming) or its builder hash,
        which follows the Hub revision (streaming)."""
        if self._fingerprint is None:
            src = self._source
            if src["kind"] in ("disk", "folder"):
                root = src["root"].resolve()
                files = sorted(p for p in root.rglob("*") if p.is_file()
                               and not any(part.startswith(".") for part in p.relative_to(root).parts))
                stats = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
                source = [str(root), stats]
            elif src["kind"] == "files":
                source = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in src["files"]]
            else:
                source = ["hub", self.path, self._hub_revision()]
            key = [
                "hf", FORMAT_VERSION, src["kind"], source, self.name, self.data_files, self.split, self.val_split,
                self.val_docs, None if self.val_split or self.val_docs else self.val_fraction, self.text_field,
                self.max_docs, self.streaming, TOKENIZER_DOCS if self.streaming else None,
            ]
            self._fingerprint = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()
        return self._fingerprint

    def _hub_revision(self):
        if not self.streaming:
            splits = [s for s in (self.split, self.val_split) if s]
            return [getattr(self._dataset(s), "_fingerprint", None) for s in splits]
        from datasets import load_dataset_builder

        try:
            builder = load_dataset_builder(self.path, self.name, data_files=self.data_files, cache_dir=self._hf_cache())
        except Exception as err:  # noqa: BLE001
            raise self._hub_error(err) from err
        return [builder.config_id, builder.hash]

    # -- non-streaming ---------------------------------------------------------------------

    def _text_rows(self, split: str, limit: int | None):
        """The split's text column as "text", its first `limit` rows; nulls are an error."""
        ds = self._dataset(split)
        n = len(ds) if limit is None else min(len(ds), limit)
        if n == 0:
            raise ValueError(f"{self._what(split)}: the split has no rows; pick a split with data "
                             f"(available: {', '.join(map(repr, self._load_all()))})")
        column = ds.data.column(self.text_field)
        if ds._indices is None:
            column = column.slice(0, n)
            if column.null_count:
                first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
                raise ValueError(f"{self._what(split)}: row {first} (0-based) has no text (null in "
                                 f"{self.text_field!r}); every row needs a string")
        else:  # a selection (e.g. a Dataset saved after .select): check row by row
            for start in range(0, n, _ROWS):
                for i, v in enumerate(ds[start:min(n, start + _ROWS)][self.text_field]):
                    if not isinstance(v, str):
                        raise ValueError(f"{self._what(split)}: row {start + i} (0-based) has no text (null in "
                                         f"{self.text_field!r}); every row needs a string")
        ds = ds.select_columns([self.text_field])
        if self.text_field != "text":
            ds = ds.rename_column(self.text_field, "text")
        return ds if n == len(ds) else ds.select(range(n)), n

    def _load(self) -> dict:
        if self._splits is not None:
            return self._splits
        train, n = self._text_rows(self.split, self.max_docs)
        splits = {}
        if self.val_split is not None:
            splits["val"], _ = self._text_rows(self.val_split, self.val_docs)
        elif self.val_docs is not None:
            k = min(self.val_docs, n)
            splits["val"], train = train.select(range(k)), train.select(range(k, n))
        elif self.val_fraction > 0:
            held = row_units(n) < self.val_fraction
            splits["val"] = train.select(np.flatnonzero(held), keep_in_memory=True)
            train = train.select(np.flatnonzero(~held), keep_in_memory=True)
        if len(train) == 0:
            raise ValueError(f"{self._what(self.split)}: no rows left for training after holding out "
                             f"{len(splits['val'])} for validation; lower val_docs / val_fraction or raise max_docs")
        splits["train"] = train
        self._rows = {k: len(v) for k, v in splits.items()}
        self._splits = {"train": splits["train"], **({"val": splits["val"]} if "val" in splits else {})}
        return self._splits

    def _split_datasets(self) -> dict:
        return self._load()

    # -- public API ------------------------------------------------------------------------

    def train_texts(self):
        """The training documents (blank ones left out), for tokenizer training. Streaming: the
        first TOKENIZER_DOCS of them in source order."""
        if self.streaming:
            plan = self._stream_plan()
            texts = (t for i in range(len(plan["shards"])) for t in self._shard_texts(plan, i))
            yield from itertools.islice((t for t in texts if not is_blank(t)), TOKENIZER_DOCS)
            return
        for batch in self._load()["train"].iter(batch_size=_ROWS):
            yield from (t for t in batch["text"] if not is_blank(t))

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        if not self.streaming:
            super().setup(tokenizer, cache_dir)
            self._blank = {s: self._rows[s] - self._split_stats[s]["documents"] for s in self._split_stats}
            return
        self._setup_streaming(tokenizer, cache_dir)

    @property
    def batches_per_epoch(self) -> int | None:
        """Training batches per epoch; streaming: None until one epoch has been streamed (here or,
        through the cache, in an earlier run)."""
        if not self.streaming:
            return super().batches_per_epoch
        self._require_setup()
        return None if self._n_blocks is None else self._n_blocks // self.batch_size

    def epoch_order(self, epoch: int):
        if self.streaming:
            raise NotImplementedError("HFDataset(streaming=True) shuffles with a buffer; there is no epoch permutation")
        return super().epoch_order(epoch)

    def train_batches(self, start: int = 0):
        if not self.streaming:
            yield from super().train_batches(start)
            return
        if int(start) != start or start < 0:
            raise ValueError(f"train_batches start={start!r}: must be an integer >= 0")
        self._require_setup()
        start = int(start)
        per_epoch = self.batches_per_epoch
        epoch, skip = (0, start) if per_epoch is None else divmod(start, per_epoch)
        while True:
            batches, tally = self._epoch_batches(epoch)
            it = iter(batches)
            _OPEN_READERS.add(it)
            try:
                for b in itertools.islice(it, skip, None):
                    yield _batch(torch_blocks(b["ids"]))
            finally:  # closed early (the run ended): close the readers now, not at interpreter exit
                getattr(it, "close", lambda: None)()
            if per_epoch is None:  # the first full epoch: now the epoch length is known
                self._epoch_done(tally)
                per_epoch = self.batches_per_epoch
                if skip >= per_epoch:
                    epoch, skip = divmod(start, per_epoch)
                    continue
            else:
                self._epoch_done(tally)
            epoch, skip = epoch + 1, 0

    @property
    def stats(self) -> dict:
        """As LMCorpus.stats, plus skipped["blank"] (rows with blank text). Streaming: "train"
        holds shards and rows, and the packing counts once an epoch has been streamed."""
        out = super().stats
        if self.streaming and self._plan is not None:
            out["train"] = {"streaming": True, "shards": len(self._plan["shards"]), **(self._train_info or {})}
        blank = sum(self._blank.values())
        if blank:
            out["skipped"]["blank"] = blank
        return out

    # -- streaming -------------------------------------------------------------------------

    def _stream_plan(self) -> dict:
        """Shards of the training split in source order, each with the range of its rows used for
        training ([lo, hi), hi None = to its end), and the held-out validation texts."""
        if self._plan is not None:
            return self._plan
        split = self.split
        stream = self._dataset(split)
        shards = stream.shards(self.text_field)
        lengths = stream.known_rows()
        counted: list[int] = []  # rows of each shard among the first `need` rows of the split
        total = None
        if self.max_docs is not None:
            counted = self._count_rows(shards, self.max_docs, split)
            total = sum(counted)
        elif lengths is not None:
            total = lengths
        if self.val_split is not None:
            n_val = 0
        elif self.val_docs is not None:
            n_val = self.val_docs
        elif self.val_fraction > 0:
            if total is None:
                raise ValueError(
                    f"{self._what(split)}: streaming holds out the first ceil(val_fraction x rows) rows, but the "
                    f"number of rows is not known without reading the whole split; set val_docs=N (hold out the "
                    f"first N rows), val_split=NAME, max_docs=N, or val_fraction=0 (no validation)")
            n_val = math.ceil(self.val_fraction * total)
        else:
            n_val = 0
        val_texts, taken = [], []
        if n_val:
            taken = self._count_rows(shards, n_val, split, collect=val_texts)
        if not (counted or taken):
            # Nothing read yet: make sure the split is not empty.
            probe = self._count_rows(shards, 1, split)
            if not sum(probe):
                raise ValueError(f"{self._what(split)}: the split has no rows; pick a split with data")
        elif sum(counted or taken) == 0:
            raise ValueError(f"{self._what(split)}: the split has no rows; pick a split with data")
        ranges = []
        for i in range(len(shards)):
            lo = taken[i] if i < len(taken) else 0
            if self.max_docs is None:
                hi = None
            else:  # shards past the first max_docs rows contribute nothing
                hi = counted[i] if i < len(counted) else 0
            ranges.append((lo, hi))
        if all(hi is not None and hi <= lo for lo, hi in ranges) or (total is not None and n_val >= total):
            raise ValueError(f"{self._what(split)}: no rows left for training after holding out {n_val} for "
                             f"validation; lower val_docs / val_fraction or raise max_docs")
        self._plan = {"shards": shards, "ranges": ranges, "val_texts": val_texts, "held_out": n_val}
        return self._plan

    def _count_rows(self, shards, limit: int, split: str, collect: list | None = None) -> list[int]:
        """Rows per shard among the first `limit` rows of the split (in shard order); the texts,
        checked, appended to `collect` when given."""
        counts, left, row0 = [], limit, 0
        for i, shard in enumerate(shards):
            if left == 0:
                break
            n = 0
            for batch in shard.take(left).iter(batch_size=_ROWS):
                texts = batch[self.text_field]
                if collect is not None:
                    self._check_texts(texts, split, i, n, global_row=row0 + n)
                    collect.extend(texts)
                n += len(texts)
            counts.append(n)
            left -= n
            row0 += n
        return counts

    def _check_texts(self, texts, split: str, shard: int | None, offset: int, global_row: int | None = None):
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                if global_row is not None:
                    where = f"row {global_row + k} (0-based)"
                else:
                    where = f"row {offset + k} (0-based) of shard {shard} (shards: the split's data files in order)"
                what = "null" if text is None else f"{type(text).__name__} {str(text)[:40]!r}"
                raise ValueError(f"{self._what(split)}: {where}: {self.text_field!r} is {what}, not a string; "
                                 f"every row needs a string")

    def _shard_texts(self, plan: dict, i: int):
        lo, hi = plan["ranges"][i]
        if hi is not None and hi <= lo:
            return
        shard = plan["shards"][i]
        shard = shard.skip(lo) if lo else shard
        shard = shard.take(hi - lo) if hi is not None else shard
        offset = lo
        for batch in shard.iter(batch_size=_ROWS):
            texts = batch[self.text_field]
            self._check_texts(texts, self.split, i, offset)
            offset += len(texts)
            yield from texts

    def _epoch_docs(self, epoch: int, tally: dict):
        """The tokenized training documents of `epoch` (an IterableDataset of {"ids"})."""
        from datasets import concatenate_datasets

        plan = self._stream_plan()
        shards, field = plan["shards"], self.text_field
        order = range(len(shards))
        if self.shuffle_buffer > 1 and len(shards) > 1:
            order = np.random.default_rng(_seed_for(self.seed, epoch)).permutation(len(shards)).tolist()
        encode = encoder_of(self._tokenizer)

        def tokenize(batch, indices, shard, offset):
            texts = batch[field]
            self._check_texts(texts, self.split, shard, offset + indices[0] if indices else offset)
            kept = [t for t in texts if not is_blank(t)]
            tally["blank"] = tally.get("blank", 0) + len(texts) - len(kept)
            tally["bytes"] = tally.get("bytes", 0) + sum(len(t.encode("utf-8")) for t in kept)
            return {"ids": encode(kept)}

        parts = []
        for i in order:
            lo, hi = plan["ranges"][i]
            if hi is not None and hi <= lo:
                continue
            ds = shards[i].skip(lo) if lo else shards[i]
            ds = ds.take(hi - lo) if hi is not None else ds
            parts.append(ds.map(tokenize, batched=True, batch_size=_ROWS, with_indices=True,
                                remove_columns=[field], fn_kwargs={"shard": i, "offset": lo}))
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)

    def _epoch_batches(self, epoch: int):
        """(IterableDataset of {"ids": list of batch_size blocks}, tally) for `epoch`; the tally
        fills in (documents, tokens, blocks, dropped_tokens, blank, bytes) as it is streamed."""
        tally: dict = {}
        docs = self._epoch_docs(epoch, tally)
        key = hashlib.sha256(f"{self._stream_key()}|epoch-{epoch}".encode()).hexdigest()[:32]
        blocks = _iterable_from_generator(
            _gen_blocks, {"docs": docs, "eos_id": self._tokenizer.eos_id, "seq_len": self.seq_len, "tally": tally},
            key, self._hf_cache())
        if self.shuffle_buffer > 1:
            # One source (the packer): no shard interleaving, which costs a thread hand-off per block.
            one = {"max_buffer_input_shards": 1} if "max_buffer_input_shards" in _SHUFFLE_ARGS else {}
            blocks = blocks.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer, **one)
        batches = blocks.batch(self.batch_size, drop_last_batch=True)
        batches.set_epoch(epoch)  # on the final dataset: each new IterableDataset starts at epoch 0
        return batches, tally

    def _stream_key(self) -> str:
        return hashlib.sha256(
            f"hf-stream-v{FORMAT_VERSION}|{self.fingerprint}|{self._tokenizer.fingerprint}|{self.seq_len}".encode()
        ).hexdigest()[:40]

    def _epoch_file(self) -> Path:
        from rizzrun.paths import cache_root

        return cache_root(self._setup_cache) / "streaming" / f"{self._stream_key()}.json"

    def _epoch_done(self, tally: dict) -> None:
        """Record what one full epoch held; every epoch holds the same blocks."""
        info = {k: tally.get(k, 0) for k in ("documents", "tokens", "blocks", "dropped_tokens", "bytes")}
        if self._n_blocks is not None and info["blocks"] != self._n_blocks:
            warnings.warn(f"{self._what(self.split)}: this epoch held {info['blocks']} blocks, the first "
                          f"{self._n_blocks}; the data changed while streaming, so resume positions are not "
                          f"exact", stacklevel=2)
        self._n_blocks = info["blocks"]
        self._train_info = info
        self._blank["train"] = tally.get("blank", 0)
        if info["blocks"] < self.batch_size:
            raise ValueError(f"{self._what(self.split)}: the training stream has {info['blocks']} blocks of seq_len "
                             f"{self.seq_len}, fewer than batch_size={self.batch_size}; add data or lower "
                             f"batch_size or seq_len")
        path = self._epoch_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**info, "blank": self._blank["train"]}) + "\n")
        tmp.replace(path)

    def _setup_streaming(self, tokenizer, cache_dir: str | None) -> None:
        self._tokenizer = tokenizer
        self._setup_cache = cache_dir or self.cache_dir
        plan = self._stream_plan()
        encode = encoder_of(tokenizer)
        blocks, split_stats, blank = {}, {}, {}
        if self.val_split is not None or plan["val_texts"]:
            if self.val_split is not None:
                stream = self._dataset(self.val_split)
                texts, rows = [], 0
                for batch in stream.rows(self.text_field, self.val_docs):
                    self._check_texts(batch, self.val_split, None, rows, global_row=rows)
                    texts.extend(batch)
                    rows += len(batch)
                if not texts:
                    raise ValueError(f"{self._what(self.val_split)}: the split has no rows; pick a split with data")
            else:
                texts = plan["val_texts"]
            kept = [t for t in texts if not is_blank(t)]
            blank["val"] = len(texts) - len(kept)
            ids = [x for start in range(0, len(kept), _ROWS) for x in encode(kept[start:start + _ROWS])]
            blocks["val"], info = pack_documents(ids, tokenizer.eos_id, self.seq_len)
            info["bytes"] = sum(len(t.encode("utf-8")) for t in kept)
            if info["blocks"] == 0:
                raise ValueError(
                    f"{self._what(self.val_split or self.split)}: the validation documents hold {info['tokens']} "
                    f"tokens ({info['documents']} documents joined with EOS), fewer than one block of seq_len + 1 = "
                    f"{self.seq_len + 1}; add data{self._val_hint} or lower seq_len")
            split_stats["val"] = info
        self._n_blocks, self._train_info = None, None
        saved = self._epoch_file()
        if saved.is_file():
            try:
                info = json.loads(saved.read_text())
                self._n_blocks = int(info["blocks"])
                blank["train"] = int(info.get("blank", 0))
                self._train_info = {k: info[k] for k in ("documents", "tokens", "blocks", "dropped_tokens", "bytes")}
            except (ValueError, KeyError, TypeError):
                self._n_blocks = None
        self._blocks, self._split_stats, self._blank = blocks, split_stats, blank
        if self._n_blocks is None:
            # Check that the stream holds at least one batch: read its first blocks, in order.
            tally: dict = {}
            docs = (row["ids"] for row in self._epoch_docs_in_order(tally))
            first = list(itertools.islice(iter_blocks(docs, tokenizer.eos_id, self.seq_len), self.batch_size))
            if len(first) < self.batch_size:
                raise ValueError(f"{self._what(self.split)}: the training stream has {len(first)} blocks of seq_len "
                                 f"{self.seq_len}, fewer than batch_size={self.batch_size}; add data or lower "
                                 f"batch_size or seq_len")
        elif self._n_blocks < self.batch_size:
            raise ValueError(f"{self._what(self.split)}: the training stream has {self._n_blocks} blocks of seq_len "
                             f"{self.seq_len}, fewer than batch_size={self.batch_size}; add data or lower "
                             f"batch_size or seq_len")

    def _epoch_docs_in_order(self, tally: dict):
        saved, self.shuffle_buffer = self.shuffle_buffer, 0
        try:
            return self._epoch_docs(0, tally)
        finally:
            self.shuffle_buffer = saved


def _shuffle_args() -> frozenset:
    import inspect

    from datasets import IterableDataset

    return frozenset(inspect.signature(IterableDataset.shuffle).parameters)


class _LazyArgs:
    def __contains__(self, name):
        global _SHUFFLE_ARGS
        _SHUFFLE_ARGS = _shuffle_args()
        return name in _SHUFFLE_ARGS


_SHUFFLE_ARGS = _LazyArgs()


def torch_blocks(rows):
    """A list of equal-length numpy blocks as one (n, seq_len + 1) tensor."""
    import torch

    return torch.from_numpy(np.stack(rows))


class _DiskStream:
    """Streaming view of a save_to_disk split: one shard per arrow file (memory-mapped)."""

    def __init__(self, ds):
        self.ds = ds

    def columns(self):
        return self.ds.column_names

    def feature(self, field):
        return self.ds.features.get(field)

    def known_rows(self):
        return len(self.ds)

    def shards(self, field):
        ds = self.ds.select_columns([field])
        n = max(1, min(len(ds), len(ds.cache_files)))
        it = ds.to_iterable_dataset(num_shards=n)
        return [it] if n == 1 else [it.shard(num_shards=n, index=i, contiguous=True) for i in range(n)]

    def rows(self, field, limit):
        n = len(self.ds) if limit is None else min(limit, len(self.ds))
        for start in range(0, n, _ROWS):
            yield self.ds[start:min(n, start + _ROWS)][field]


class _HubStream:
    """Streaming view of a `load_dataset(..., streaming=True)` split (local files or the Hub)."""

    def __init__(self, ds):
        self.ds = ds

    def columns(self):
        names = self.ds.column_names
        if names is None:  # features unknown until read: look at the first row
            first = next(iter(self.ds.take(1)), None)
            names = list(first) if first is not None else None
        return names

    def feature(self, field):
        return (self.ds.features or {}).get(field)

    def known_rows(self):
        info = (self.ds.info.splits or {}).get(str(self.ds.split)) if self.ds.info is not None else None
        return getattr(info, "num_examples", None) or None

    def shards(self, field):
        ds = self.ds.select_columns([field])
        n = ds.num_shards
        return [ds] if n == 1 else [ds.shard(num_shards=n, index=i, contiguous=True) for i in range(n)]

    def rows(self, field, limit):
        ds = self.ds.select_columns([field])
        ds = ds.take(limit) if limit is not None else ds
        for batch in ds.iter(batch_size=_ROWS):
            yield batch[field]
