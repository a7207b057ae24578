"""Config rules of `rizzrun.decoders.principle_guided.PrincipleGuided`, with no torch import (see rizzrun.config.specs).
window_mode's choices come from its `Literal["math", "code"]` annotation."""

RANGES = {
    "PrincipleGuided": {"beta": ((">=", 0),)},
}
