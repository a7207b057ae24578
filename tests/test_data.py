"""The LM data pipeline: packing by hand, resumable streams, caches, PyDocCorpus, TextFiles."""

import ast
import hashlib
import importlib
import inspect
import json
import os
import re

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rizzrun.data import pydoc as pydoc_module  # noqa: E402
from rizzrun.data.lm import pack_documents  # noqa: E402
from rizzrun.data.pydoc import PyDocCorpus, load_or_extract  # noqa: E402
from rizzrun.data.text import TextFiles  # noqa: E402
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

EOS = ByteTokenizer.eos_id


def unit(key):
    """Second formulation of the split hash: first 8 bytes of sha256, big-endian, over 2**64."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def rows(batch):
    return [tuple(r) for r in batch.tolist()]


# -- packing -------------------------------------------------------------------------------


def test_pack_by_hand():
    # stream: 1 2 3 | 0 | 4 5 | 0 | 6 7 8 9   (11 tokens, EOS = 0)
    # ceil(10 / 4) = 3 blocks; the last, 7 8 9, is padded with PAD = -1 to 5 tokens
    blocks, info = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9]], eos_id=0, seq_len=4)
    assert blocks.tolist() == [[1, 2, 3, 0, 4], [4, 5, 0, 6, 7], [7, 8, 9, -1, -1]]
    assert info == {"documents": 3, "tokens": 11, "blocks": 3, "dropped_tokens": 0, "padding": 2}
    blocks, info = pack_documents([[1, 2, 3, 4]], eos_id=0, seq_len=4)  # one short of a block: padded
    assert blocks.tolist() == [[1, 2, 3, 4, -1]]
    assert info == {"documents": 1, "tokens": 4, "blocks": 1, "dropped_tokens": 0, "padding": 1}
    blocks, info = pack_documents([[5, 6], [], [7, 8, 9]], eos_id=0, seq_len=2)  # empty doc: two EOS
    assert blocks.tolist() == [[5, 6, 0], [0, 0, 7], [7, 8, 9]] and info["dropped_tokens"] == info["padding"] == 0
    blocks, info = pack_documents([[5]], eos_id=0, seq_len=2)  # one token: nothing to predict
    assert blocks.shape == (0, 3) and info == {"documents": 1, "tokens": 1, "blocks": 0, "dropped_tokens": 1,
                                               "padding": 0}
    blocks, info = pack_documents([], eos_id=0, seq_len=2)
    assert blocks.shape == (0, 3) and info["blocks"] == info["tokens"] == 0


def test_corpus_batches_by_hand(tmp_path):
    # bytes a=97 b=98 ...; stream: a b EOS c EOS d e f g (9 tokens); seq_len 3 -> ceil(8 / 3) = 3
    # blocks, the last (e f g) padded: input 0 and label -100 at the padded position
    data = TextFiles(str(write_jsonl(tmp_path / "d.jsonl", ["ab", "c", "defg"])), val_fraction=0,
                     seq_len=3, batch_size=3, cache_dir=str(tmp_path / "cache"))
    data.setup(ByteTokenizer())
    batch = next(data.train_batches())
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (3, 3)
    assert sorted(zip(rows(batch["input_ids"]), rows(batch["labels"]))) == [
        ((97, 98, EOS), (98, EOS, 99)),
        ((99, EOS, 100), (EOS, 100, 101)),
        ((101, 102, 103), (102, 103, -100)),
    ]
    assert data.stats["train"] == {"documents": 3, "tokens": 9, "blocks": 3, "dropped_tokens": 0, "padding": 1,
                                   "bytes": 7}
    assert data.batches_per_epoch == 1
    assert list(data.val_batches()) == []  # val_fraction=0: no validation split


def test_val_batches_in_order_last_partial_kept(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", ["x" * 20])
    val = write_jsonl(tmp_path / "v.jsonl", ["abcdefghijk"])  # 11 tokens, seq_len 2 -> 5 blocks
    data = TextFiles(str(train), val_files=[str(val)], seq_len=2, batch_size=2, cache_dir=str(tmp_path / "c"))
    data.setup(ByteTokenizer())
    got = [(rows(b["input_ids"]), rows(b["labels"])) for b in data.val_batches()]
    a = ord("a")
    blocks = [[a + 2 * k, a + 2 * k + 1, a + 2 * k + 2] for k in range(5)]  # abc cde efg ghi ijk
    want = [([tuple(b[:2]) for b in blocks[i:i + 2]], [tuple(b[1:]) for b in blocks[i:i + 2]]) for i in (0, 2, 4)]
    assert got == want
    assert data.stats["val"]["blocks"] == 5 and data.stats["val"]["dropped_tokens"] == data.stats["val"]["padding"] == 0


# -- the training stream -------------------------------------------------------------------

DOCS = [f"document {i}: " + "abc xyz " * (i % 5 + 1) for i in range(30)]


@pytest.fixture
def stream_data(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", DOCS)

    def make(seed=0, cache="cache", **kw):
        d = TextFiles(str(path), val_fraction=0, seq_len=8, batch_size=3, seed=seed,
                      cache_dir=str(tmp_path / cache), **kw)
        d.setup(ByteTokenizer())
        return d

    return make


def reference_blocks(seq_len):
    """The packed blocks built with plain lists, apart from pack_documents."""
    stream = []
    for i, text in enumerate(DOCS):
        stream += ([EOS] if i else []) + list(text.encode())
    n = (len(stream) - 1) // seq_len
    return [tuple(stream[k * seq_len: k * seq_len + seq_len + 1]) for k in range(n)]


def test_epochs_are_permutations_of_the_blocks(stream_data):
    data = stream_data()
    ref = reference_blocks(8)
    per_epoch = data.batches_per_epoch
    assert per_epoch == len(ref) // 3
    it = data.train_batches()
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(per_epoch):
            b = next(it)
            seen += [tuple(x) + (y[-1],) for x, y in zip(b["input_ids"].tolist(), b["labels"].tolist())]
        epochs.append(seen)
    for e, seen in enumerate(epochs):
        order = data.epoch_order(e).tolist()
        assert sorted(order) == list(range(len(ref)))
        assert seen == [ref[i] for i in order[: per_epoch * 3]]  # each block at most once
    assert data.epoch_order(0).tolist() != data.epoch_order(1).tolist()


def test_resume_equals_full_stream(stream_data):
    data = stream_data()
    per_epoch = data.batches_per_epoch
    n = 3 * per_epoch + 2
    it = data.train_batches()
    full = [next(it) for _ in range(n)]
    for start in (1, per_epoch - 1, per_epoch, per_epoch + 1, 2 * per_epoch + 1):
        resumed = data.train_batches(start=start)
        for i in range(start, min(start + per_epoch + 1, n)):  # crosses an epoch boundary
            b = next(resumed)
            assert torch.equal(b["input_ids"], full[i]["input_ids"]), (start, i)
            assert torch.equal(b["labels"], full[i]["labels"]), (start, i)


def test_stream_deterministic_across_instances_and_seeded(stream_data):
    a, b, c = stream_data(), stream_data(cache="other"), stream_data(seed=1)
    ia, ib, ic = a.train_batches(), b.train_batches(), c.train_batches()
    first = [next(ia)["input_ids"] for _ in range(4)]
    assert all(torch.equal(x, next(ib)["input_ids"]) for x in first)
    assert not all(torch.equal(x, next(ic)["input_ids"]) for x in first)


class CountingByte(ByteTokenizer):
    def __init__(self, tag="byte-utf8-v1"):
        self.calls, self.tag = 0, tag

    @property
    def fingerprint(self):
        return self.tag

    def encode_batch(self, texts):
        self.calls += 1
        return super().encode_batch(texts)


def test_tokenization_cache_reused(tmp_path):
    path = str(write_jsonl(tmp_path / "docs.jsonl", DOCS))
    first_tok, second_tok = CountingByte(), CountingByte()
    first = TextFiles(path, val_fraction=0, seq_len=8, batch_size=3, cache_dir=str(tmp_path / "cache"))
    first.setup(first_tok)
    assert first_tok.calls > 0
    assert len(list((tmp_path / "cache" / "tokenized").glob("train-*.arrow"))) == 1
    second = TextFiles(path, val_fraction=0, seq_len=8, batch_size=3, cache_dir=str(tmp_path / "cache"))
    second.setup(second_tok)
    assert second_tok.calls == 0  # read back from the cache file, not tokenized again
    assert torch.equal(next(first.train_batches())["input_ids"], next(second.train_batches())["input_ids"])
    other = CountingByte(tag="another-tokenizer")
    second.setup(other)
    assert other.calls > 0  # a different tokenizer fingerprint is a different cache entry


def test_short_splits_pad_and_smaller_batches(tmp_path):
    """Formerly too little data (one error each); now padded blocks and smaller batches.
    Empty splits: tests/test_data_small.py."""
    path = write_jsonl(tmp_path / "tiny.jsonl", ["abc"])
    data = TextFiles(str(path), val_fraction=0, seq_len=8, batch_size=1, cache_dir=str(tmp_path / "c"))
    data.setup(ByteTokenizer())  # 3 tokens: one block a b c + 6 PAD
    batch = next(data.train_batches())
    assert batch["input_ids"].tolist() == [[97, 98, 99, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[98, 99] + [-100] * 6]
    big = write_jsonl(tmp_path / "big.jsonl", ["x" * 100])
    data = TextFiles(str(big), val_files=str(path), seq_len=8, batch_size=64, cache_dir=str(tmp_path / "c"))
    data.setup(ByteTokenizer())
    # ceil(99 / 8) = 13 blocks < batch_size 64: one batch of all 13 per epoch
    assert data.stats["train"]["blocks"] == 13 and data.stats["train"]["padding"] == 13 * 8 + 1 - 100
    assert data.train_batch_size == 13 and data.batches_per_epoch == 1
    assert [b["input_ids"].shape for b in data.val_batches()] == [(1, 8)]


def test_batches_before_setup_raise(tmp_path):
    data = TextFiles(str(write_jsonl(tmp_path / "a.jsonl", ["abc"])), cache_dir=str(tmp_path / "c"))
    with pytest.raises(RuntimeError, match="setup"):
        next(data.train_batches())


# -- PyDocCorpus ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pydoc_cache(shared_cache):
    return str(shared_cache)  # conftest's session cache: the stdlib is parsed once per session


@pytest.fixture(scope="session")
def pydoc(pydoc_cache):
    return PyDocCorpus(seq_len=32, batch_size=4, val_fraction=0.2, max_docs=60, cache_dir=pydoc_cache)


def test_pydoc_split_deterministic_and_disjoint(pydoc, pydoc_cache):
    docs = pydoc.documents()
    train_texts, train_locs = docs["train"]
    val_texts, val_locs = docs["val"]
    assert len(train_texts) + len(val_texts) == 60 and len(val_texts) > 0 and len(train_texts) > 0
    assert not set(train_texts) & set(val_texts)
    assert all(len(t) >= 200 for t in train_texts + val_texts)
    assert all(unit(loc) < 0.2 for loc in val_locs) and all(unit(loc) >= 0.2 for loc in train_locs)
    assert list(pydoc.train_texts()) == train_texts
    again = PyDocCorpus(seq_len=32, batch_size=4, val_fraction=0.2, max_docs=60, cache_dir=pydoc_cache)
    assert again.documents() == docs and again.fingerprint == pydoc.fingerprint
    other = PyDocCorpus(val_fraction=0.3, max_docs=60, cache_dir=pydoc_cache)
    assert other.fingerprint != pydoc.fingerprint
    # The split follows each document's location, so it does not move when max_docs grows.
    more = PyDocCorpus(val_fraction=0.2, max_docs=120, cache_dir=pydoc_cache).documents()
    assert set(val_texts) <= set(more["val"][0]) and set(train_texts) <= set(more["train"][0])


SAFE_TO_IMPORT = ("__future__", "_collections_abc", "_pydecimal", "_py_abc", "_markupbase", "_compat_pickle")


def test_pydoc_texts_equal_runtime_docstrings(pydoc):
    """ast extraction vs the interpreter's own __doc__ for modules that are safe to import."""
    checked = 0
    for texts, locs in pydoc.documents().values():
        for text, loc in zip(texts, locs):
            rel, _, qualname = loc.split(":", 2)
            module = rel[:-3].replace("/", ".")
            if module not in SAFE_TO_IMPORT:
                continue
            obj = importlib.import_module(module)
            try:
                for part in [] if qualname == "<module>" else qualname.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue  # a def nested in a function: not reachable at run time
            assert text == inspect.cleandoc(obj.__doc__), loc
            checked += 1
    assert checked >= 5


