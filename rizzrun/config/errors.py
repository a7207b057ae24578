"""ConfigError and the helpers every config message is written with.

Each problem is one line, `KEY[=VALUE]: what is wrong; what would be right`, so a user sees at
once where to look and what to type instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class ConfigError(Exception):
    """One or more problems with a config, all reported together."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"- {p}" for p in self.problems)


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice most like `name` (difflib), or None when nothing is close."""
    choices = [str(c) for c in choices]
    found = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if not found:  # a case slip ("Bf16-Mixed") still deserves a hint
        lowered = {c.lower(): c for c in choices}
        found = [lowered[f] for f in difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)]
    if not found and len(str(name)) >= 2:  # so does a prefix ("16" for "16-mixed")
        found = sorted((c for c in choices if c.lower().startswith(str(name).lower())), key=len)
    return found[0] if found else None


def suggest(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """"did you mean 'PREFIX+best'?" or '' when nothing is close."""
    best = closest(name, choices)
    return f"did you mean '{prefix}{best}'?" if best is not None else ""


def message(head: str, *parts: str) -> str:
    """`head: part; part? part`, leaving out empty parts (a question needs no semicolon)."""
    rest = ""
    for part in (p for p in parts if p):
        rest += part if not rest else (" " if rest.endswith("?") else "; ") + part
    return f"{head}: {rest}" if rest else head


def show(value) -> str:
    """A value as a user would type it in an override (null, true, 'text', [1, 2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def listing(choices: Iterable[str]) -> str:
    return ", ".join(str(c) for c in choices) or "(none)"
