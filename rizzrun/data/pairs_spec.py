"""Config rules shared by the preference-pair data options (rizzrun.data.pairs.PairData), with
no torch or `datasets` import (see rizzrun.config.specs); preference_spec and arithmetic_spec
use them. PairData itself is no config target."""

from __future__ import annotations

from rizzrun.config.errors import message


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_lengths(node: dict, path: str) -> list[str]:
    """max_prompt_length < max_length when both are set: a completion needs room."""
    length, prompt = _int(node.get("max_length")), _int(node.get("max_prompt_length"))
    if length is not None and prompt is not None and prompt >= length:
        return [message(f"{path}.max_prompt_length={prompt}", f"must be < {path}.max_length={length}, so that a "
                        f"completion has room", f"lower it or raise {path}.max_length")]
    return []


# Ranges of the PairData options every pair data component takes.
PAIR_RANGES = {"max_length": ((">=", 2),), "max_prompt_length": ((">=", 1),), "batch_size": ((">=", 1),)}
