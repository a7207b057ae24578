"""Hybrid stacks: a softmax layer every N-th layer, another mixer elsewhere (MiniMax-01, arXiv 2501.08313).

MiniMax-01 puts one softmax-attention layer after every 7 lightning-attention layers: layer i
(0-based) is softmax iff (i + 1) % softmax_every == 0 (80 layers, softmax_every=8: 70 + 10). The
decoding cache is then mixed: a KV buffer in the softmax layers, a fixed-size state elsewhere.
"""


def softmax_layers(n_layer: int, softmax_every: int) -> list[int]:
    """The 0-based indices of the softmax layers."""
    return [i for i in range(n_layer) if (i + 1) % softmax_every == 0]


def hybrid(*, softmax_every: int, softmax, other, layer_idx: int, n_layer: int, **dims):
    """The mixer of layer `layer_idx`: `softmax(...)` on the softmax layers, `other(...)` elsewhere;
    both are mixer factories (Hydra partials), called with the model's keyword arguments."""
    if not (isinstance(softmax_every, int) and not isinstance(softmax_every, bool) and softmax_every >= 1):
        raise ValueError(f"softmax_every={softmax_every!r} must be an integer >= 1 (1: every layer softmax)")
    factory = softmax if layer_idx in softmax_layers(n_layer, softmax_every) else other
    return factory(layer_idx=layer_idx, n_layer=n_layer, **dims)
