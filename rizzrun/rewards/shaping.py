"""Dense reward functions for numeric answers, plain Python, with the reward-function signature
of `rizzrun.rewards`: (prompts, completions, **columns) -> list[float | None].

`numeric_closeness` is partial credit for the built-in arithmetic prompts (column `answer`): a
reward that keeps rising as a policy's sums get closer, where the exact-match `correct` reward is
0 for every near miss (a programmatic reward with a gradual KL-reward trade-off, as the WARP
spec's tiny setup asks, arXiv 2406.16768):

    objective:
      rewards:
        close: {_target_: rizzrun.rewards.shaping.numeric_closeness, _partial_: true, scale: 10}
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rizzrun.rewards.verifiable import _LEADING_INT, _answers

__all__ = ["numeric_closeness", "closeness"]


def closeness(completion: str, answer: float, scale: float = 10.0) -> float:
    """exp(-|n - answer| / scale) for the completion's leading integer n (after whitespace): 1.0
    exactly when n is the answer, 1/e at `scale` away; 0.0 when there is no leading integer."""
    m = _LEADING_INT.match(completion)
    if m is None:
        return 0.0
    return math.exp(-abs(int(m.group(1)) - float(answer)) / scale)


def numeric_closeness(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                      scale: float = 10.0, **columns: Any) -> list[float | None]:
    """`closeness(completion, answer, scale)` per completion, in [0, 1]; 1.0 exactly where
    leading_integer_match is 1.0. A row whose answer is None gets None. scale > 0."""
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"numeric_closeness scale={scale!r}: must be a number > 0")
    answers = _answers(answer, len(completions), "numeric_closeness")
    return [None if a is None else closeness(c, a, scale) for c, a in zip(completions, answers)]
