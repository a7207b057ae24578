"""Ancestral sampling with temperature, top-k, top-p (nucleus, Holtzman et al., arXiv 1904.09751)
and typical (Meister et al., arXiv 2202.00666)."""

from __future__ import annotations

from rizzrun.decoders.base import Decoder

__all__ = ["Sample"]



class Sample(Decoder):
    """Sample each next token from softmax(typical(top_p(top_k(processed logits / temperature)))).

    The processed logits are the model's after the repetition penalty (CTRL, Keskar et al.,
    arXiv 1909.05858; 1.0 = off) and min-new-tokens (EOS forbidden until that many tokens are
    generated; 0 = off), applied by `decode_loop`; then come the warpers, temperature, top-k
    (0 = off), top-p (1.0 = off), typical (1.0 = off), in that order: the order of
    `transformers.generate(do_sample=True)`. Seeding and compile as `Decoder` says.
    """

    def __init__(
        self,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        seed: int | None = None,
        typical_p: float = 1.0,
        compile: bool = False,
    ):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, do_sample=True, temperature=temperature,
                         top_k=top_k, top_p=top_p, typical_p=typical_p, seed=seed, compile=compile)
