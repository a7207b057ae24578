"""The language-modelling pipeline every text corpus shares: tokenize (cached) -> pack -> stream.

Tokenize: `datasets.Dataset.map(batched=True)` writing to a cache file named by (data
fingerprint, tokenizer fingerprint, split), so a second run reads the ids back instead of
tokenizing again.

Pack: documents are joined with the EOS id between them into one token stream s of length N;
block k is s[k*T : k*T + T + 1] (T = seq_len), for k < ceil((N - 1) / T). Consecutive blocks
overlap by one token, so every token but s[0] is a target exactly once. The last block, when
the stream does not fill it, is padded with PAD: its padded positions have input id 0 and label
-100 (the objectives' ignore_index), so they are in no loss. input_ids = block[:-1],
labels = block[1:].

Streaming corpora (`HFDataset(streaming=True)`) pack on the fly with `iter_blocks`, which
yields exactly the blocks `pack_documents` cuts from the same documents in the same order.

Stream: with n training blocks and b = min(batch_size, n), training batch i belongs to epoch
i // P, P = n // b; each epoch visits the blocks in a permutation drawn from a torch.Generator
seeded by (seed, epoch) and cuts it into P batches of b blocks (the n - P*b left over sit out
that epoch), so every step has the same shape. A split with fewer blocks than batch_size gives
one smaller batch per epoch: all n blocks, in that epoch's order. Batch i is a pure function of
(data, seed, i), which is what makes `train_batches(start=i)` an exact resume. Only an empty
split (no token to predict) is an error; every split's problem is reported in one message.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

# Bump when tokenized cache files change meaning (columns, packing inputs).
PIPELINE_VERSION = 1
PAD = -1  # a padded position of a block: input 0, label IGNORE (see _batch)
IGNORE = -100  # the label of a position without a target: the objectives' ignore_index


def stable_unit(key: str) -> float:
    """A number in [0, 1) that depends only on `key` (sha256; Python's hash() is salted per
    process, so it cannot decide a train/validation split)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _seed_for(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"rizzrun-epoch:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def is_blank(text: str) -> bool:
    """A document with nothing to learn from: empty or only whitespace."""
    return not text.strip()


def encoder_of(tokenizer):
    """`texts -> list of id lists`: the tokenizer's encode_batch, or encode applied per text."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    if encode_batch is None:

        def encode_batch(texts):
            return [tokenizer.encode(t) for t in texts]

    return encode_batch


def tokenize_dataset(dataset, tokenizer, cache_file: str | Path, fingerprint: str, desc: str | None = None,
                     num_proc: int | None = None, drop_blank: bool = False):
    """Map a dataset with a "text" column to one with "ids" (list<int32>) and "bytes" (UTF-8
    length of the text). Reads `cache_file` instead of tokenizing when it exists.

    num_proc: worker processes for `Dataset.map` (None: this process). With num_proc > 1,
        datasets writes one cache file per worker (`<cache_file stem>_0000i_of_0000n.arrow`)
        and reads them back on the next run with the same num_proc.
    drop_blank: leave out documents that are empty or only whitespace (`is_blank`), so the
        result may have fewer rows than `dataset`.
    """
    from datasets import Dataset, Features, List, Value

    features = Features({"ids": List(Value("int32")), "bytes": Value("int64")})
    if len(dataset) == 0:
        # map() on zero rows returns the input columns unchanged, not the new ones.
        return Dataset.from_dict({"ids": [], "bytes": []}, features=features)
    encode_batch = encoder_of(tokenizer)

    def fn(batch):
        texts = batch["text"]
        if drop_blank:
            texts = [t for t in texts if not is_blank(t)]
        return {"ids": encode_batch(texts), "bytes": [len(t.encode("utf-8")) for t in texts]}

    cache_file = Path(cache_file)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    return dataset.map(
        fn,
        batched=True,
        batch_size=1000,
        remove_columns=dataset.column_names,
        features=features,
        cache_file_name=str(cache_file),
        # An explicit fingerprint: datasets would otherwise hash the tokenizer object itself.
        new_fingerprint=fingerprint,
        load_from_cache_file=True,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc=desc,
    )


def pack_documents(docs, eos_id: int, seq_len: int) -> tuple[torch.Tensor, dict]:
    """Join documents with `eos_id` and cut blocks of seq_len + 1 tokens at stride seq_len, the
    last one padded with PAD when the stream does not fill it.

    docs: a list of id lists, or a pyarrow (Chunked)Array of lists.
    Returns (blocks, info): blocks is a (n_blocks, seq_len + 1) int32 tensor (a strided view
    of the padded stream); info has documents, tokens (stream length, separators included),
    blocks, dropped_tokens (tokens in no block: the whole stream when it has fewer than 2
    tokens, else 0), padding (PAD positions in the last block).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    arr = docs if isinstance(docs, (pa.Array, pa.ChunkedArray)) else pa.array(docs, type=pa.list_(pa.int32()))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=pa.list_(pa.int32()))
    n_docs = len(arr)
    lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    n_tokens = int(flat.size) + max(n_docs - 1, 0)
    n_blocks = -(-max(n_tokens - 1, 0) // seq_len)  # ceil((N - 1) / T)
    padded = n_blocks * seq_len + 1 if n_blocks else n_tokens
    stream = np.full(padded, eos_id, dtype=np.int32)
    stream[n_tokens:] = PAD
    # Token j of the flat values belongs to document d(j); it moves right by d(j) separators.
    stream[np.arange(flat.size) + np.repeat(np.arange(n_docs), lengths)] = flat
    stream_t = torch.from_numpy(stream)
    if n_blocks:
        blocks = stream_t.unfold(0, seq_len + 1, seq_len)
    else:
        blocks = torch.empty((0, seq_len + 1), dtype=torch.int32)
    info = {
        "documents": n_docs,
        "tokens": n_tokens,
        "blocks": n_blocks,
        "dropped_tokens": 0 if n_blocks else n_tokens,
        "padding": padded - n_tokens,
    }
    return blocks, info


def pack_by_document(docs, eos_id: int, seq_len: int) -> tuple[torch.Tensor, dict]:
    """One document per row: each document, preceded by `eos_id` as in the joined stream,
    is cut into blocks of seq_len + 1 at stride seq_len; its last block is padded with PAD.
    No block mixes two documents, and every document starts at position 0 of a row, as a
    sample does when each training example is its own sequence (the goldfish paper's
    memorization setting). Returns (blocks, info) like `pack_documents`.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    arr = docs if isinstance(docs, (pa.Array, pa.ChunkedArray)) else pa.array(docs, type=pa.list_(pa.int32()))
    rows, tokens, padded = [], 0, 0
    for ids in arr.to_pylist():
        doc = [eos_id, *(ids or [])]
        tokens += len(doc)
        for start in range(0, max(len(doc) - 1, 1), seq_len):
            chunk = doc[start : start + seq_len + 1]
            if len(chunk) < 2:
                break
            padded += seq_len + 1 - len(chunk)
            rows.append(chunk + [PAD] * (seq_len + 1 - len(chunk)))
    blocks = torch.tensor(rows, dtype=torch.int32) if rows else torch.empty((0, seq_len + 1), dtype=torch.int32)
    info = {"documents": len(arr), "tokens": tokens, "blocks": len(rows), "dropped_tokens": 0, "padding": padded}
    return blocks, info


PACKINGS = {"concat": pack_documents, "document": pack_by_document}


def iter_blocks(docs, eos_id: int, seq_len: int, tally: dict | None = None):
    """The streaming form of `pack_documents`: yields, one at a time, the same (seq_len + 1,)
    int32 numpy blocks that `pack_documents` cuts from the same documents in the same order
    (the short last block padded), holding at most one block plus one document in memory.

    docs: an iterable of id sequences. tally: a dict updated in place with documents, tokens
    (stream length, separators included), blocks, as the documents go by, and dropped_tokens
    and padding once the documents are exhausted: the same numbers `pack_documents` reports.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    width = seq_len + 1
    tally = {} if tally is None else tally
    tally.update(documents=0, tokens=0, blocks=0)
    buf = np.empty(0, dtype=np.int32)
    sep = np.array([eos_id], dtype=np.int32)
    for ids in docs:
        ids = np.asarray(ids, dtype=np.int32)
        parts = (buf, sep, ids) if tally["documents"] else (buf, ids)
        tally["documents"] += 1
        tally["tokens"] += len(ids) + (len(parts) == 3)
        buf = np.concatenate(parts)
        if len(buf) < width:
            continue
        n = (len(buf) - 1) // seq_len  # blocks that fit in what is buffered
        for k in range(n):
            yield buf[k * seq_len : k * seq_len + width].copy()
        tally["blocks"] += n
        buf = buf[n * seq_len :]  # the last token of the last block starts the next one
    tally["padding"] = 0
    if len(buf) >= 2:  # a short last block: padded, as pack_documents pads it
        tally["blocks"] += 1
        tally["padding"] = width - len(buf)
        yield np.concatenate([buf, np.full(width - len(buf), PAD, dtype=np.int32)])
    tally["dropped_tokens"] = 0 if tally["blocks"] else tally["tokens"]


def _batch(blocks: torch.Tensor) -> dict[str, torch.Tensor]:
    x = blocks.long()
    inputs, labels = x[:, :-1], x[:, 1:]
    if (x < 0).any():  # PAD: any id as input (causal: nothing real comes after it), never a target
        inputs, labels = inputs.clamp_min(0), labels.masked_fill(labels < 0, IGNORE)
    return {"input_ids": inputs.contiguous(), "labels": labels.contiguous()}


SPLIT_NAMES = {"train": "training", "val": "validation"}


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def empty_splits_error(problems: list[str]):
    """Every split problem in one one-line InputError (train first)."""
    from rizzrun.errors import InputError

    return InputError("; ".join(problems))


class LMCorpus:
    """Base of the text corpora: subclasses supply `fingerprint`, `_split_datasets()` and
    `_skipped`; this class tokenizes, packs and streams batches of kind "lm".

    Subclasses may set `num_proc` (tokenization workers) and `drop_blank` (leave out empty or
    whitespace-only documents while tokenizing), and override `_split_origin` (the data key that
    decides what a split holds, and how to get more, for the empty-split error). setup() raises
    one InputError naming every split with no token to predict.
    """

    num_proc: int | None = None
    drop_blank: bool = False
    packing: str = "concat"  # or "document": see PACKINGS

    def __init__(self, seq_len: int, batch_size: int, seed: int, cache_dir: str | None, packing: str = "concat"):
        from rizzrun.errors import InputError

        for name, value, low in (("seq_len", seq_len, 1), ("batch_size", batch_size, 1), ("seed", seed, None)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (low is not None and value < low):
                need = "an integer" + (f" >= {low}" if low is not None else "")
                raise InputError(f"data.{name}={value!r}: must be {need} ({type(self).__name__})")
        if packing not in PACKINGS:
            raise InputError(f"data.packing={packing!r}: allowed: {', '.join(PACKINGS)}")
        self.packing = packing
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self._blocks: dict[str, torch.Tensor] | None = None
        self._split_stats: dict[str, dict] = {}
        self._skipped: dict[str, int] = {}

    # -- subclass hooks --------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def _split_datasets(self) -> dict:
        """{"train": Dataset, "val": Dataset} with a "text" column; "val" absent when the
        corpus has no validation split by configuration."""
        raise NotImplementedError

    def _split_origin(self, split: str) -> tuple[str, str]:
        """(`key=value` of the setting that decides what `split` holds, how to get more data
        into it): the two ends of the empty-split message."""
        if split == "val":
            return f"data.val_fraction={getattr(self, 'val_fraction', '?')}", (
                "raise data.val_fraction, or set data.val_fraction=0 for no validation")
        return f"data={type(self).__name__}", "add documents"

    # -- pipeline --------------------------------------------------------------------------

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        """Tokenize every split (cached under <cache_dir>/tokenized/) and pack it into blocks.
        `tokenizer` must already be prepared."""
        from rizzrun.paths import cache_root

        root = cache_root(cache_dir or self.cache_dir) / "tokenized"
        blocks, split_stats, problems = {}, {}, []
        for split, ds in self._split_datasets().items():
            drop = "|drop-blank" if self.drop_blank else ""
            key = hashlib.sha256(
                f"lm-v{PIPELINE_VERSION}|{self.fingerprint}|{tokenizer.fingerprint}|{split}{drop}".encode()
            ).hexdigest()[:40]
            tokenized = tokenize_dataset(ds, tokenizer, root / f"{split}-{key}.arrow", key, desc=f"tokenize {split}",
                                         num_proc=self.num_proc, drop_blank=self.drop_blank)
            table = tokenized.data
            blocks[split], info = PACKINGS[self.packing](table.column("ids"), tokenizer.eos_id, self.seq_len)
            info["bytes"] = int(pc.sum(table.column("bytes")).as_py() or 0)
            split_stats[split] = info
            if info["blocks"] == 0:
                problems.append(self._empty_problem(split, info, rows=len(ds)))
        if problems:
            raise empty_splits_error(problems)
        self._blocks, self._split_stats = blocks, split_stats

    def _empty_problem(self, split: str, info: dict, rows: int | None = None) -> str:
        """The empty-split message of `split` after tokenization (info: its packing counts)."""
        setting, fix = self._split_origin(split)
        blank = rows - info["documents"] if rows is not None else 0
        why = (plural(info["documents"], "document") + (f" ({plural(blank, 'blank row')} dropped)" if blank else "")
               + f" holding {plural(info['tokens'], 'token')}, none to predict")
        return f"{setting}: the {SPLIT_NAMES[split]} split is empty ({why}): {fix}"

    def _require_setup(self) -> dict[str, torch.Tensor]:
        if self._blocks is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(tokenizer) before asking for batches")
        return self._blocks

    @property
    def train_batch_size(self) -> int:
        """Blocks per training batch: batch_size, or every training block when there are fewer."""
        return min(self.batch_size, len(self._require_setup()["train"]))

    @property
    def batches_per_epoch(self) -> int:
        return len(self._require_setup()["train"]) // self.train_batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of training blocks visited in `epoch`."""
        g = torch.Generator().manual_seed(_seed_for(self.seed, epoch))
        return torch.randperm(len(self._require_setup()["train"]), generator=g)

    def train_batches(self, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Infinite stream of {"input_ids", "labels"} (b, seq_len) long tensors, b =
        train_batch_size, beginning at global batch index `start` (see the module docstring)."""
        if int(start) != start or start < 0:
            raise ValueError(f"train_batches start={start!r}: must be an integer >= 0")
        blocks = self._require_setup()["train"]
        per_epoch, b = self.batches_per_epoch, self.train_batch_size
        epoch, i = divmod(int(start), per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for j in range(i, per_epoch):
                yield _batch(blocks[order[j * b : (j + 1) * b]])
            epoch, i = epoch + 1, 0

    def val_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every validation block once, in stream order; the last batch may be smaller.
        Yields nothing when the corpus has no validation split."""
        blocks = self._require_setup().get("val")
        if blocks is None:
            return
        for i in range(0, len(blocks), self.batch_size):
            yield _batch(blocks[i : i + self.batch_size])

    @property
    def stats(self) -> dict:
        """{"train": {...}, "val": {...}, "skipped": {reason: rows}}; split entries (documents,
        tokens, blocks, dropped_tokens, padding, bytes) appear after setup."""
        out = {split: dict(info) for split, info in self._split_stats.items()}
        out["skipped"] = dict(self._skipped)
        return out
