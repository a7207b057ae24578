"""Small data sets (issue 11): a short last block is padded and masked, a split smaller than a
batch gives a smaller batch, only an empty split is an error, and every empty split is named in
one one-line message. References are built by hand with plain lists, apart from the packer."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from rizzrun.data.hf import HFDataset
from rizzrun.data.text import TextFiles
from rizzrun.errors import InputError
from rizzrun.objectives.ce import CrossEntropy
from rizzrun.tokenizers.byte import ByteTokenizer
from test_data_hf import splitmix_unit  # HFDataset's hold-out hash, written out by hand

EOS = ByteTokenizer.eos_id
PAD = -1
DOCS = [f"note {i:02d}" for i in range(20)]  # 7 bytes each
VAL = "a held-out note"  # 15 bytes


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def unit(key: str) -> float:
    """TextFiles' hold-out hash, written out apart from the code."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64


def hand_blocks(texts, seq_len):
    """Documents joined with EOS, blocks of seq_len + 1 at stride seq_len, the last padded."""
    stream = []
    for i, text in enumerate(texts):
        stream += ([EOS] if i else []) + list(text.encode())
    n = math.ceil((len(stream) - 1) / seq_len)
    stream += [PAD] * (n * seq_len + 1 - len(stream))
    return [stream[k * seq_len: k * seq_len + seq_len + 1] for k in range(n)]


def as_batch(blocks):
    """input_ids / labels of blocks by hand: PAD is input 0 and label -100."""
    return ([[0 if t == PAD else t for t in b[:-1]] for b in blocks],
            [[-100 if t == PAD else t for t in b[1:]] for b in blocks])


class Zeros(torch.nn.Module):
    """Uniform logits: the loss is log(vocab) per counted target, whatever the input."""

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, 300)


@pytest.fixture
def twenty(tmp_path):
    train = write_jsonl(tmp_path / "notes.jsonl", DOCS)
    val = write_jsonl(tmp_path / "val.jsonl", [VAL])
    return train, val


def test_twenty_documents_pad_the_last_block_and_batch_smaller(tmp_path, twenty):
    train, val = twenty
    # train stream: 20 x 7 bytes + 19 EOS = 159 tokens; seq_len 16 -> ceil(158 / 16) = 10 blocks,
    # the last holding 159 - 144 = 15 tokens and 2 PAD. 10 blocks < batch_size 32: batches of 10.
    data = TextFiles(str(train), val_files=str(val), seq_len=16, batch_size=32, cache_dir=str(tmp_path / "c"))
    data.setup(ByteTokenizer())
    blocks = hand_blocks(DOCS, 16)
    assert len(blocks) == 10 and blocks[-1][-3:] == [ord("9"), PAD, PAD] and blocks[-1].count(PAD) == 2
    assert data.stats["train"] == {"documents": 20, "tokens": 159, "blocks": 10, "dropped_tokens": 0, "padding": 2,
                                   "bytes": 140}
    assert data.train_batch_size == 10 and data.batches_per_epoch == 1
    stream = data.train_batches()
    for epoch in range(3):  # batch i = all 10 blocks in epoch i's permutation
        batch = next(stream)
        order = data.epoch_order(epoch).tolist()
        inputs, labels = as_batch([blocks[k] for k in order])
        assert batch["input_ids"].tolist() == inputs and batch["labels"].tolist() == labels
        assert (batch["labels"] != -100).sum() == 158  # every token but the first is a target once
    # resume: batch 2 on its own is the third batch of the uninterrupted stream
    assert torch.equal(next(data.train_batches(start=2))["input_ids"], batch["input_ids"])
    # the padded positions are in no loss: CrossEntropy counts 158 targets, loss = log(300)
    loss, metrics = CrossEntropy()(Zeros(), batch)
    assert metrics["tokens"] == 158 and loss.item() == pytest.approx(math.log(300))
    # validation: 1 document of 15 tokens -> ceil(14 / 16) = 1 block, 14 targets, 2 PAD
    (val_batch,) = list(data.val_batches())
    assert val_batch["input_ids"].tolist() == [list(VAL.encode()) + [0]]
    assert val_batch["labels"].tolist() == [list(VAL.encode())[1:] + [-100, -100]]
    assert data.stats["val"]["padding"] == 2


