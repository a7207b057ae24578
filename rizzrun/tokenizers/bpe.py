"""BPETokenizer: byte-level BPE trained on the run's training split, cached on disk.

Byte-level BPE as in GPT-2 (Radford et al. 2019): text is mapped to bytes, split by the GPT-2
regex, and merges are learned with the Hugging Face `tokenizers` library. Specials `<bos>`,
`<eos>`, `<pad>` take ids 0, 1, 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from rizzrun.errors import InputError
from rizzrun.files import write_atomic

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")
# 256 byte symbols + the specials: below this the byte alphabet itself does not fit.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def _train(texts: Iterable[str], vocab_size: int, min_frequency: int):
    """Learn merges from `texts`; returns a `tokenizers.Tokenizer`. Module-level so tests can
    observe whether training ran."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte is in the vocabulary even if the corpus lacks it: no unknown tokens, ever.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class BPETokenizer:
    """Byte-level BPE learned from the training split by `prepare`.

    vocab_size: the requested size; merges stop early if the corpus has too few pairs seen
        `min_frequency` times, so the trained vocabulary (`trained_vocab_size`) can be smaller.
        `vocab_size` stays the requested value so the model's embedding size is a function
        of the config alone; ids never reach it.
    cache_dir: root of the on-disk cache (None: $RIZZRUN_CACHE or ~/.cache/rizzrun). Trained
        tokenizers live at <cache_dir>/tokenizers/bpe-<data fp>-v<vocab_size>-f<min_frequency>/.

    Text that happens to contain "<eos>" etc. is encoded as ordinary text, never as the
    special id (`encode_special_tokens`); specials only enter through the data pipeline.
    """

    def __init__(self, vocab_size: int = 2048, min_frequency: int = 2, cache_dir: str | None = None):
        if int(vocab_size) != vocab_size or vocab_size < MIN_VOCAB_SIZE:
            raise InputError(
                f"tokenizer.vocab_size={vocab_size!r}: must be an integer >= {MIN_VOCAB_SIZE} "
                f"(256 byte symbols + {len(SPECIAL_TOKENS)} specials)"
            )
        if int(min_frequency) != min_frequency or min_frequency < 1:
            raise InputError(f"tokenizer.min_frequency={min_frequency!r}: must be an integer >= 1")
        self.vocab_size = int(vocab_size)
        self.min_frequency = int(min_frequency)
        self.cache_dir = cache_dir
        self._tok = None
        self._json: str | None = None
        self._data_fingerprint: str | None = None
        self._frozen = False  # loaded from a saved folder: its vocabulary is fixed

    # -- preparation ---------------------------------------------------------------------

    def cache_path(self, fingerprint: str) -> Path:
        """Where the tokenizer trained on data `fingerprint` is (or will be) cached."""
        from rizzrun.paths import cache_root

        # Data fingerprints are hex digests in practice; anything else is hashed into a safe name.
        key = fingerprint if _SAFE_NAME.match(fingerprint) else hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
        name = f"bpe-{key}-v{self.vocab_size}-f{self.min_frequency}"
        return cache_root(self.cache_dir) / "tokenizers" / name / "tokenizer.json"

    def prepare(self, texts: Callable[[], Iterable[str]], fingerprint: str) -> None:
        """Load the tokenizer trained on data `fingerprint` from the cache, or train it on
        `texts()` and cache it. `texts` is only called when training is needed."""
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"BPETokenizer.prepare: fingerprint must be a non-empty string, got {fingerprint!r}")
        if self._frozen or (self._tok is not None and self._data_fingerprint == fingerprint):
            return
        path = self.cache_path(fingerprint)
        if path.is_file():
            self._set(path.read_text(encoding="utf-8"), source=str(path))
        else:
            tok = _train(texts(), self.vocab_size, self.min_frequency)
            text = tok.to_str()
            write_atomic(path, text)
            self._set(text, source=str(path))
        self._data_fingerprint = fingerprint

    def _set(self, tokenizer_json: str, source: str) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tokenizer_json)
        ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != [0, 1, 2]:
            raise ValueError(f"{source}: special tokens {SPECIAL_TOKENS} must have ids [0, 1, 2], found {ids}")
        if tok.get_vocab_size() > self.vocab_size:
            raise ValueError(
                f"{source}: vocabulary has {tok.get_vocab_size()} entries, more than vocab_size={self.vocab_size}"
            )
        # Not stored in tokenizer.json, so it is set on every load.
        tok.encode_special_tokens = True
        self._tok, self._json = tok, tokenizer_json

    def _ready(self):
        if self._tok is None:
            raise RuntimeError(
                "BPETokenizer is not trained yet: call tok.prepare(texts_fn, data_fingerprint) "
                "(the runner does this with the training split) or load one with "
                "rizzrun.tokenizers.load_tokenizer(directory)"
            )
        return self._tok

    # -- the tokenizer interface -----------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the trained tokenizer.json: equal fingerprints encode identically."""
        self._ready()
        return "bpe-" + hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:32]

    @property
    def trained_vocab_size(self) -> int:
        return self._ready().get_vocab_size()

    @property
    def bos_id(self) -> int:
        return self._ready().token_to_id("<bos>")

    @property
    def eos_id(self) -> int:
        return self._ready().token_to_id("<eos>")

    @property
    def pad_id(self) -> int:
        return self._ready().token_to_id("<pad>")

    def encode(self, text: str) -> list[int]:
        return self._ready().encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Same ids as `encode` on each text; batched calls run in parallel in Rust."""
        return [e.ids for e in self._ready().encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        tok = self._ready()
        n = tok.get_vocab_size()
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for this BPETokenizer (valid: 0..{n - 1})")
        return tok.decode(ids, skip_special_tokens=True)

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json (readable by `tokenizers.Tokenizer.from_file`) and rizzrun's
        small metadata file."""
        from . import META_FILE

        self._ready()
        directory = Path(directory)
        write_atomic(directory / "tokenizer.json", self._json)
        meta = {
            "kind": "bpe",
            "vocab_size": self.vocab_size,
            "min_frequency": self.min_frequency,
            "data_fingerprint": self._data_fingerprint,
            "fingerprint": self.fingerprint,
        }
        write_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BPETokenizer:
        from . import META_FILE

        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a saved BPETokenizer folder holds tokenizer.json and {META_FILE}"
            )
        tok = cls(vocab_size=meta["vocab_size"], min_frequency=meta.get("min_frequency", 2))
        tok._set(path.read_text(encoding="utf-8"), source=str(path))
        tok._data_fingerprint = meta.get("data_fingerprint")
        tok._frozen = True
        return tok

    def __repr__(self) -> str:
        state = "trained" if self._tok is not None else "untrained"
        return f"BPETokenizer(vocab_size={self.vocab_size}, min_frequency={self.min_frequency}, {state})"
