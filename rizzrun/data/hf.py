"""HFDataset: a Hugging Face `datasets` corpus as an LM corpus ("lm" batches).

Where the documents come from (`data.path`: a save_to_disk folder, a local folder, local data
files or a Hub name): `rizzrun.data.hf_source`.

Which documents (both modes): R = the first `max_docs` rows of `split`. Validation is
`val_split` (its first `val_docs` rows when set) if given; otherwise the first `val_docs` rows
of R when val_docs is set; otherwise a `val_fraction` hold-out (`rizzrun.data.holdout`);
otherwise (0) none. Rows whose text is empty or only whitespace are left out (after the split)
and counted in stats["skipped"]["blank"]; a null or non-string text is an error naming the row.

Non-streaming: the text column is tokenized with `Dataset.map(batched=True, num_proc=...)` into
a cache file under <cache_dir>/tokenized/ named by (data fingerprint, tokenizer fingerprint,
split), read back by the next run instead of tokenizing again; then the shared packer and the
seeded block permutation of `rizzrun.data.lm` (exact resume by construction).

Streaming (`streaming=True`, for corpora larger than the disk): nothing is downloaded,
tokenized or cached up front; setup reads only the validation rows (held-out ones, or
val_split), the first max_docs rows when max_docs is set (to count them), and the first
batch_size blocks (to check the stream). The training pipeline and its resume bookkeeping:
`rizzrun.data.hf_stream`. Every epoch holds the same documents, hence the same number of
blocks, so the stream has a fixed number of batches per epoch P and global batch i is batch
i % P of epoch i // P. `train_batches(start)` re-creates epoch start // P and skips its first
start % P batches (read, tokenized, packed and shuffled, never returned: an exact resume costs
at most one epoch of pipeline work, no model work). P is known once one epoch has been
streamed; it is then kept under <cache_dir>/streaming/ and reused by later runs. While P is
unknown, resume streams epoch 0 from its start (counting it, if `start` lies beyond it). The
order depends on `datasets`' shuffle, so resume with the same `datasets` version. Validation is
read in full at setup (`val_docs` caps it) and packed like the non-streaming path.
`train_texts()` (BPE training) yields the first TOKENIZER_DOCS training documents in source
order, not the whole corpus. `num_proc` has no effect when streaming.
"""

from __future__ import annotations

import hashlib
import itertools
import numbers
import os
import warnings
from typing import Literal

from rizzrun.data import hf_source
from rizzrun.data.hf_fingerprint import FORMAT_VERSION, fingerprint
from rizzrun.data.hf_stream import COUNTS, RECORD_VERSION, EpochRecord, StreamPlan, epoch_batches
from rizzrun.data.hf_views import DiskStream, HubStream, OpenReaders, torch_blocks
from rizzrun.data.holdout import held_out_rows, row_units
from rizzrun.data.lm import (
    LMCorpus,
    _batch,
    empty_splits_error,
    encoder_of,
    is_blank,
    iter_blocks,
    pack_documents,
    plural,
)
from rizzrun.errors import InputError

__all__ = ["HFDataset", "TOKENIZER_DOCS", "row_units"]

