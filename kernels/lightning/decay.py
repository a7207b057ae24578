"""Per-head decay rates of Lightning Attention (TransNormerLLM, arXiv 2307.14995), as log lambda.

Torch-free: returns a list of H floats, all <= 0, for `lightning_attn(..., log_decay)`.

Schedules (spec `lightning.md` section 2):
- ``alibi_tnl`` (default; the official OpenNLPLab / TNL code): rate_h = ALiBi slope h (2^(-8h/H),
  h = 1..H, with the ALiBi interleave when H is not a power of 2), times the layer factor
  ``1 - l/(L-1) + 1e-5``; log lambda_h = -rate_h. The lowest layer decays fastest, the top layer
  keeps factor 1e-5 (almost no decay). Equals MiniMax-01's HF code to ~1e-5 for power-of-2 H.
- ``fla_literal`` (fla's ``chunk_lightning_attn``): log lambda_h = -(8/H)(1 - l/L) h, h = 0..H-1,
  so head 0 never decays.

n_layer = 1 (decision; the official factor divides by L-1 = 0): the single layer is the lowest
layer, factor ``1 + 1e-5``, i.e. the fastest-decaying rates. ``fla_literal`` needs no special case.
"""
import math

SCHEDULES = ("alibi_tnl", "fla_literal")


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi head slopes (arXiv 2108.12409): 2^(-8h/H), h = 1..H, for power-of-2 H; otherwise the
    slopes of the largest power of 2 below H, then every other slope of twice that power."""
    def power_of_two(n):
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    if n_head & (n_head - 1) == 0:
        return power_of_two(n_head)
    below = 2 ** int(math.floor(math.log2(n_head)))
    return power_of_two(below) + power_of_two(2 * below)[0::2][: n_head - below]


def lightning_decay(n_head: int, layer_idx: int, n_layer: int, schedule: str = "alibi_tnl") -> list[float]:
    """log lambda per head, shape (H,), for layer ``layer_idx`` (0-based) of ``n_layer``."""
    for name, value in (("n_head", n_head), ("n_layer", n_layer)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not isinstance(layer_idx, int) or isinstance(layer_idx, bool) or not 0 <= layer_idx < n_layer:
        raise ValueError(f"layer_idx={layer_idx!r} must be an integer in [0, n_layer={n_layer})")
    if schedule == "alibi_tnl":
        depth = layer_idx / (n_layer - 1) if n_layer > 1 else 0.0
        factor = 1.0 - depth + 1e-5
        return [-slope * factor for slope in alibi_slopes(n_head)]
    if schedule == "fla_literal":
        rate = (8.0 / n_head) * (1.0 - layer_idx / n_layer)
        return [-rate * h for h in range(n_head)]
    raise ValueError(f"schedule={schedule!r}; expected one of {', '.join(SCHEDULES)}")
