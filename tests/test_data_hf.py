"""HFDataset: Hugging Face `datasets` corpora written by the tests to tmp_path (never the Hub).

References are computed apart from the code under test: packed blocks from plain lists, the
hold-out from a pure-Python splitmix64, and the non-streaming path for the streaming one."""

import itertools
import json
import math
import os
from collections import Counter

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402

from rizzrun.data import hf as hf_module  # noqa: E402
from rizzrun.data.hf import HFDataset, row_units  # noqa: E402
from rizzrun.data.lm import _seed_for  # noqa: E402
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.runner.distributed import RankShard  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

EOS = ByteTokenizer.eos_id
PAD = -1  # rizzrun.data.lm.PAD
DOCS = [f"doc {i}: " + "abc xyz " * (i % 5 + 1) for i in range(40)]
M64 = 2**64 - 1


def splitmix_unit(r):
    """splitmix64 of the row index with Python integers, over 2**64 (53-bit mantissa)."""
    z = (r + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return (z >> 11) / 2**53


def ref_blocks(texts, seq_len):
    """Documents joined with EOS, blocks of seq_len + 1 at stride seq_len, the last one padded
    with PAD (-1), with plain lists."""
    stream = []
    for i, text in enumerate(texts):
        stream += ([EOS] if i else []) + list(text.encode())
    n = -(-(len(stream) - 1) // seq_len)
    stream += [PAD] * (n * seq_len + 1 - len(stream))
    return [tuple(stream[k * seq_len: k * seq_len + seq_len + 1]) for k in range(n)]


def rows_of(batch):
    """The (seq_len + 1)-token blocks of a batch: the first input, then the labels (-100, a
    padded position, read back as PAD)."""
    return [(x[0], *(PAD if t == -100 else t for t in y))
            for x, y in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]


def save_dict(path, splits):
    DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(path))
    return str(path)


def parquet_folder(path, train_shards, validation=None, field="text"):
    """The hub layout: data/train-0000i-of-0000n.parquet (+ data/validation-...)."""
    (path / "data").mkdir(parents=True)
    n = len(train_shards)
    for i, shard in enumerate(train_shards):
        table = pa.table({field: shard, "n": list(range(len(shard)))})
        pq.write_table(table, path / "data" / f"train-{i:05d}-of-{n:05d}.parquet")
    if validation is not None:
        pq.write_table(pa.table({field: validation}), path / "data" / "validation-00000-of-00001.parquet")
    return str(path)


def make(path, tmp_path, **kw):
    kw.setdefault("val_fraction", 0)
    kw.setdefault("seq_len", 8)
    kw.setdefault("batch_size", 3)
    return HFDataset(path, cache_dir=str(tmp_path / kw.pop("cache", "cache")), **kw)


class CountingByte(ByteTokenizer):
    def __init__(self):
        self.calls = 0

    def encode_batch(self, texts):
        self.calls += 1
        return super().encode_batch(texts)


class OtherByte(CountingByte):
    fingerprint = "another-tokenizer-v1"


class PoisonedByte(ByteTokenizer):
    """Same fingerprint as ByteTokenizer; fails if asked to tokenize anything."""

    def encode_batch(self, texts):
        raise AssertionError("tokenized again although the cache holds this split")


# -- packing on the fly --------------------------------------------------------------------


def test_iter_blocks_cuts_the_blocks_pack_documents_cuts():
    from rizzrun.data.lm import iter_blocks, pack_documents

    rng = np.random.default_rng(0)
    for _ in range(200):
        docs = [rng.integers(1, 9, size=rng.integers(0, 13)).tolist() for _ in range(rng.integers(0, 8))]
        seq_len = int(rng.integers(1, 7))
        stream = [t for i, d in enumerate(docs) for t in ([0] if i else []) + d]  # by hand, EOS = 0
        n = -(-max(len(stream) - 1, 0) // seq_len)  # ceil: the short last block is padded with -1
        padded = stream + [-1] * (n * seq_len + 1 - len(stream)) if n else stream
        want = [padded[k * seq_len: k * seq_len + seq_len + 1] for k in range(n)]
        tally = {}
        got = [b.tolist() for b in iter_blocks(docs, 0, seq_len, tally)]
        blocks, info = pack_documents(docs, 0, seq_len)
        assert got == want == blocks.tolist(), (docs, seq_len)
        assert tally == info


# -- sources -------------------------------------------------------------------------------


def test_every_kind_of_local_source_gives_the_same_documents(tmp_path):
    saved = save_dict(tmp_path / "saved", {"train": {"body": DOCS, "id": list(range(40))}})
    folder = parquet_folder(tmp_path / "pq", [DOCS[:15], DOCS[15:30], DOCS[30:]], field="body")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t}) + "\n" for t in DOCS))
    for path in (saved, folder, str(jsonl), str(tmp_path / "pq" / "data" / "train-*.parquet")):
        for streaming in (False, True):
            data = make(path, tmp_path, text_field="body", streaming=streaming)
            assert list(data.train_texts()) == DOCS, (path, streaming)
    single = tmp_path / "single"
    Dataset.from_dict({"text": DOCS[:3]}).save_to_disk(str(single))  # a Dataset, not a DatasetDict
    assert list(make(str(single), tmp_path).train_texts()) == DOCS[:3]


