"""Config rules of `rizzrun.objectives.goldfish.Goldfish`, with no torch import (see rizzrun.config.specs)."""

RANGES = {
    "Goldfish": {"k": ((">=", 2),), "context_width": ((">=", 1),), "table_size": ((">=", 2),),
                 "start_position": ((">=", 0),)},
}
