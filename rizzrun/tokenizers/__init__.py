"""Tokenizers: text <-> ids.

`ByteTokenizer` (UTF-8 bytes + 3 specials), `BPETokenizer` (byte-level BPE trained on the
run's own training split, cached on disk) and `HFTokenizer` (a local Hugging Face tokenizer
folder, ids as `transformers.AutoTokenizer`). This package imports no torch: the config
validator imports it to learn vocabulary sizes before anything heavy is loaded.
`FASTTokenizer` (fast.py, arXiv 2501.09747) maps action chunks, not text, to ids: see its docstring.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Written by every tokenizer's `save` beside its own files; `load_tokenizer` dispatches on it.
META_FILE = "rizzrun_tokenizer.json"

__all__ = ["META_FILE", "load_tokenizer"]


def load_tokenizer(directory: str | os.PathLike):
    """Rebuild the tokenizer that `tok.save(directory)` wrote; it encodes identically."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: load_tokenizer reads folders written by a rizzrun "
            f"tokenizer's save() (ByteTokenizer, BPETokenizer or HFTokenizer), which always write {META_FILE}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind = meta["kind"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{meta_path}: expected a JSON object with a 'kind' key ({err})") from err
    if kind == "byte":
        from .byte import ByteTokenizer

        return ByteTokenizer.load(directory)
    if kind == "bpe":
        from .bpe import BPETokenizer

        return BPETokenizer.load(directory)
    if kind == "hf":
        from .hf import HFTokenizer

        return HFTokenizer.load(directory)
    raise ValueError(f"{meta_path}: unknown tokenizer kind {kind!r}; valid kinds: 'byte', 'bpe', 'hf'")