def test_blocks_by_hand_and_blank_rows_skipped(tmp_path):
    # bytes a=97 b=98 ...; blank rows are left out: stream a b EOS c EOS d e f g (9 tokens)
    path = save_dict(tmp_path / "d", {"train": {"text": ["ab", "", "c", " \n ", "defg"]}})
    for streaming in (False, True):
        data = make(path, tmp_path, seq_len=3, batch_size=2, streaming=streaming, shuffle_buffer=0)
        data.setup(ByteTokenizer())
        batch = next(data.train_batches())
        assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 3)
        hand = [(97, 98, EOS, 99), (99, EOS, 100, 101), (101, 102, 103, PAD)]  # the last one padded
        # batch 0: the first 2 blocks of epoch 0's order (streaming with shuffle_buffer=0: stream order)
        order = list(range(3)) if streaming else data.epoch_order(0).tolist()
        assert rows_of(batch) == [hand[i] for i in order[:2]]
        assert list(data.train_texts()) == ["ab", "c", "defg"]
        assert list(data.val_batches()) == []  # val_fraction=0: no validation split
        if not streaming:
            assert data.stats["train"] == {"documents": 3, "tokens": 9, "blocks": 3, "dropped_tokens": 0,
                                           "padding": 1, "bytes": 7}
        list(itertools.islice(data.train_batches(), 2))  # through one epoch: the counts are known
        assert data.stats["skipped"] == {"blank": 2}, streaming
    # the third block, e f g PAD, is in the stream's second epoch (shuffle_buffer=0: stream order)
    assert data.stats["train"]["blocks"] == 3 and data.stats["train"]["streaming"] is True
    assert data.stats["train"]["padding"] == 1


def test_val_fraction_holdout_is_a_fixed_hash_of_the_row(tmp_path):
    assert row_units(1)[0] == (0xE220A8397B1DCDAF >> 11) / 2**53  # splitmix64's published first output
    assert row_units(500).tolist() == [splitmix_unit(r) for r in range(500)]
    texts = [f"line number {i}" for i in range(200)]
    data = make(save_dict(tmp_path / "d", {"train": {"text": texts}}), tmp_path, val_fraction=0.25)
    splits = data._split_datasets()
    want_val = [t for r, t in enumerate(texts) if splitmix_unit(r) < 0.25]
    assert splits["val"]["text"][:] == want_val and 20 < len(want_val) < 80
    assert splits["train"]["text"][:] == [t for t in texts if t not in want_val]


def test_val_split_val_docs_and_max_docs(tmp_path):
    path = save_dict(tmp_path / "d", {"train": {"text": DOCS}, "validation": {"text": ["v1 text", "v2 text", "v3"]}})
    for streaming in (False, True):
        data = make(path, tmp_path, val_split="validation", val_docs=2, max_docs=30, streaming=streaming)
        assert list(data.train_texts()) == DOCS[:30]
        data.setup(ByteTokenizer())
        assert data.stats["val"]["documents"] == 2 and data.stats["val"]["bytes"] == 14
        held = make(path, tmp_path, val_docs=4, max_docs=30, streaming=streaming)
        assert list(held.train_texts()) == DOCS[4:30]
        held.setup(ByteTokenizer())
        val = [r for b in held.val_batches() for r in rows_of(b)]
        assert val == ref_blocks(DOCS[:4], 8)
    # Streaming with val_fraction takes the first ceil(f * rows) rows: max_docs gives the count.
    data = make(path, tmp_path, val_fraction=0.1, max_docs=30, streaming=True)
    assert list(data.train_texts()) == DOCS[math.ceil(0.1 * 30):30]


