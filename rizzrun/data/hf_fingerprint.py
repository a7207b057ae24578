"""The fingerprint of an HFDataset: a hash of its source and of every option that changes its
documents, which keys the tokenization cache and the streaming epoch record.

Local data: every file's path, size and modification time (what `datasets` keys local files
by); Hub data: a revision the caller supplies (the fingerprints `datasets` gives the loaded
splits, or the builder hash when streaming).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

FORMAT_VERSION = 1


def source_key(source: dict, path: str, hub_revision: Callable[[], list]) -> list:
    """What identifies the source's bytes (see the module docstring)."""
    if source["kind"] in ("disk", "folder"):
        root = source["root"].resolve()
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        stats = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return [str(root), stats]
    if source["kind"] == "files":
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in source["files"]]
    return ["hub", path, hub_revision()]


def fingerprint(source: dict, path: str, hub_revision: Callable[[], list], options: list) -> str:
    """sha256 of (format version, source kind, source key, options)."""
    key = ["hf", FORMAT_VERSION, source["kind"], source_key(source, path, hub_revision), *options]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()
