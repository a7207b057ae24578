"""Tokenizers: byte ids by hand, BPE against the `tokenizers` library, the on-disk cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rizzrun.tokenizers import META_FILE, load_tokenizer
from rizzrun.tokenizers import bpe as bpe_module
from rizzrun.tokenizers.bpe import BPETokenizer
from rizzrun.tokenizers.byte import ByteTokenizer

# -- ByteTokenizer -------------------------------------------------------------------------


def test_byte_ids_by_hand():
    tok = ByteTokenizer()
    # "A" = 0x41; "é" = C3 A9; "€" = E2 82 AC (UTF-8 tables)
    assert tok.encode("Aé€") == [65, 0xC3, 0xA9, 0xE2, 0x82, 0xAC]
    assert (tok.bos_id, tok.eos_id, tok.pad_id, ByteTokenizer.vocab_size) == (256, 257, 258, 259)


@pytest.mark.parametrize("text", ["", "hello", "naïve café — 日本語 🙂", "tab\tnew\nline\x00nul"])
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_decode_drops_specials_and_replaces_invalid_utf8():
    tok = ByteTokenizer()
    assert tok.decode([256, 72, 105, 257, 258]) == "Hi"
    assert tok.decode([0xFF, 65]) == "\ufffdA"
    with pytest.raises(ValueError, match="259.*0..258"):
        tok.decode([259])


def test_byte_save_load(tmp_path):
    ByteTokenizer().save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["kind"] == "byte"
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, ByteTokenizer) and tok.encode("é") == [0xC3, 0xA9]


def test_load_tokenizer_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_tokenizer(tmp_path)
    (tmp_path / META_FILE).write_text('{"kind": "wordpiece"}')
    with pytest.raises(ValueError, match="wordpiece.*'byte', 'bpe'"):
        load_tokenizer(tmp_path)


# -- BPETokenizer --------------------------------------------------------------------------

WORDS = "the model reads tokens and predicts the next token from the previous ones".split()


def corpus():
    """A few hundred deterministic sentences: enough repeated pairs for a few dozen merges."""
    out = []
    for i in range(300):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 5)]
        out.append(" ".join(words) + f". Number {i}, café.")
    return out


@pytest.fixture
def trained(tmp_path):
    tok = BPETokenizer(vocab_size=320, min_frequency=2, cache_dir=str(tmp_path / "cache"))
    tok.prepare(corpus, "datafp1")
    return tok


def test_bpe_round_trip_and_specials(trained):
    assert (trained.bos_id, trained.eos_id, trained.pad_id) == (0, 1, 2)
    assert trained.trained_vocab_size == 320  # the corpus has enough pairs to fill it
    for text in ["", "the model reads the next token", "naïve 日本語 🙂 \n\t x"]:
        assert trained.decode(trained.encode(text)) == text
    # Merges compress the training text: fewer ids than bytes.
    sample = corpus()[5]
    assert len(trained.encode(sample)) < len(sample.encode("utf-8")) / 2
    assert trained.decode([0] + trained.encode("the") + [1, 2]) == "the"


def test_bpe_literal_special_text_is_not_a_special_id(trained):
    ids = trained.encode("a <eos> b")
    assert trained.eos_id not in ids
    assert trained.decode(ids) == "a <eos> b"


def test_bpe_ids_equal_tokenizers_library(trained, tmp_path):
    from tokenizers import Tokenizer

    trained.save(tmp_path / "saved")
    ref = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    for text in corpus()[:20] + ["unseen wörds: zebra quokka", "  leading spaces", ""]:
        assert trained.encode(text) == ref.encode(text).ids
    texts = corpus()[:10]
    assert trained.encode_batch(texts) == [ref.encode(t).ids for t in texts]


def test_bpe_load_tokenizer_round_trip(trained, tmp_path):
    trained.save(tmp_path / "saved")
    loaded = load_tokenizer(tmp_path / "saved")
    assert isinstance(loaded, BPETokenizer)
    assert loaded.fingerprint == trained.fingerprint
    text = "the next token, café 🙂 <eos>"
    assert loaded.encode(text) == trained.encode(text)
    assert loaded.decode(loaded.encode(text)) == text


def test_bpe_cache_hit_does_not_train(trained, tmp_path, monkeypatch):
    path = trained.cache_path("datafp1")
    assert path == tmp_path / "cache" / "tokenizers" / "bpe-datafp1-v320-f2" / "tokenizer.json"
    mtime = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite a cache entry")

    def no_texts():
        raise AssertionError("read the corpus despite a cache entry")

    monkeypatch.setattr(bpe_module, "_train", no_training)
    again = BPETokenizer(vocab_size=320, min_frequency=2, cache_dir=str(tmp_path / "cache"))
    again.prepare(no_texts, "datafp1")
    assert again.fingerprint == trained.fingerprint
    assert again.encode("the model") == trained.encode("the model")
    assert path.stat().st_mtime_ns == mtime


def test_bpe_cache_keyed_by_vocab_min_frequency_and_data(trained, tmp_path, monkeypatch):
    calls = []
    real_train = bpe_module._train

    def counting(texts, vocab_size, min_frequency):
        calls.append((vocab_size, min_frequency))
        return real_train(texts, vocab_size, min_frequency)

    monkeypatch.setattr(bpe_module, "_train", counting)
    cache = str(tmp_path / "cache")
    other_vocab = BPETokenizer(vocab_size=300, min_frequency=2, cache_dir=cache)
    other_vocab.prepare(corpus, "datafp1")
    other_freq = BPETokenizer(vocab_size=320, min_frequency=3, cache_dir=cache)
    other_freq.prepare(corpus, "datafp1")
    other_data = BPETokenizer(vocab_size=320, min_frequency=2, cache_dir=cache)
    other_data.prepare(lambda: corpus()[:100], "datafp2")
    assert calls == [(300, 2), (320, 3), (320, 2)]
    entries = sorted(p.name for p in (tmp_path / "cache" / "tokenizers").iterdir())
    assert entries == ["bpe-datafp1-v300-f2", "bpe-datafp1-v320-f2", "bpe-datafp1-v320-f3", "bpe-datafp2-v320-f2"]
    assert other_vocab.trained_vocab_size == 300
    # (min_frequency 3 may learn the same merges on this corpus, so only these must differ)
    assert len({t.fingerprint for t in (trained, other_vocab, other_data)}) == 3


def test_bpe_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path / "envcache"))
    tok = BPETokenizer(vocab_size=300)
    tok.prepare(corpus, "fp")
    assert (tmp_path / "envcache" / "tokenizers" / "bpe-fp-v300-f2" / "tokenizer.json").is_file()


def test_bpe_before_prepare_and_bad_arguments():
    tok = BPETokenizer(vocab_size=300)
    for use in (lambda: tok.encode("x"), lambda: tok.eos_id, lambda: tok.fingerprint):
        with pytest.raises(RuntimeError, match="prepare"):
            use()
    with pytest.raises(ValueError, match="vocab_size=100.*>= 259"):
        BPETokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="min_frequency=0"):
        BPETokenizer(min_frequency=0)


def test_tokenizers_package_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import rizzrun.tokenizers, rizzrun.tokenizers.byte, rizzrun.tokenizers.bpe, rizzrun.data\n"
        "from rizzrun.tokenizers.bpe import BPETokenizer\n"
        "t = BPETokenizer(vocab_size=300, cache_dir=sys.argv[1])\n"
        "t.prepare(lambda: ['ab ab ab'] * 10, 'fp')\n"
        "assert t.decode(t.encode('ab')) == 'ab'\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
