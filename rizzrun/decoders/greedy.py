"""Greedy decoding: the most likely token at every step."""

from __future__ import annotations

from rizzrun.decoders.base import Decoder

__all__ = ["Greedy"]


class Greedy(Decoder):
    """Greedy decoding: at every step take the argmax token (lowest id among exact ties).

    repetition_penalty (CTRL, Keskar et al., arXiv 1909.05858; 1.0 = off) and min_new_tokens
    (EOS forbidden until that many tokens are generated; 0 = off) act on the logits before the
    argmax, as in `transformers.generate(do_sample=False)`. compile: see `Decoder`. See `Decoder`
    for generate().
    """

    def __init__(self, max_new_tokens: int = 64, repetition_penalty: float = 1.0, min_new_tokens: int = 0,
                 compile: bool = False):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, compile=compile)