def test_pydoc_extraction_skips_tests_dedups_and_caches(pydoc, pydoc_cache, monkeypatch):
    pydoc.documents()  # make sure the cache entry exists
    monkeypatch.setattr(pydoc_module, "extract", lambda root: pytest.fail("extracted again despite the cache"))
    ds, skipped, key = load_or_extract(pydoc_cache)
    locations = ds["location"][:]
    texts = ds["text"][:]
    assert len(texts) > 1000 and len(set(texts)) == len(texts) and skipped["duplicate"] > 0
    top = {loc.split("/")[0] for loc in locations}
    assert not top & {"test", "idlelib", "lib2to3", "site-packages", "turtledemo", "ensurepip"}
    assert not any("/test/" in loc or "/tests/" in loc for loc in locations)
    assert "json/__init__.py" in {loc.split(":")[0] for loc in locations}
    # An independent count for one file: every docstring ast finds in json/decoder.py.
    root = pydoc_module.stdlib_dir()
    tree = ast.parse((root / "json" / "decoder.py").read_bytes())
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))]
    expected = {inspect.cleandoc(d) for n in nodes if (d := ast.get_docstring(n, clean=False)) is not None}
    assert {t for t, loc in zip(texts, locations) if loc.startswith("json/decoder.py:")} == expected


