"""Config rules of `rizzrun.tokenizers.byte.ByteTokenizer`, with no torch import (see
rizzrun.config.specs): one id per UTF-8 byte, so a text's length is known without the tokenizer."""

from __future__ import annotations


def prompt_tokens(node: dict, text: str) -> int:
    """`ByteTokenizer.encode(text)` has one id per UTF-8 byte and adds no special token."""
    return len(text.encode("utf-8"))
