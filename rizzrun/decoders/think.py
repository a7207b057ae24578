"""ThinK decoding: the model's key cache pruned per head, by query-driven channel scores
(Xu et al., "ThinK: Thinner Key Cache by Query-Driven Pruning", arXiv 2407.21018)."""

from __future__ import annotations

from rizzrun.attention.think import KeyPruning
from rizzrun.decoders.base import Decoder
from rizzrun.decoders.loop import ModelStepper

__all__ = ["ThinK"]


class ThinK(Decoder):
    """Decode with a thin key cache: any model whose token mixers keep a plain softmax key/value
    cache (SDPAttention, NaiveAttention, ThinKAttention), any recipe; training-free.

    At the prefill each layer scores its key channels per KV head from the last obs_window
    prompt queries and keeps D - floor(ratio * D) of them for all but the last recent_size prompt
    keys, stored thin; later keys stay full width (`rizzrun.attention.think`). The decoder asks
    for it through `model.init_cache(..., key_pruning=KeyPruning(ratio, obs_window, recent_size))`;
    a model with another mixer (lightning attention, SSMax, RWKV) raises ValueError naming it.
    A ThinKAttention model decodes with these settings, not its own.

    ratio: fraction of key channels pruned, 0 <= ratio < 1 (paper: 0.4; 0 = the plain cache, bit
    for bit). obs_window (>= 1), recent_size (>= 0): the paper's 32 each. The other knobs are
    `Decoder`'s (greedy by default; do_sample=True samples with temperature/top-k/top-p/typical).
    """

    def __init__(
        self,
        ratio: float = 0.4,
        obs_window: int = 32,
        recent_size: int = 32,
        *,
        max_new_tokens: int = 64,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        typical_p: float = 1.0,
        seed: int | None = None,
    ):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, do_sample=do_sample,
                         temperature=temperature, top_k=top_k, top_p=top_p, typical_p=typical_p, seed=seed)
        self._key_pruning = KeyPruning(ratio, obs_window, recent_size)  # validates
        self.ratio, self.obs_window, self.recent_size = ratio, obs_window, recent_size

    @property
    def key_pruning(self) -> KeyPruning:
        return self._key_pruning

    def stepper(self, model, batch_size: int, max_len: int, device):
        return ModelStepper(model, batch_size, max_len, device, key_pruning=self._key_pruning)

    def check_model(self, model) -> None:
        """Every layer must keep a softmax key cache it can prune: a one-position cache is asked for
        (ValueError naming the first layer that cannot)."""
        model.init_cache(1, max_len=1, key_pruning=self._key_pruning)
