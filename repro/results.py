"""Write one method's section of docs/results.md, between its markers, keeping the others."""

from __future__ import annotations

import statistics
from pathlib import Path

HEADER = "# Results\n\nEach paper method's headline effect, reproduced at CPU scale by `make repro`.\n"


def mean_sd(values: list[float], fmt: str = ".3f") -> str:
    """`mean ± sd` over seeds, or the value alone for one seed."""
    mean = format(statistics.mean(values), fmt)
    return mean if len(values) < 2 else f"{mean} ± {format(statistics.stdev(values), fmt)}"


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


class record:
    """`with record(path, key, heading):` — everything printed to stdout inside is also written,
    under `heading`, as the `key` section of docs/results.md (progress goes to stderr)."""

    def __init__(self, path: Path, key: str, heading: str):
        self.path, self.key, self.heading = path, key, heading

    def __enter__(self):
        import io
        import sys

        self._stdout, self._buffer = sys.stdout, io.StringIO()

        class Tee:
            def write(inner, text):
                self._stdout.write(text)
                return self._buffer.write(text)

            def flush(inner):
                self._stdout.flush()

        sys.stdout = Tee()
        return self

    def __exit__(self, kind, value, tb):
        import sys

        sys.stdout = self._stdout
        if kind is None:
            write_section(self.path, self.key, f"{self.heading}\n\n{self._buffer.getvalue().strip()}")
        return False
