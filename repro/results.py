"""Write one method's section of docs/results.md, between its markers, keeping the others."""

from __future__ import annotations

from pathlib import Path

HEADER = "# Results\n\nEach paper method's headline effect, reproduced at CPU scale by `make repro`.\n"


def write_section(path: Path, key: str, body: str) -> None:
    """Replace the text between `<!-- KEY:start -->` and `<!-- KEY:end -->` (appended if absent)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