# -- tokenization cache --------------------------------------------------------------------


def test_second_run_reads_the_tokenization_cache(tmp_path):
    path = save_dict(tmp_path / "d", {"train": {"text": DOCS * 3}})
    before = sorted(p.name for p in (tmp_path / "d").rglob("*"))
    first_tok = CountingByte()
    first = make(path, tmp_path, val_fraction=0.2)
    first.setup(first_tok)
    assert first_tok.calls > 0
    cached = sorted((tmp_path / "cache" / "tokenized").glob("*.arrow"))
    assert [p.name.split("-")[0] for p in cached] == ["train", "val"]
    second = make(path, tmp_path, val_fraction=0.2)
    second.setup(PoisonedByte())  # same fingerprint; any tokenization fails the test
    assert sorted((tmp_path / "cache" / "tokenized").glob("*.arrow")) == cached  # nothing new written
    assert torch.equal(next(first.train_batches())["input_ids"], next(second.train_batches())["input_ids"])
    assert sorted(p.name for p in (tmp_path / "d").rglob("*")) == before  # the source folder is untouched
    other = OtherByte()
    make(path, tmp_path, val_fraction=0.2).setup(other)
    assert other.calls > 0  # another tokenizer fingerprint: another cache entry


def test_num_proc_tokenizes_in_workers_and_is_cached(tmp_path):
    path = parquet_folder(tmp_path / "pq", [DOCS, DOCS[::-1]])
    single = make(path, tmp_path, cache="c1", val_fraction=0.2)
    single.setup(ByteTokenizer())
    multi = make(path, tmp_path, cache="c2", val_fraction=0.2, num_proc=2)
    multi.setup(ByteTokenizer())
    shards = sorted(p.name for p in (tmp_path / "c2" / "tokenized").glob("train-*.arrow"))
    assert [name[-21:] for name in shards] == ["_00000_of_00002.arrow", "_00001_of_00002.arrow"]
    for split in ("train", "val"):
        assert torch.equal(single._blocks[split], multi._blocks[split])
    again = make(path, tmp_path, cache="c2", val_fraction=0.2, num_proc=2)
    again.setup(PoisonedByte())  # workers would raise if they tokenized
    assert torch.equal(again._blocks["train"], multi._blocks["train"])
    texts = DOCS + DOCS[::-1]
    train = [t for r, t in enumerate(texts) if splitmix_unit(r) >= 0.2]
    assert single._blocks["train"].tolist() == [list(b) for b in ref_blocks(train, 8)]


# -- streaming -----------------------------------------------------------------------------


def epoch_rows(data, epoch):
    per = data.batches_per_epoch
    return [r for b in itertools.islice(data.train_batches(epoch * per), per) for r in rows_of(b)]


@pytest.mark.parametrize("source", ["saved", "parquet"])
def test_streaming_without_shuffle_equals_the_non_streaming_packing(tmp_path, source):
    if source == "saved":
        path = save_dict(tmp_path / "d", {"train": {"text": DOCS}})
    else:
        path = parquet_folder(tmp_path / "pq", [DOCS[:7], DOCS[7:25], DOCS[25:]])
    eager = make(path, tmp_path, val_docs=3)
    eager.setup(ByteTokenizer())
    packed = [tuple(b) for b in eager._blocks["train"].tolist()]
    assert packed == ref_blocks(DOCS[3:], 8)
    for buffer in (0, 1):
        stream = make(path, tmp_path, val_docs=3, streaming=True, shuffle_buffer=buffer)
        stream.setup(ByteTokenizer())
        per = len(packed) // 3
        got = [r for b in itertools.islice(stream.train_batches(), 2 * per) for r in rows_of(b)]
        assert got == (packed[: per * 3]) * 2  # stream order, every epoch the same
        assert stream.batches_per_epoch == per
        assert stream.stats["train"]["blocks"] == len(packed) == eager.stats["train"]["blocks"]
        assert stream.stats["train"]["tokens"] == eager.stats["train"]["tokens"]
        assert [rows_of(b) for b in stream.val_batches()] == [rows_of(b) for b in eager.val_batches()]