def test_pydoc_batches(pydoc):
    pydoc.setup(ByteTokenizer())
    stats = pydoc.stats
    docs = pydoc.documents()
    assert stats["train"]["documents"] == len(docs["train"][0]) and stats["val"]["documents"] == len(docs["val"][0])
    assert stats["train"]["bytes"] == sum(len(t.encode()) for t in docs["train"][0])
    batch = next(pydoc.train_batches())
    assert batch["input_ids"].shape == (4, 32) == batch["labels"].shape
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    first_val = next(pydoc.val_batches())
    assert first_val["input_ids"][0].tolist() == list(docs["val"][0][0].encode())[:32]


# -- TextFiles: formats --------------------------------------------------------------------


def load(tmp_path, files, **kw):
    kw.setdefault("val_fraction", 0)
    return TextFiles(files, seq_len=2, batch_size=1, cache_dir=str(tmp_path / "cache"), **kw)


def test_txt_document_paragraph_line(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("p1 line\nstill p1\n\np2\n\n\n\np3\n", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("x\r\n\r\ny\n", encoding="utf-8")
    files = [str(a), str(b)]
    assert list(load(tmp_path, files).train_texts()) == ["p1 line\nstill p1\n\np2\n\n\n\np3\n", "x\n\ny\n"]
    para = load(tmp_path, files, sample_by="paragraph")
    assert list(para.train_texts()) == ["p1 line\nstill p1", "p2", "p3\n", "x", "y\n"]
    line = load(tmp_path, files, sample_by="line")
    assert list(line.train_texts()) == ["p1 line", "still p1", "p2", "p3", "x", "y"]
    assert line.stats["skipped"] == {"blank_segment": 5}  # 4 blank lines in a.txt, 1 in b.txt


def test_jsonl_and_parquet_and_field(tmp_path):
    j = write_jsonl(tmp_path / "a.jsonl", ["first doc", "second doc"], field="body")
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"body": ["third doc", "fourth ☃"], "n": [1, 2]}), p)
    data = load(tmp_path, [str(j), str(p)], text_field="body")
    assert list(data.train_texts()) == ["first doc", "second doc", "third doc", "fourth ☃"]
    with pytest.raises(ValueError, match=r"row 0 \(0-based\), line 1 \(1-based\): field 'text' is missing"):
        list(load(tmp_path, [str(j)]).train_texts())