# Streaming: how many training documents `train_texts()` yields (the BPE tokenizer's sample).
TOKENIZER_DOCS = 100_000
_ROWS = hf_source.ROWS


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
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        if packing != "concat" and streaming:
            raise InputError(f"data.packing={packing!r}: streaming packs on the fly with data.packing=concat only; "
                             f"set data.packing=concat or data.streaming=false")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise InputError(f"data.path={path!r}: must be a local folder or file, or a Hub dataset name")
        hf_source.check_split_args(split, name, val_split, val_fraction, {"text_field": text_field})
        for key, value, low in (("val_docs", val_docs, 1), ("max_docs", max_docs, 1), ("num_proc", num_proc, 1)):
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if value is not None and (not integral or value < low):
                raise InputError(f"data.{key}={value!r}: must be null or an integer >= {low}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, numbers.Integral) or shuffle_buffer < 0:
            raise InputError(f"data.shuffle_buffer={shuffle_buffer!r}: must be an integer >= 0")
        if not isinstance(streaming, bool):
            raise InputError(f"data.streaming={streaming!r}: must be true or false")
        if val_split is None and val_docs is not None and max_docs is not None and val_docs >= max_docs:
            raise InputError(f"data.val_docs={val_docs}: holds out every one of the data.max_docs={max_docs} rows; "
                             f"need data.val_docs < data.max_docs")
        self.path = os.fspath(path)
        self.name = name
        self.split = split
        self.val_split = val_split
        self.val_fraction = float(val_fraction)
        self.val_docs = None if val_docs is None else int(val_docs)
        self.text_field = text_field
        self.data_files = hf_source.plain(data_files)
        self.streaming = streaming
        self.num_proc = None if num_proc is None else int(num_proc)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_docs = None if max_docs is None else int(max_docs)
        self._source = hf_source.resolve(self.path, self.name, self.data_files, self._what)
        self._loaded: dict = {}  # split name -> Dataset / IterableDataset
        self._all_splits = None
        self._splits = None  # non-streaming: {"train": Dataset, "val": Dataset}
        self._rows: dict[str, int] = {}  # rows per split before blank rows are dropped
        self._fingerprint: str | None = None
        self._plan: StreamPlan | None = None  # streaming: shards, row ranges, validation texts
        self._tokenizer = None
        self._n_blocks: int | None = None  # streaming: blocks per epoch, once known
        self._train_info: dict | None = None
        self._blank: dict[str, int] = {}
        self._readers = OpenReaders(self)  # streaming iterators still open
        self._setup_cache = cache_dir

    # -- where the data is -----------------------------------------------------------------

    def _what(self, split: str | None = None) -> str:
        name = f" (name={self.name!r})" if self.name else ""
        return f"HFDataset {self.path!r}{name}" + (f" split {split!r}" if split else "")

    def _hf_cache(self) -> str:
        from rizzrun.paths import cache_root

        return str(cache_root(self.cache_dir) / "hf_datasets")

    def _load_all(self) -> dict:
        """{split name: Dataset | IterableDataset | DiskStream}; nothing is read yet in
        streaming mode."""
        if self._all_splits is None:
            self._all_splits = hf_source.load_splits(self._source, self.path, self.name, self.data_files,
                                                     self.streaming, self._hf_cache(), self._what)
        return self._all_splits

    def _dataset(self, split: str):
        """The raw split, its text column checked: a Dataset (non-streaming) or a DiskStream /
        HubStream view (streaming)."""
        if split not in self._loaded:
            splits = self._load_all()
            if split not in splits:
                key = "data.val_split" if split == self.val_split and split != self.split else "data.split"
                raise InputError(f"{self._what()}: no split {split!r}; available splits: "
                                 f"{', '.join(map(repr, splits)) or 'none'}; set {key} to one of them")
            ds = splits[split]
            if self.streaming and not isinstance(ds, DiskStream):
                ds = HubStream(ds)
            hf_source.check_column(ds, split, self.text_field, self.streaming, self._what)
            self._loaded[split] = ds
        return self._loaded[split]

    # -- fingerprint -----------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Hash of the source and of every option that changes the documents
        (rizzrun.data.hf_fingerprint)."""
        if self._fingerprint is None:
            options = [
                self.name, self.data_files, self.split, self.val_split, self.val_docs,
                None if self.val_split or self.val_docs else self.val_fraction, self.text_field,
                self.max_docs, self.streaming, TOKENIZER_DOCS if self.streaming else None,
            ]
            self._fingerprint = fingerprint(self._source, self.path, self._hub_revision, options)
        return self._fingerprint

    def _hub_revision(self):
        if not self.streaming:
            splits = [s for s in (self.split, self.val_split) if s]
            return [getattr(self._dataset(s), "_fingerprint", None) for s in splits]
        from datasets import load_dataset_builder

        try:
            builder = load_dataset_builder(self.path, self.name, data_files=self.data_files, cache_dir=self._hf_cache())
        except Exception as err:  # noqa: BLE001
            raise hf_source.hub_error(self._what, err) from err
        return [builder.config_id, builder.hash]

    # -- non-streaming ---------------------------------------------------------------------

    def _text_rows(self, split: str, limit: int | None):
        return hf_source.text_rows(self._dataset(split), split, self.text_field, limit, self._what, self._load_all())

    def _load(self) -> dict:
        if self._splits is not None:
            return self._splits
        train, n = self._text_rows(self.split, self.max_docs)
        splits = {}
        if self.val_split is not None:
            splits["val"], _ = self._text_rows(self.val_split, self.val_docs)
        else:
            rows = held_out_rows(n, self.val_docs, self.val_fraction)
            if rows is not None:
                splits["val"] = train.select(rows[1], keep_in_memory=True)
                train = train.select(rows[0], keep_in_memory=True)
        problems = []
        if len(train) == 0:
            key = (f"data.val_docs={self.val_docs}" if self.val_docs is not None
                   else f"data.val_fraction={self.val_fraction}")
            problems.append(f"{key}: the training split is empty (all {plural(n, 'row')} of {self._what(self.split)} "
                            f"held out for validation): lower it, or raise data.max_docs")
        if "val" in splits and len(splits["val"]) == 0:
            setting, fix = self._split_origin("val")
            problems.append(f"{setting}: the validation split is empty (0 of the {plural(n, 'row')} of "
                            f"{self._what(self.split)} held out): {fix}")
        if problems:
            raise empty_splits_error(problems)
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
            texts = self._stream_plan().texts()
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
        return None if self._n_blocks is None else self._n_blocks // self.train_batch_size

    @property
    def train_batch_size(self) -> int:
        """Blocks per training batch: batch_size, or every block of an epoch that holds fewer
        (streaming: batch_size until one epoch's length is known, which setup learns whenever the
        stream holds fewer than batch_size blocks)."""
        if not self.streaming:
            return super().train_batch_size
        self._require_setup()
        return self.batch_size if self._n_blocks is None else min(self.batch_size, self._n_blocks)

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
            self._readers.add(it)
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
            out["train"] = {"streaming": True, "shards": len(self._plan.shards), **(self._train_info or {})}
        blank = sum(self._blank.values())
        if blank:
            out["skipped"]["blank"] = blank
        return out

    # -- streaming -------------------------------------------------------------------------

    def _stream_plan(self) -> StreamPlan:
        if self._plan is None:
            self._plan = StreamPlan(self._dataset(self.split), field=self.text_field, split=self.split,
                                    what=self._what, max_docs=self.max_docs, val_split=self.val_split,
                                    val_docs=self.val_docs, val_fraction=self.val_fraction)
        return self._plan

    def _epoch_batches(self, epoch: int):
        """(IterableDataset of {"ids": list of batch_size blocks}, tally) for `epoch`; the tally
        fills in (documents, tokens, blocks, dropped_tokens, blank, bytes) as it is streamed."""
        tally: dict = {}
        docs = self._stream_plan().epoch_docs(epoch, self.seed, self.shuffle_buffer, self._tokenizer, tally)
        key = hashlib.sha256(f"{self._stream_key()}|epoch-{epoch}".encode()).hexdigest()[:32]
        batches = epoch_batches(docs, key=key, eos_id=self._tokenizer.eos_id, seq_len=self.seq_len,
                                batch_size=self.train_batch_size, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                                epoch=epoch, tally=tally, cache_dir=self._hf_cache())
        return batches, tally

    def _stream_key(self) -> str:
        return hashlib.sha256(
            f"hf-stream-v{FORMAT_VERSION}.{RECORD_VERSION}|{self.fingerprint}|{self._tokenizer.fingerprint}|"
            f"{self.seq_len}".encode()
        ).hexdigest()[:40]

    def _epoch_record(self) -> EpochRecord:
        from rizzrun.paths import cache_root

        return EpochRecord(cache_root(self._setup_cache) / "streaming" / f"{self._stream_key()}.json")

    def _epoch_done(self, tally: dict) -> None:
        """Record what one full epoch held; every epoch holds the same blocks."""
        info = {k: tally.get(k, 0) for k in COUNTS}
        if self._n_blocks is not None and info["blocks"] != self._n_blocks:
            warnings.warn(f"{self._what(self.split)}: this epoch held {info['blocks']} blocks, the first "
                          f"{self._n_blocks}; the data changed while streaming, so resume positions are not "
                          f"exact", stacklevel=2)
        self._n_blocks = info["blocks"]
        self._train_info = info
        self._blank["train"] = tally.get("blank", 0)
        if info["blocks"] == 0:
            raise empty_splits_error([self._empty_problem("train", info)])
        self._epoch_record().write({**info, "blank": self._blank["train"]})

    def _split_origin(self, split: str) -> tuple[str, str]:
        if split == "train":
            setting = f"data.max_docs={self.max_docs}" if self.max_docs is not None else f"data.path={self.path}"
            return f"{setting} (data.split={self.split})", "add documents, or pick another data.split"
        if self.val_split is not None:
            return f"data.val_split={self.val_split}", "add documents, or pick another data.val_split"
        if self.val_docs is not None:
            return f"data.val_docs={self.val_docs}", "raise data.val_docs"
        return (f"data.val_fraction={self.val_fraction}",
                "raise data.val_fraction, set data.val_docs=N or data.val_split=NAME, "
                "or set data.val_fraction=0 for no validation")

    def _setup_streaming(self, tokenizer, cache_dir: str | None) -> None:
        """Pack the validation texts, read back a recorded epoch length, and check that the
        training stream is not empty; an empty validation and an empty training split are
        reported together. A stream with fewer than batch_size blocks is read to its end here,
        so its (smaller) batch size is known before training."""
        self._tokenizer = tokenizer
        self._setup_cache = cache_dir or self.cache_dir
        plan = self._stream_plan()
        encode = encoder_of(tokenizer)
        blocks, split_stats, blank, problems = {}, {}, {}, []
        if self.val_split is not None or plan.val_texts:
            if self.val_split is not None:
                stream = self._dataset(self.val_split)
                texts, rows = [], 0
                for batch in stream.rows(self.text_field, self.val_docs):
                    plan.check(batch, None, rows, global_row=rows, split=self.val_split)
                    texts.extend(batch)
                    rows += len(batch)
                if not texts:
                    raise InputError(f"{self._what(self.val_split)}: the split has no rows; pick a split with data "
                                     f"(data.val_split)")
            else:
                texts = plan.val_texts
            kept = [t for t in texts if not is_blank(t)]
            blank["val"] = len(texts) - len(kept)
            ids = [x for start in range(0, len(kept), _ROWS) for x in encode(kept[start:start + _ROWS])]
            blocks["val"], info = pack_documents(ids, tokenizer.eos_id, self.seq_len)
            info["bytes"] = sum(len(t.encode("utf-8")) for t in kept)
            if info["blocks"] == 0:
                problems.append(self._empty_problem("val", info, rows=len(texts)))
            split_stats["val"] = info
        self._n_blocks, self._train_info = None, None
        saved = self._epoch_record().read()
        if saved is not None:
            self._n_blocks = saved["blocks"]
            blank["train"] = saved["blank"]
            self._train_info = {k: saved[k] for k in COUNTS}
        self._blocks, self._split_stats, self._blank = blocks, split_stats, blank
        if self._n_blocks is None:
            # Read the first batch_size blocks, in order: fewer means the whole epoch was read.
            tally: dict = {}
            docs = (row["ids"] for row in plan.epoch_docs(0, self.seed, 0, tokenizer, tally))
            first = list(itertools.islice(iter_blocks(docs, tokenizer.eos_id, self.seq_len, tally), self.batch_size))
            if len(first) < self.batch_size:
                if not first:
                    problems.append(self._empty_problem("train", tally))
                else:
                    self._epoch_done(tally)
        if problems:
            raise empty_splits_error(problems)