def test_streaming_shuffle_epochs_follow_the_documented_rule(tmp_path):
    shards = [DOCS[:10], DOCS[10:20], DOCS[20:30], DOCS[30:]]
    path = parquet_folder(tmp_path / "pq", shards)
    data = make(path, tmp_path, streaming=True, shuffle_buffer=8, seed=3)
    data.setup(ByteTokenizer())
    it = data.train_batches()
    next(it)
    assert data.batches_per_epoch is None  # not known before one epoch has been streamed
    while data.batches_per_epoch is None:
        next(it)
    epochs = []
    for e in range(3):
        got = epoch_rows(data, e)
        order = np.random.default_rng(_seed_for(3, e)).permutation(4).tolist()
        blocks = ref_blocks([t for i in order for t in shards[i]], 8)
        per = data.batches_per_epoch
        assert len(got) == per * 3 and len(blocks) // 3 == per
        assert not Counter(got) - Counter(blocks)  # blocks of that order, each at most once
        assert got != blocks[: len(got)]  # shuffled by the buffer
        epochs.append(got)
    assert epochs[0] != epochs[1] != epochs[2]
    # One shard: every epoch is a reordering of the same blocks, by the buffer seeded per epoch.
    saved = save_dict(tmp_path / "d", {"train": {"text": DOCS}})
    one = make(saved, tmp_path, streaming=True, shuffle_buffer=8, seed=3)
    one.setup(ByteTokenizer())
    it = one.train_batches()
    while one.batches_per_epoch is None:
        next(it)
    blocks = Counter(ref_blocks(DOCS, 8))
    first, second = epoch_rows(one, 0), epoch_rows(one, 1)
    assert first != second and not Counter(first) - blocks and not Counter(second) - blocks
    assert sum((blocks - Counter(first)).values()) == sum(blocks.values()) % 3  # only the last partial batch
    reseeded = make(path, tmp_path, streaming=True, shuffle_buffer=8, seed=4)
    reseeded.setup(ByteTokenizer())
    assert epoch_rows(reseeded, 0) != epochs[0]


@pytest.mark.parametrize("forget_epoch_length", [False, True])
def test_streaming_resume_equals_the_uninterrupted_stream(tmp_path, forget_epoch_length):
    path = parquet_folder(tmp_path / "pq", [DOCS[:20], DOCS[20:]])
    data = make(path, tmp_path, streaming=True, shuffle_buffer=16, val_docs=2)
    data.setup(ByteTokenizer())
    it = data.train_batches()
    first = [next(it) for _ in range(3)]
    while data.batches_per_epoch is None:  # stream through epoch 0 to learn its length
        first.append(next(it))
    per = data.batches_per_epoch
    n = 3 * per + 2
    full = [next(b) for b in [data.train_batches()] for _ in range(n)]
    assert len(first) == per + 1
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, full))
    for start in (1, per - 1, per, per + 1, 2 * per + 1):
        if forget_epoch_length:
            for f in (tmp_path / "cache" / "streaming").glob("*.json"):
                f.unlink()
        resumed = make(path, tmp_path, streaming=True, shuffle_buffer=16, val_docs=2)  # a new run
        resumed.setup(ByteTokenizer())
        assert resumed.batches_per_epoch == (None if forget_epoch_length else per)
        stream = resumed.train_batches(start=start)
        for i in range(start, min(start + per + 1, n)):  # crosses an epoch boundary
            b = next(stream)
            assert torch.equal(b["input_ids"], full[i]["input_ids"]), (start, i)
            assert torch.equal(b["labels"], full[i]["labels"]), (start, i)


def test_streaming_tokenizer_sample_is_capped(tmp_path, monkeypatch):
    path = parquet_folder(tmp_path / "pq", [DOCS[:10], DOCS[10:]])
    monkeypatch.setattr(hf_module, "TOKENIZER_DOCS", 12)
    assert list(make(path, tmp_path, streaming=True, val_docs=3).train_texts()) == DOCS[3:15]


