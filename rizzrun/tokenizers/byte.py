"""ByteTokenizer: UTF-8 bytes as ids, plus three special tokens."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


class ByteTokenizer:
    """Ids 0..255 are the bytes of the UTF-8 encoding; 256 = bos, 257 = eos, 258 = pad.

    Needs no training: `prepare` does nothing. `decode` drops specials and replaces
    invalid UTF-8 (a model can emit any byte sequence) with U+FFFD.
    """

    # A class attribute on purpose: the config validator reads it without building anything.
    vocab_size = 259
    bos_id = 256
    eos_id = 257
    pad_id = 258

    @property
    def fingerprint(self) -> str:
        # Bump the suffix if the id mapping ever changes, so tokenization caches are not reused.
        return "byte-utf8-v1"

    def prepare(self, texts: Callable[[], Iterable[str]], fingerprint: str) -> None:
        """Nothing to learn; present so every tokenizer can be prepared the same way."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                out.append(i)
            elif not 256 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is out of range for ByteTokenizer (valid: 0..{self.vocab_size - 1})")
        return out.decode("utf-8", errors="replace")

    def save(self, directory: str | os.PathLike) -> None:
        from . import META_FILE

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "byte", "vocab_size": self.vocab_size, "fingerprint": self.fingerprint}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ByteTokenizer:
        from . import META_FILE

        path = Path(directory) / META_FILE
        tok = cls()
        saved = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        if saved != tok.fingerprint:
            raise ValueError(
                f"{path}: saved by a ByteTokenizer with fingerprint {saved!r}, but this version "
                f"is {tok.fingerprint!r}; the id mapping differs, so the saved ids would decode wrongly"
            )
        return tok

    def __repr__(self) -> str:
        return "ByteTokenizer()"
