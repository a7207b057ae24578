"""Config rules of `rizzrun.attention.think.ThinKAttention`, with no torch import (see rizzrun.config.specs)."""

RANGES = {
    "ThinKAttention": {"ratio": ((">=", 0), ("<", 1)), "obs_window": ((">=", 1),), "recent_size": ((">=", 0),)},
}
