"""Stream adapters for HFDataset(streaming=True): one interface (columns, feature, known_rows,
shards, rows) over a save_to_disk split and a `load_dataset(..., streaming=True)` split, the
packed-block generator, and the readers a run leaves open.
"""

from __future__ import annotations

import inspect
import weakref

import numpy as np

from rizzrun.data.hf_source import ROWS
from rizzrun.data.lm import iter_blocks


class DiskStream:
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
        for start in range(0, n, ROWS):
            yield self.ds[start:min(n, start + ROWS)][field]


class HubStream:
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
        for batch in ds.iter(batch_size=ROWS):
            yield batch[field]


def gen_blocks(docs, eos_id, seq_len, tally):
    """Generator behind the streaming block dataset: packed blocks of the tokenized documents."""
    for block in iter_blocks((row["ids"] for row in docs), eos_id, seq_len, tally):
        yield {"ids": block}


def iterable_from_generator(generator, gen_kwargs: dict, key: str, cache_dir: str):
    """`IterableDataset.from_generator`, with an explicit fingerprint (datasets would otherwise
    hash the arguments, pipeline included) and locks kept in our own cache folder."""
    try:
        from datasets.io.generator import GeneratorDatasetInputStream
    except ImportError:  # pragma: no cover - older/newer layouts
        from datasets import IterableDataset

        return IterableDataset.from_generator(generator, gen_kwargs=gen_kwargs)
    return GeneratorDatasetInputStream(generator=generator, gen_kwargs=gen_kwargs, streaming=True,
                                       cache_dir=cache_dir, fingerprint=key).read()


def single_source_shuffle() -> dict:
    """Keyword arguments for `IterableDataset.shuffle` over one source (the packer): no shard
    interleaving, which costs a thread hand-off per block (when this `datasets` has the option)."""
    from datasets import IterableDataset

    known = inspect.signature(IterableDataset.shuffle).parameters
    return {"max_buffer_input_shards": 1} if "max_buffer_input_shards" in known else {}


def torch_blocks(rows):
    """A list of equal-length numpy blocks as one (n, seq_len + 1) tensor."""
    import torch

    return torch.from_numpy(np.stack(rows))


def _close_all(readers: weakref.WeakSet) -> None:
    for reader in list(readers):
        getattr(reader, "close", lambda: None)()


class OpenReaders:
    """The streaming iterators one dataset has open. Closed when the owner is collected or, at
    the latest, before interpreter teardown (weakref.finalize runs at exit), where the parquet
    reader would otherwise print an ignored exception."""

    def __init__(self, owner):
        self._readers: weakref.WeakSet = weakref.WeakSet()
        weakref.finalize(owner, _close_all, self._readers)

    def add(self, reader) -> None:
        self._readers.add(reader)