# -- the runner's use ----------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_works_as_the_runner_uses_it(tmp_path, streaming):
    path = save_dict(tmp_path / "d", {"train": {"text": DOCS}, "test": {"text": DOCS[:6]}})
    data = make(path, tmp_path, val_split="test", streaming=streaming, shuffle_buffer=4)
    tok = ByteTokenizer()
    tok.prepare(data.train_texts, data.fingerprint)
    data.setup(tok)
    val = list(itertools.islice(data.val_batches(), 2))
    assert len(val) == 2 and val[0]["input_ids"].shape == (3, 8)
    loader = torch.utils.data.DataLoader(RankShard(1).stream(data.train_batches, start=5), batch_size=None)
    got = list(itertools.islice(iter(loader), 3))
    want = list(itertools.islice(data.train_batches(), 8))[5:]
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(got, want))
    json.dumps(data.stats)
    assert data.fingerprint == make(path, tmp_path, val_split="test", streaming=streaming).fingerprint
    assert data.fingerprint != make(path, tmp_path, val_split="test", streaming=streaming, max_docs=5).fingerprint


def test_config_builds_it(tmp_path):
    from hydra.utils import instantiate

    from rizzrun.config import load

    path = save_dict(tmp_path / "d", {"train": {"text": DOCS}})
    cfg = load(["data=hf", f"data.path={path}", "data.streaming=true", "data.val_docs=2",
                f"cache_dir={tmp_path / 'cache'}"])
    data = instantiate(cfg.data)
    assert isinstance(data, HFDataset) and data.streaming and data.val_docs == 2 and data.seq_len == 256
    assert list(data.train_texts())[:2] == DOCS[2:4]


# -- errors --------------------------------------------------------------------------------


def test_missing_field_names_dataset_split_columns_and_closest(tmp_path):
    path = save_dict(tmp_path / "d", {"train": {"text": ["a"], "id": [1]}})
    for streaming in (False, True):
        with pytest.raises(ValueError) as err:
            list(make(path, tmp_path, text_field="txt", streaming=streaming).train_texts())
        msg = str(err.value)
        assert path in msg and "split 'train'" in msg and "'txt'" in msg
        assert "did you mean data.text_field='text'" in msg and "available columns: 'text', 'id'" in msg


def test_unknown_split_names_the_available_ones(tmp_path):
    path = save_dict(tmp_path / "d", {"train": {"text": DOCS}, "test": {"text": DOCS[:3]}})
    folder = parquet_folder(tmp_path / "pq", [DOCS], validation=DOCS[:2])
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"d': no split 'valid'; available splits: 'train', 'test'"):
            list(make(path, tmp_path, split="valid", streaming=streaming).train_texts())
        with pytest.raises(ValueError, match=r"no split 'dev'; available splits: 'train', 'validation'"):
            make(folder, tmp_path, val_split="dev", streaming=streaming).setup(ByteTokenizer())


def test_empty_split_and_unloadable_files(tmp_path, monkeypatch):
    import datasets
    from datasets import Features, IterableDatasetDict, Value

    empty = Dataset.from_dict({"text": []}, features=Features({"text": Value("string")}))  # in memory only:
    full = Dataset.from_dict({"text": DOCS})  # datasets cannot save and load back an empty split

    def fake_load_dataset(path, name=None, streaming=False, **kw):
        if streaming:
            nothing = Dataset.from_dict({"text": ["x"]}).to_iterable_dataset().take(0)
            return IterableDatasetDict({"train": full.to_iterable_dataset(), "test": nothing})
        return DatasetDict({"train": full, "test": empty})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"'someone/corpus' split 'test': the split has no rows"):
            list(make("someone/corpus", tmp_path, split="test", streaming=streaming).train_texts())
        with pytest.raises(ValueError, match=r"'someone/corpus' split 'test': the split has no rows"):
            make("someone/corpus", tmp_path, val_split="test", streaming=streaming).setup(ByteTokenizer())
    monkeypatch.undo()
    blank = tmp_path / "empty.jsonl"
    blank.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl'.*`datasets` cannot load it"):
        list(make(str(blank), tmp_path).train_texts())


