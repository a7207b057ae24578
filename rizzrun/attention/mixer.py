"""What the model hands each layer's token mixer (`Positions`) and keeps for it (`DecodingCache`).

See `rizzrun.attention` for the mixer contract. Shapes: B batch, T new tokens, D head_dim.
"""

import copy
from typing import NamedTuple, Optional

import torch


class Positions(NamedTuple):
    """Where the T new tokens of a forward sit, the same for every layer.

    start: absolute position of the first new token, i.e. the tokens already in the layer state
        (0 for a training forward and for a prefill into an empty cache).
    cos, sin: the RoPE tables (T, D) at positions [start, start + T); a mixer without rotary
        embeddings ignores them.
    key_padding_mask: (B, start + T) bool, True = real token, over the whole row so far; None
        when the row has no padding (the fast path). Padding is on the left (`generate` pads so).
    """

    start: int
    cos: torch.Tensor
    sin: torch.Tensor
    key_padding_mask: Optional[torch.Tensor] = None

    def new_tokens_mask(self) -> Optional[torch.Tensor]:
        """(B, T) bool: which of the new tokens are real; None without padding."""
        if self.key_padding_mask is None:
            return None
        return self.key_padding_mask[:, self.start:]


class DecodingCache:
    """A model's decoding state: each layer's own state (`mixer.init_state`) plus what the layers
    share: the next position `pos` and the key padding mask (B, max_len) of the rows.

    Allocated once (`Llama.init_cache`) and written in place by `Llama.step`; `reset()` empties
    it for a new batch of prompts, keeping its memory. `repeat_interleave(G)` makes a cache of
    B * G rows from a filled one (row b * G + g = row b: a prompt prefilled once, decoded G
    times), when every layer's state can (`can_repeat_interleave`).
    """

    def __init__(self, layers: list, batch_size: int, max_len: int, device=None):
        self.layers = layers
        self.mask = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.has_padding = False  # lets unpadded decoding keep the kernels' mask-free fast path
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    def reset(self) -> None:
        self.pos = 0
        self.mask.fill_(True)
        self.has_padding = False
        for state in self.layers:
            state.reset()

    def nbytes(self) -> int:
        """Bytes held by the layers' states (what decoding memory grows with, or does not)."""
        return sum(state.nbytes() for state in self.layers)

    def can_repeat_interleave(self) -> bool:
        """Whether `repeat_interleave` works: every layer's state has its own `repeat_interleave`
        (a state without one, e.g. a mixer's that keeps rows coupled, keeps the decoder on the
        path that prefills every copy)."""
        return all(callable(getattr(state, "repeat_interleave", None)) for state in self.layers)

    def repeat_interleave(self, repeats: int) -> "DecodingCache":
        """A new cache of B * repeats rows, row b * repeats + g a copy of row b (filled positions,
        padding mask, `pos`, each layer's state through its `repeat_interleave`); self unchanged."""
        new = repeat_rows(self, repeats, skip=("layers",))
        new.layers = [state.repeat_interleave(repeats) for state in self.layers]
        return new


def repeat_rows(state, repeats: int, dim: int = 0, skip=()):
    """A shallow copy of a decoding state whose every tensor attribute (but `skip`) has each row
    repeated `repeats` times along `dim`, row b -> rows [b * repeats, (b + 1) * repeats) (what
    `torch.repeat_interleave` does); other attributes (ints, settings) shared. The
    `repeat_interleave` of a layer state whose tensors all hold one row per batch row at `dim`."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 1")
    new = copy.copy(state)
    for name, value in vars(state).items():
        if name not in skip and isinstance(value, torch.Tensor):
            setattr(new, name, value.repeat_interleave(repeats, dim=dim))
    return new
