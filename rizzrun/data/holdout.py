"""Which rows of an HFDataset split are held out for validation.

Non-streaming: row r is held out when u(r) < val_fraction, u(r) = splitmix64(r) / 2**64, a
fixed hash of the row index (stable across runs, machines and seeds); with val_docs, the first
val_docs rows. Streaming: the first val_docs rows, or the first ceil(val_fraction * rows) rows,
which needs the row count up front.
"""

from __future__ import annotations

import math

import numpy as np


def row_units(n: int) -> np.ndarray:
    """u(r) = splitmix64(r) / 2**64 for rows r = 0..n-1: a fixed, well-mixed number in [0, 1)
    per row index (the non-streaming hold-out is the rows with u(r) < val_fraction)."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def held_out_rows(n: int, val_docs: int | None, val_fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(train rows, validation rows) of n rows, as index arrays, or None when nothing is held
    out (val_docs unset and val_fraction 0)."""
    if val_docs is not None:
        k = min(val_docs, n)
        return np.arange(k, n), np.arange(k)
    if val_fraction > 0:
        held = row_units(n) < val_fraction
        return np.flatnonzero(~held), np.flatnonzero(held)
    return None


def streaming_held_out(total: int | None, val_split: str | None, val_docs: int | None,
                       val_fraction: float) -> int | None:
    """How many leading rows streaming holds out; None when that needs a row count not known."""
    if val_split is not None:
        return 0
    if val_docs is not None:
        return val_docs
    if val_fraction > 0:
        return None if total is None else math.ceil(val_fraction * total)
    return 0
