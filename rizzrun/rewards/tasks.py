"""Reward functions of the built-in string tasks (rizzrun.data.tasks: sort, reverse, count),
plain Python, with the reward-function signature of `rizzrun.rewards`:
(prompts, completions, **columns) -> list[float | None].

The task data's own reward is exact correctness (rizzrun.rewards.verifiable.exact_match on its
`answer` column, as the data's `verify`); `char_accuracy` is partial credit for answers of a fixed
length (sort, reverse), e.g. the ReST setup "reverse this 6-char string, reward = fraction of
correct characters":

    objective:
      rewards:
        chars: {_target_: rizzrun.rewards.tasks.char_accuracy, _partial_: true}
"""

from __future__ import annotations

from typing import Any, Sequence

from rizzrun.rewards.verifiable import _answers

__all__ = ["char_accuracy", "char_matches"]


def char_matches(completion: str, answer: str) -> float:
    """The fraction of correct characters of `completion` (surrounding whitespace stripped) against
    `answer`: positions i where both have a character and they agree, over the longer of the two
    lengths. So 1.0 exactly when the stripped completion equals the answer; a missing or an extra
    character costs one position ("dcb" or "dcbaa" against "dcba": 3/4 and 4/5); a shifted
    completion matches few positions; an empty completion scores 0 (1.0 when the answer is empty too)."""
    c = completion.strip()
    longest = max(len(c), len(answer))
    if longest == 0:
        return 1.0
    return sum(x == y for x, y in zip(c, answer)) / longest


def char_accuracy(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                  **columns: Any) -> list[float | None]:
    """`char_matches(completion, str(answer).strip())` per completion, in [0, 1]; 1.0 exactly where
    exact_match is 1.0. A row whose answer is None gets None. Meant for answers of a fixed length
    (sort, reverse); on count's numbers it is merely digit-wise."""
    answers = _answers(answer, len(completions), "char_accuracy")
    return [None if a is None else char_matches(c, str(a).strip()) for c, a in zip(completions, answers)]
