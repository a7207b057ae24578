"""Config rules of `rizzrun.decoders.think.ThinK`, with no torch import (see rizzrun.config.specs)."""

RANGES = {
    "ThinK": {"ratio": ((">=", 0), ("<", 1)), "obs_window": ((">=", 1),), "recent_size": ((">=", 0),)},
}
