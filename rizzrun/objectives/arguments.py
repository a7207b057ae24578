"""The argument checks the on-policy objectives share: one-line InputErrors naming
`objective.KEY=VALUE` and what is allowed."""

from __future__ import annotations

import math
import numbers

from rizzrun.errors import InputError

__all__ = ["choice", "flag", "integer", "real"]


def integer(key: str, value, low: int, nullable: bool = False) -> int | None:
    """`value` as an int >= low (None when nullable and None)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"objective.{key}={value!r}: must be an integer >= {low}{' or null' if nullable else ''}")
    return int(value)


def real(key: str, value, allowed: str, ok, nullable: bool = False) -> float | None:
    """`value` as a finite float for which ok(value) holds (`allowed` says which, in words)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise InputError(f"objective.{key}={value!r}: must be {allowed}{' or null' if nullable else ''}")
    return float(value)


def choice(key: str, value, allowed: tuple[str, ...]) -> str:
    """`value`, one of `allowed` (a Literal's choices)."""
    if value not in allowed:
        raise InputError(f"objective.{key}={value!r}: allowed are {', '.join(allowed)}")
    return value


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"objective.{key}={value!r}: must be true or false")
    return value
