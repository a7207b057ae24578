"""The streaming plan of HFDataset(streaming=True) and its resume bookkeeping.

The plan: the training split's shards (data files) in source order, each with the range of
its rows used for training (the held-out leading rows and the rows beyond max_docs left out),
and the held-out validation texts.

The training stream of epoch e is an `IterableDataset` pipeline:
  documents: the shards in source order, or, when shuffle_buffer > 1 and there are several
      shards, in a permutation seeded by (seed, e); each shard's planned rows
  -> `map(batched=True)` tokenization on the fly (blank rows dropped)
  -> packing on the fly (`lm.iter_blocks`: the blocks `pack_documents` cuts from the same
      documents in the same order, the short last block padded)
  -> `shuffle(seed=seed, buffer_size=shuffle_buffer)` with `set_epoch(e)` (none when <= 1)
  -> `batch(b, drop_last_batch=True)`, b = min(batch_size, blocks per epoch) once that is known.

Bookkeeping: every epoch holds the same blocks, so once one epoch has been streamed its block
count is written to <cache>/streaming/<key>.json (`EpochRecord`) and later runs resume at
global batch i by re-creating epoch i // P and skipping i % P batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rizzrun.data.hf_source import ROWS, What, check_texts
from rizzrun.data.hf_views import gen_blocks, iterable_from_generator, single_source_shuffle
from rizzrun.data.holdout import streaming_held_out
from rizzrun.data.lm import _seed_for, encoder_of, is_blank
from rizzrun.errors import InputError


class StreamPlan:
    """Shards of the training split with their training row ranges ([lo, hi), hi None = to the
    shard's end), and the held-out validation texts. Reads only the rows it must count or hold
    out (see the module docstring)."""

    def __init__(self, stream, *, field: str, split: str, what: What, max_docs: int | None,
                 val_split: str | None, val_docs: int | None, val_fraction: float):
        self.field, self.split, self.what = field, split, what
        shards = stream.shards(field)
        counted: list[int] = []  # rows of each shard among the first max_docs rows of the split
        total = None
        if max_docs is not None:
            counted = self.count_rows(shards, max_docs)
            total = sum(counted)
        else:
            total = stream.known_rows()
        n_val = streaming_held_out(total, val_split, val_docs, val_fraction)
        if n_val is None:
            raise InputError(
                f"{what(split)}: streaming holds out the first ceil(data.val_fraction x rows) rows, but the "
                f"number of rows is not known without reading the whole split; set data.val_docs=N (hold out "
                f"the first N rows), data.val_split=NAME, data.max_docs=N, or data.val_fraction=0 (no validation)")
        val_texts: list[str] = []
        taken = self.count_rows(shards, n_val, collect=val_texts) if n_val else []
        if not (counted or taken):
            # Nothing read yet: make sure the split is not empty.
            if not sum(self.count_rows(shards, 1)):
                raise InputError(f"{what(split)}: the split has no rows; pick a split with data (data.split)")
        elif sum(counted or taken) == 0:
            raise InputError(f"{what(split)}: the split has no rows; pick a split with data (data.split)")
        ranges = []
        for i in range(len(shards)):
            lo = taken[i] if i < len(taken) else 0
            # shards past the first max_docs rows contribute nothing
            hi = None if max_docs is None else (counted[i] if i < len(counted) else 0)
            ranges.append((lo, hi))
        if all(hi is not None and hi <= lo for lo, hi in ranges) or (total is not None and n_val >= total):
            raise InputError(
                f"{what(split)}: no rows left for training after holding out {n_val} of {total} for validation; "
                f"lower data.val_docs / data.val_fraction or raise data.max_docs")
        self.shards, self.ranges, self.val_texts, self.held_out = shards, ranges, val_texts, n_val

    def check(self, texts, shard: int | None, offset: int, global_row: int | None = None, split: str | None = None):
        check_texts(texts, self.field, split or self.split, self.what, shard, offset, global_row)

    def count_rows(self, shards, limit: int, collect: list | None = None) -> list[int]:
        """Rows per shard among the first `limit` rows of the split (in shard order); the texts,
        checked, appended to `collect` when given."""
        counts, left, row0 = [], limit, 0
        for i, shard in enumerate(shards):
            if left == 0:
                break
            n = 0
            for batch in shard.take(left).iter(batch_size=ROWS):
                texts = batch[self.field]
                if collect is not None:
                    self.check(texts, i, n, global_row=row0 + n)
                    collect.extend(texts)
                n += len(texts)
            counts.append(n)
            left -= n
            row0 += n
        return counts

    def _rows(self, i: int):
        """Shard i limited to its training rows, or None when it has none."""
        lo, hi = self.ranges[i]
        if hi is not None and hi <= lo:
            return None
        ds = self.shards[i].skip(lo) if lo else self.shards[i]
        return ds.take(hi - lo) if hi is not None else ds

    def texts(self):
        """The training texts in source order, checked."""
        for i in range(len(self.shards)):
            ds = self._rows(i)
            if ds is None:
                continue
            offset = self.ranges[i][0]
            for batch in ds.iter(batch_size=ROWS):
                texts = batch[self.field]
                self.check(texts, i, offset)
                offset += len(texts)
                yield from texts

    def epoch_docs(self, epoch: int, seed: int, shuffle_buffer: int, tokenizer, tally: dict):
        """The tokenized training documents of `epoch` (an IterableDataset of {"ids"}); the
        tally gathers blank (rows dropped as blank) and bytes (UTF-8 bytes kept)."""
        from datasets import concatenate_datasets

        field, check = self.field, self.check
        order = range(len(self.shards))
        if shuffle_buffer > 1 and len(self.shards) > 1:
            order = np.random.default_rng(_seed_for(seed, epoch)).permutation(len(self.shards)).tolist()
        encode = encoder_of(tokenizer)

        def tokenize(batch, indices, shard, offset):
            texts = batch[field]
            check(texts, shard, offset + indices[0] if indices else offset)
            kept = [t for t in texts if not is_blank(t)]
            tally["blank"] = tally.get("blank", 0) + len(texts) - len(kept)
            tally["bytes"] = tally.get("bytes", 0) + sum(len(t.encode("utf-8")) for t in kept)
            return {"ids": encode(kept)}

        parts = []
        for i in order:
            ds = self._rows(i)
            if ds is not None:
                parts.append(ds.map(tokenize, batched=True, batch_size=ROWS, with_indices=True,
                                    remove_columns=[field], fn_kwargs={"shard": i, "offset": self.ranges[i][0]}))
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def epoch_batches(docs, *, key: str, eos_id: int, seq_len: int, batch_size: int, shuffle_buffer: int, seed: int,
                  epoch: int, tally: dict, cache_dir: str):
    """The documents of one epoch packed, shuffled and batched: an IterableDataset of
    {"ids": list of batch_size blocks}; `tally` fills in the packing counts as it streams."""
    blocks = iterable_from_generator(
        gen_blocks, {"docs": docs, "eos_id": eos_id, "seq_len": seq_len, "tally": tally}, key, cache_dir)
    if shuffle_buffer > 1:
        blocks = blocks.shuffle(seed=seed, buffer_size=shuffle_buffer, **single_source_shuffle())
    batches = blocks.batch(batch_size, drop_last_batch=True)
    batches.set_epoch(epoch)  # on the final dataset: each new IterableDataset starts at epoch 0
    return batches


COUNTS = ("documents", "tokens", "blocks", "dropped_tokens", "padding", "bytes")
# Bump when a recorded epoch's counts change meaning (2: the short last block is kept, padded).
RECORD_VERSION = 2


class EpochRecord:
    """What one streamed epoch held (COUNTS and blank rows), kept in `path` for later runs."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict | None:
        """The recorded counts, or None when there is no (readable) record."""
        if not self.path.is_file():
            return None
        try:
            info = json.loads(self.path.read_text())
            return {**{k: int(info.get(k, 0)) for k in COUNTS}, "blocks": int(info["blocks"]),
                    "blank": int(info.get("blank", 0))}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, info: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({k: info.get(k, 0) for k in (*COUNTS, "blank")}) + "\n")
        tmp.replace(self.path)
