"""Targets for the validator's tests. The validator reads this file with `ast` and never imports
it, so the classes need no bodies that work; they only need signatures and class attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional


class PreferenceBase:
    batch_kind = "preference"


class PreferenceLoss(PreferenceBase):
    """A loss on preference pairs (inherits its batch_kind)."""

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, reference: Optional[str] = None):
        self.beta = beta


class NeedsArgs:
    """Required arguments, a Literal, a list and a keyword-only flag."""

    batch_kind = "lm"

    def __init__(self, n_items: int, mode: Literal["fast", "slow"] = "fast", sizes: list[int] | None = None,
                 *, flag: bool = False):
        self.n_items = n_items


class TakesKwargs:
    batch_kind = "lm"

    def __init__(self, a: int = 1, **extra):
        self.extra = extra


@dataclass
class PairData:
    """Preference pairs from a file (a dataclass target)."""

    batch_kind: ClassVar[str] = "preference"
    path: str
    n: int = 3
    tags: list[str] = field(default_factory=list)


class NoKind:
    def __init__(self, x: int = 1):
        self.x = x


class BadKind:
    batch_kind = "pairs"


def builder(params, lr: float = 1e-3, nesterov: bool = False):
    """A function target (like rizzrun.optim.adamw)."""
    return params