def test_textfiles_val_fraction_split(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line number {i}\n" for i in range(200)), encoding="utf-8")
    data = load(tmp_path, str(path), sample_by="line", val_fraction=0.25)
    splits = data._split_datasets()
    train, val = splits["train"]["text"][:], splits["val"]["text"][:]
    want_val = [f"line number {i}" for i in range(200) if unit(f"lines.txt:{i}") < 0.25]
    assert val == want_val and 20 < len(val) < 80
    assert sorted(train + val) == sorted(f"line number {i}" for i in range(200))


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(InputError, match="nope.txt"):
        TextFiles(str(tmp_path / "nope.txt"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv.*'\.csv'.*\.txt, \.jsonl, \.parquet"):
        TextFiles(str(tmp_path / "x.csv"))
    with pytest.raises(InputError, match=r"\*\.jsonl"):
        TextFiles(str(tmp_path / "*.jsonl"))
    with pytest.raises(ValueError, match="on_bad_row='ignore'.*error, skip"):
        TextFiles(str(tmp_path / "x.csv"), on_bad_row="ignore")


# -- TextFiles: bad rows -------------------------------------------------------------------

OK = b'{"text": "good row"}\n'
BAD_ROWS = [
    # name, file bytes, sample_by, what the error must say, skip-mode counts
    ("empty.jsonl", OK + b'{"text": ""}\n', "document", [r"row 1 \(0-based\), line 2 \(1-based\)", "empty"], {"empty": 1}),
    ("space.jsonl", OK + b"\n" + b'{"text": " \\n\\t "}\n', "document", [r"row 1 \(0-based\), line 3", "whitespace"], {"empty": 1}),
    ("missing.jsonl", OK + b'{"body": "x"}\n', "document", ["row 1", "line 2", "'text' is missing"], {"missing_field": 1}),
    ("null.jsonl", OK + b'{"text": null}\n', "document", ["row 1", "line 2", "'text' is null"], {"missing_field": 1}),
    ("number.jsonl", OK + b'{"text": 42}\n' + OK, "document", ["row 1", "line 2", "not a string but int 42"], {"non_string": 1}),
    ("bytes.jsonl", OK + OK + b'{"text": "caf\xe9"}\n', "document", ["row 2", "line 3", "0xe9", "UTF-8"], {"non_utf8": 1}),
    ("broken.jsonl", OK + b'{"text": "cut\n' + OK, "document", ["row 1", "line 2", "not valid JSON"], {"invalid_json": 1}),
    ("blank.txt", b" \n\t\n", "document", [r"row 0 \(0-based\)", "empty or only whitespace"], {"empty": 1}),
    ("bytes.txt", b"good line\nanother\nbad \xff byte\nlast\n", "line", [r"row 2 \(0-based\), line 3 \(1-based\)", "0xff", "UTF-8"], {"non_utf8": 1}),
    ("para.txt", b"good para\n\nsecond\nbad \xc3( here\n\nlast\n", "paragraph", ["row 1", "line 4", "0xc3"], {"non_utf8": 1}),
]


@pytest.mark.parametrize("name,content,sample_by,fragments,counts", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_row_error_names_file_and_row(tmp_path, name, content, sample_by, fragments, counts):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        list(load(tmp_path, str(path), sample_by=sample_by).train_texts())
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert re.search(fragment, message), (fragment, message)
    skipping = load(tmp_path, str(path), sample_by=sample_by, on_bad_row="skip")
    texts = list(skipping.train_texts())
    assert skipping.stats["skipped"] == counts
    assert all(t.strip() and "\ufffd" not in t for t in texts)
    assert len(texts) == {"blank.txt": 0, "bytes.txt": 3, "para.txt": 2}.get(name, content.count(b"good row"))
    assert skipping.skipped_examples and str(path) in skipping.skipped_examples[0]


def test_bad_parquet_rows(tmp_path):
    p = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["good", None, "  ", "fine"]}), p)
    with pytest.raises(ValueError, match=r"p\.parquet: row 1 \(0-based\): field 'text' is missing or null \(1 more"):
        list(load(tmp_path, str(p)).train_texts())
    skipping = load(tmp_path, str(p), on_bad_row="skip")
    assert list(skipping.train_texts()) == ["good", "fine"]
    assert skipping.stats["skipped"] == {"empty": 1, "missing_field": 1}
    q = tmp_path / "q.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), q)
    with pytest.raises(ValueError, match=r"q\.parquet: row 0 \(0-based\): field 'text' has type int64, not string"):
        list(load(tmp_path, str(q)).train_texts())
    skipping = load(tmp_path, str(q), on_bad_row="skip")
    assert list(skipping.train_texts()) == [] and skipping.stats["skipped"] == {"non_string": 3}
    r = tmp_path / "r.parquet"
    pq.write_table(pa.table({"body": ["a"]}), r)
    with pytest.raises(ValueError, match=r"r\.parquet: row 0 \(0-based\): field 'text' is missing; .*\['body'\]"):
        list(load(tmp_path, str(r)).train_texts())


@pytest.mark.parametrize("sample_by", ["document", "paragraph", "line"])
def test_own_txt_split_matches_datasets(tmp_path, sample_by):
    """Rows of a file with bad bytes are found by our own split; it must number rows as the
    datasets text loader does."""
    from datasets import load_dataset

    from rizzrun.data.text import _txt_rows

    raw = b"one\r\ntwo\rthree\n\n\n\nfour\n \nfive\n\n\n\n\nsix"
    path = tmp_path / "mixed.txt"
    path.write_bytes(raw)
    ref = load_dataset("text", data_files=str(path), sample_by=sample_by, split="train",
                       cache_dir=str(tmp_path / "hf"))["text"][:]
    assert [text for text, _ in _txt_rows(raw, sample_by)] == ref


def test_pack_by_document_hand_computed():
    from rizzrun.data.lm import PAD, _batch, pack_by_document

    # eos = 9, seq_len 3: doc [1,2,3,4,5] -> [9,1,2,3,4,5] -> rows [9,1,2,3], [3,4,5,PAD]; doc [7] -> [9,7,PAD,PAD]
    blocks, info = pack_by_document([[1, 2, 3, 4, 5], [7]], eos_id=9, seq_len=3)
    assert blocks.tolist() == [[9, 1, 2, 3], [3, 4, 5, PAD], [9, 7, PAD, PAD]]
    assert info == {"documents": 2, "tokens": 8, "blocks": 3, "dropped_tokens": 0, "padding": 3}
    batch = _batch(blocks)
    assert batch["input_ids"].tolist() == [[9, 1, 2], [3, 4, 5], [9, 7, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, 5, -100], [7, -100, -100]]
    # every target of every document appears exactly once
    targets = [t for row in batch["labels"].tolist() for t in row if t != -100]
    assert sorted(targets) == [1, 2, 3, 4, 5, 7]


def test_pydoc_document_packing_starts_every_row_with_eos(shared_cache):
    from rizzrun.data.pydoc import PyDocCorpus
    from rizzrun.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    data = PyDocCorpus(seq_len=64, batch_size=2, max_train_docs=5, packing="document", cache_dir=str(shared_cache))
    data.setup(tok, cache_dir=str(shared_cache))
    docs = list(data.train_texts())
    assert len(docs) == 5
    first_rows = [b for b in data._require_setup()["train"].tolist() if b[0] == tok.eos_id]
    assert len(first_rows) == 5  # one row per document starts with the separator
    assert {tuple(r[1:9]) for r in first_rows} == {tuple(tok.encode(d)[:8]) for d in docs}
    with pytest.raises(ValueError, match="packing='stream'"):
        PyDocCorpus(packing="stream")