def test_null_and_non_string_rows(tmp_path):
    texts = DOCS[:10]
    texts[7] = None
    path = save_dict(tmp_path / "d", {"train": {"text": texts}})
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"split 'train'.*row 7 \(0-based\)"):
            data = make(path, tmp_path, streaming=streaming, shuffle_buffer=0, seq_len=2, batch_size=1)
            list(data.train_texts())
    numbers = save_dict(tmp_path / "n", {"train": {"text": [1, 2, 3]}})
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"column 'text' holds Value\('int64'\), not strings"):
            list(make(numbers, tmp_path, streaming=streaming).train_texts())
    # A JSON file whose types datasets cannot settle up front: checked row by row while streaming.
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS[:5]) + json.dumps({"text": None}) + "\n")
    data = make(str(mixed), tmp_path, streaming=True, shuffle_buffer=0, seq_len=2, batch_size=1)
    with pytest.raises(ValueError, match=r"row 5 \(0-based\) of shard 0.*'text' is null"):
        data.setup(ByteTokenizer())  # setup reads the first blocks; training would stop there too


def test_bad_paths_and_options(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such file or folder"):
        HFDataset(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="matches no file"):
        HFDataset(str(tmp_path / "*.parquet"))
    with pytest.raises(ValueError, match="val_split='train': the same as split"):
        HFDataset("x", val_split="train")
    with pytest.raises(ValueError, match=r"val_fraction=1.5: must be in \[0, 1\)"):
        HFDataset("x", val_fraction=1.5)
    path = parquet_folder(tmp_path / "pq", [DOCS])
    with pytest.raises(ValueError, match="set data.val_docs=N .*data.val_split=NAME"):  # streaming, row count unknown
        list(make(path, tmp_path, streaming=True, val_fraction=0.1).train_texts())


def test_hub_names_go_to_load_dataset(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kw):
        calls.append((path, name, kw.get("streaming")))
        return DatasetDict({"train": Dataset.from_dict({"text": DOCS})})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = make("someone/corpus", tmp_path, name="en")
    assert list(data.train_texts()) == DOCS and calls == [("someone/corpus", "en", False)]

    def offline(path, name=None, **kw):
        raise ConnectionError("offline mode is enabled")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"'someone/other'.*looked up as a dataset on the Hugging Face Hub.*offline"):
        list(make("someone/other", tmp_path).train_texts())


def test_open_streaming_readers_are_closed_with_their_dataset():
    """The readers a streaming dataset leaves open are its own state (no module-level set):
    they close when it is collected (and, through weakref.finalize, at interpreter exit)."""
    import gc

    from rizzrun.data.hf_views import OpenReaders

    class Reader:
        closed = False

        def close(self):
            self.closed = True

    class Owner:
        pass

    first, second = Owner(), Owner()
    mine, other = Reader(), Reader()
    OpenReaders(first).add(mine)
    OpenReaders(second).add(other)
    del first
    gc.collect()
    assert mine.closed and not other.closed


@pytest.mark.parametrize("streaming", [False, True])
def test_each_of_two_ranks_reads_its_share_and_resumes_it_exactly(tmp_path, streaming):
    """Two processes with batch_size 3 each: the data is built with 6; rank r trains on rows
    3r..3r+2 of every global batch, and a new run resumed at batch 5 gives each rank the same rows."""
    path = save_dict(tmp_path / "d", {"train": {"text": DOCS}, "test": {"text": DOCS[:6]}})
    tok = ByteTokenizer()

    def built():
        data = make(path, tmp_path, val_split="test", streaming=streaming, shuffle_buffer=4, batch_size=6)
        tok.prepare(data.train_texts, data.fingerprint)
        data.setup(tok)
        return data

    data = built()
    whole = list(itertools.islice(data.train_batches(), 8))
    for rank in (0, 1):
        mine = list(itertools.islice(iter(RankShard(2, rank).stream(data.train_batches, start=0)), 8))
        assert all(rows_of(b) == rows_of(w)[3 * rank: 3 * rank + 3] for b, w in zip(mine, whole))
        resumed = RankShard(2, rank).stream(built().train_batches, start=5)  # a new run, from the checkpoint's position
        assert [rows_of(b) for b in itertools.islice(iter(resumed), 3)] == [rows_of(b) for b in mine[5:8]]
