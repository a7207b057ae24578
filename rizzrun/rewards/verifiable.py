"""Reward functions for verifiable tasks (exact answers, output formats), plain Python.

Each has the reward-function signature (`rizzrun.rewards`): (prompts, completions, **columns) ->
list[float | None]. A completion is the generated text only (the prompt excluded), special tokens
already dropped by the tokenizer's decode. Options are bound with functools.partial, or in a
config with `_partial_: true`:

    rewards:
      correct: {_target_: rizzrun.rewards.verifiable.leading_integer_match, _partial_: true}
      format:  {_target_: rizzrun.rewards.verifiable.format_match, _partial_: true, pattern: '\\d+'}
"""

from __future__ import annotations

import re
from typing import Any, Sequence

__all__ = ["exact_match", "format_match", "leading_integer_match"]

_LEADING_INT = re.compile(r"\s*(-?\d+)")


def _answers(answer: Sequence[Any] | None, n: int, name: str) -> Sequence[Any]:
    if answer is None:
        raise ValueError(f"{name} needs the data's `answer` column (one per completion); the rows have none")
    if len(answer) != n:
        raise ValueError(f"{name}: {len(answer)} answers for {n} completions; expected one per completion")
    return answer


def exact_match(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                **columns: Any) -> list[float | None]:
    """1.0 where the completion, stripped of surrounding whitespace, equals str(answer) stripped;
    else 0.0. A row whose answer is None gets None (no answer to check against)."""
    answers = _answers(answer, len(completions), "exact_match")
    return [None if a is None else float(c.strip() == str(a).strip()) for c, a in zip(completions, answers)]


def leading_integer_match(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                          **columns: Any) -> list[float | None]:
    """1.0 where the completion starts (after whitespace) with the integer int(answer); text after
    it is ignored, as the built-in arithmetic task's `verify` ignores it; 0.0 otherwise (no leading
    integer, or another one). A row whose answer is None gets None."""
    answers = _answers(answer, len(completions), "leading_integer_match")
    out: list[float | None] = []
    for c, a in zip(completions, answers):
        if a is None:
            out.append(None)
            continue
        m = _LEADING_INT.match(c)
        out.append(float(m is not None and int(m.group(1)) == int(a)))
    return out


def format_match(prompts: Sequence[str], completions: Sequence[str], pattern: str = r"\d+", strip: bool = True,
                 **columns: Any) -> list[float]:
    """1.0 where the whole completion matches the regular expression `pattern` (re.fullmatch, after
    stripping surrounding whitespace when strip), else 0.0: a format reward (e.g. the answer and
    nothing else: pattern '\\d+')."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"pattern={pattern!r} is not a regular expression ({e})") from None
    return [float(regex.fullmatch(c.strip() if strip else c) is not None) for c in completions]