def test_one_document_validation_split_by_hold_out(tmp_path, twenty):
    train, _ = twenty
    units = sorted((unit(f"notes.jsonl:{r}"), r) for r in range(20))
    fraction = (units[0][0] + units[1][0]) / 2  # holds out exactly the row with the smallest hash
    held = units[0][1]
    data = TextFiles(str(train), val_fraction=fraction, seq_len=4, batch_size=64, cache_dir=str(tmp_path / "c"))
    data.setup(ByteTokenizer())
    rest = [d for r, d in enumerate(DOCS) if r != held]
    # val: 7 tokens -> ceil(6 / 4) = 2 blocks, the second " NN" + 2 PAD; train: 19 x 7 + 18 = 151 tokens
    # -> ceil(150 / 4) = 38 blocks, fewer than batch_size 64
    want_val = hand_blocks([DOCS[held]], 4)
    assert want_val[1] == list(DOCS[held][4:].encode()) + [PAD] * 2
    got = [b for batch in data.val_batches() for b in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]
    assert got == list(zip(*as_batch(want_val)))
    assert data.stats["train"]["blocks"] == len(hand_blocks(rest, 4)) == 38
    assert data.train_batch_size == 38


def test_empty_splits_are_one_error_naming_keys_and_counts(tmp_path, twenty):
    train, _ = twenty
    lowest = min(unit(f"notes.jsonl:{r}") for r in range(20))
    fraction = lowest / 2  # no row's hash is below it: the hold-out is empty
    data = TextFiles(str(train), val_fraction=fraction, cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError) as err:
        data.setup(ByteTokenizer())
    assert str(err.value) == (
        f"data.val_fraction={fraction}: the validation split is empty (0 of the 20 documents held out): raise "
        f"data.val_fraction, set data.val_files=PATH, or set data.val_fraction=0 for no validation")
    # both splits empty: every train and val row bad and skipped; one message, train first
    bad_train = tmp_path / "bad_train.jsonl"
    bad_train.write_text('{"text": " "}\n{"body": "x"}\n')
    bad_val = tmp_path / "bad_val.jsonl"
    bad_val.write_text('{"text": ""}\n')
    data = TextFiles(str(bad_train), val_files=[str(bad_val)], on_bad_row="skip", cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError) as err:
        data.setup(ByteTokenizer())
    assert str(err.value) == (
        f"data.train_files={bad_train}: the training split is empty (0 documents; 2 bad rows skipped "
        f"(data.on_bad_row=skip)): add documents; data.val_files=[{bad_val}]: the validation split is empty "
        f"(0 documents; 1 bad row skipped (data.on_bad_row=skip)): add documents, or set data.val_files=null to "
        f"hold out data.val_fraction of the training documents")
    # every document held out: the training split is the empty one
    highest = max(unit(f"notes.jsonl:{r}") for r in range(20))
    fraction = (highest + 1) / 2
    data = TextFiles(str(train), val_fraction=fraction, cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError) as err:
        data.setup(ByteTokenizer())
    assert str(err.value) == (f"data.val_fraction={fraction}: the training split is empty (all 20 documents held out "
                              f"for validation): lower data.val_fraction or set data.val_files=PATH")
    # documents but nothing to predict: one 1-token training document
    one = write_jsonl(tmp_path / "one.jsonl", ["a"])
    data = TextFiles(str(one), val_fraction=0, cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError) as err:
        data.setup(ByteTokenizer())
    assert str(err.value) == (f"data.train_files={one}: the training split is empty (1 document holding 1 token, "
                              f"none to predict): add documents")


