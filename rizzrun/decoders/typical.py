"""Locally typical sampling (Meister, Pimentel, Wiher, Cotterell, arXiv 2202.00666)."""

from __future__ import annotations

from rizzrun.decoders.sample import Sample

__all__ = ["Typical"]


class Typical(Sample):
    """Sample from the locally typical set: the tokens whose surprisal -log p(y) is closest to
    the entropy H of the step's distribution, up to probability mass typical_p
    (`rizzrun.decoders.processors.typical_filter`, mask for mask `transformers`'
    `TypicalLogitsWarper`). It composes with temperature, top-k and top-p in transformers'
    order (temperature, top-k, top-p, typical); defaults leave them off. typical_p 0.9 is
    transformers' default; the paper found about 0.95 best for summarisation and 0.2 for stories.
    """

    def __init__(
        self,
        max_new_tokens: int = 64,
        typical_p: float = 0.9,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        seed: int | None = None,
        compile: bool = False,
    ):
        super().__init__(max_new_tokens, temperature, top_k, top_p, repetition_penalty, min_new_tokens, seed,
                         typical_p=typical_p, compile=compile)
