"""Which prompt batch each micro-batch of an on-policy run trains on, when every rollout batch
is used for mu optimizer steps (TRL's num_iterations)."""

from __future__ import annotations

from typing import Callable, Iterator

__all__ = ["is_generation_step", "repeat_blocks"]


def repeat_blocks(batches: Callable[..., Iterator[dict]], start: int, accumulate: int, iterations: int) -> Iterator[dict]:
    """The stream of micro-batches from micro-batch `start` on, when each block of `accumulate`
    consecutive data batches (one optimizer step's) is trained on `iterations` times in a row:
    micro-batch m is data batch (m // (accumulate * iterations)) * accumulate + m % accumulate.
    `batches(start=i)` is the data's stream from data batch i. With iterations = 1 it is that
    stream itself, so data positions (micro-batches done) mean the same with or without repeats."""
    for key, value in (("accumulate", accumulate), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r}: must be an integer >= 1")
    if isinstance(start, bool) or int(start) != start or start < 0:
        raise ValueError(f"start={start!r}: must be an integer >= 0 (micro-batches done)")
    if iterations == 1:
        yield from batches(start=start)
        return
    span = accumulate * iterations
    block, offset = divmod(int(start), span)
    stream = batches(start=block * accumulate)
    while True:
        held = [next(stream) for _ in range(accumulate)]
        for m in range(offset, span):
            yield held[m % accumulate]
        offset = 0


def is_generation_step(optimizer_step: int, iterations: int) -> bool:
    """Whether optimizer step `optimizer_step` (0-based) generates new rollouts: the first of each
    block of `iterations` steps."""
    return optimizer_step % iterations == 0