def test_hf_empty_hold_out_and_small_streaming_batches(tmp_path):
    path = tmp_path / "notes.jsonl"
    write_jsonl(path, DOCS)
    fraction = min(splitmix_unit(r) for r in range(20)) / 2
    data = HFDataset(str(path), val_fraction=fraction, cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError) as err:
        list(data.train_texts())
    assert str(err.value) == (
        f"data.val_fraction={fraction}: the validation split is empty (0 of the 20 rows of HFDataset {str(path)!r} "
        f"split 'train' held out): raise data.val_fraction, set data.val_docs=N or data.val_split=NAME, or set "
        f"data.val_fraction=0 for no validation")
    # streaming, 19 training documents (151 tokens) -> ceil(150 / 16) = 10 blocks < batch_size 32:
    # setup reads the whole (short) stream, so every batch holds the 10 blocks
    stream = HFDataset(str(path), val_docs=1, streaming=True, shuffle_buffer=0, seq_len=16, batch_size=32,
                       cache_dir=str(tmp_path / "c"))
    stream.setup(ByteTokenizer())
    assert stream.train_batch_size == 10 and stream.batches_per_epoch == 1
    inputs, labels = as_batch(hand_blocks(DOCS[1:], 16))
    for batch in [next(stream.train_batches()), next(stream.train_batches(start=3))]:
        assert batch["input_ids"].tolist() == inputs and batch["labels"].tolist() == labels
    assert stream.stats["train"]["padding"] == 10 * 16 + 1 - 151


def test_input_errors_are_one_line_and_name_the_key(tmp_path, twenty):
    train, _ = twenty
    cases = [
        (lambda: TextFiles(str(tmp_path / "missing.jsonl")), [f"data.train_files={tmp_path / 'missing.jsonl'}",
                                                               "does not exist"]),
        (lambda: TextFiles(str(train), on_bad_row="drop"), ["data.on_bad_row='drop'", "error, skip"]),
        (lambda: TextFiles(str(train), seq_len=0), ["data.seq_len=0", ">= 1"]),
        (lambda: HFDataset(str(tmp_path / "nope")), ["no such file or folder", "data.path must be"]),
        (lambda: HFDataset(str(train), streaming=True, packing="document"),
         ["data.packing='document'", "data.streaming=false"]),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "x"}\n')
    cases.append((lambda: list(TextFiles(str(bad), val_fraction=0, cache_dir=str(tmp_path / "c")).train_texts()),
                  [f"{bad}: row 1 (0-based), line 2 (1-based)", "data.text_field", "data.on_bad_row=skip"]))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not a parquet file")
    cases.append((lambda: list(TextFiles(str(corrupt), cache_dir=str(tmp_path / "c")).train_texts()),
                  [f"data.train_files={corrupt}: cannot read {corrupt}", "ArrowInvalid"]))
    from rizzrun.tokenizers.hf import HFTokenizer

    cases.append((lambda: HFTokenizer(str(tmp_path / "no-folder")), [f"{tmp_path / 'no-folder'} does not exist",
                                                                    "tokenizer.path must be"]))
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{not json\n")
    cases.append((lambda: HFTokenizer(str(tmp_path / "tok")), ["tokenizer.json", "tokenizer.path"]))
    for make, fragments in cases:
        with pytest.raises(InputError) as err:
            make()
        message = str(err.value)
        assert "\n" not in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def test_a_few_training_steps_on_twenty_documents(tmp_path, twenty):
    from rizzrun.config import compose
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    train, val = twenty
    cfg = compose([
        "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "data=text", f"data.train_files={train}", f"data.val_files={val}", "data.seq_len=16", "data.batch_size=32",
        "trainer.max_steps=3", "trainer.val_every=3", "trainer.log_every=1", "trainer.samples_per_val=0",
        "scheduler.warmup_steps=1", "logger=none", f"cache_dir={tmp_path / 'cache'}",
    ])
    summary = run(cfg, tmp_path / "run")
    assert summary["step"] == 3 and math.isfinite(summary["val_loss"])
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    # each step: one batch of all 10 blocks, 158 targets (padding masked out)
    assert [r["train/tokens"] for r in rows] == [158, 158, 158]
