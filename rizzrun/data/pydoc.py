"""PyDocCorpus: a built-in English corpus of the installed Python standard library's docstrings.

Made at run time, so no text ships with rizzrun and no network is needed: every stdlib .py
file is parsed with `ast` (never imported: importing runs module code), and each module,
class and function docstring (cleaned with inspect.cleandoc) is one document. Tests, IDLE,
lib2to3, site-packages and similar are left out; identical texts are kept once; documents
shorter than `min_chars` are dropped. The split is by a stable hash of each document's
source location, so it does not move when other documents come or go.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Literal

from rizzrun.data.lm import LMCorpus, stable_unit
from rizzrun.errors import InputError

# Bump when extraction changes what it produces: the on-disk cache and fingerprint follow it.
EXTRACT_VERSION = 1

# Directory names skipped at any depth: test suites, the IDE, 2to3's Python 2 fixtures, demos,
# bundled wheels, third-party packages.
SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages",
     "dist-packages", "lib-dynload", "__pycache__", "pydoc_data"}
)
# Top-level files that are not prose: rot13'd text, easter eggs, bytecode test stubs.
SKIP_FILES = frozenset({"this.py", "antigravity.py", "__hello__.py", "__phello__"})


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path) -> list[str]:
    """Relative paths (posix) of the stdlib .py files used, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [
            d for d in dirnames
            if d not in SKIP_DIRS and not (rel_dir == Path(".") and (d.startswith("config-") or d in SKIP_FILES))
        ]
        for f in filenames:
            if f.endswith(".py") and not (rel_dir == Path(".") and f in SKIP_FILES):
                out.append((rel_dir / f).as_posix())
    return sorted(out)


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _owned_defs(node: ast.AST):
    """Class/function defs in `node`'s statements (under if/try/with too), not inside other defs."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _DEFS):
            yield child
        else:
            yield from _owned_defs(child)


def _docstrings(tree: ast.Module, rel: str):
    """(location, cleaned text) for the module and every class/function, in source order.
    location = "<relative path>:<docstring line>:<qualified name>"."""

    def visit(node, qualname):
        doc = ast.get_docstring(node, clean=False)
        if doc is not None:
            yield f"{rel}:{node.body[0].lineno}:{qualname}", inspect.cleandoc(doc)
        prefix = "" if isinstance(node, ast.Module) else qualname + "."
        for child in _owned_defs(node):
            yield from visit(child, prefix + child.name)

    yield from visit(tree, "<module>")


def extract(root: Path) -> tuple[list[str], list[str], dict[str, int]]:
    """Parse the stdlib under `root`: (texts, locations, skipped counts), identical texts
    kept once (first location wins), no length filter."""
    texts, locations, seen = [], [], set()
    skipped = {"unparseable_file": 0, "duplicate": 0}
    for rel in stdlib_files(root):
        try:
            tree = ast.parse((root / rel).read_bytes(), filename=rel)
        except (SyntaxError, ValueError):
            skipped["unparseable_file"] += 1
            continue
        for location, text in _docstrings(tree, rel):
            if text in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(text)
            texts.append(text)
            locations.append(location)
    return texts, locations, skipped


def stdlib_fingerprint(root: Path, files: list[str]) -> str:
    """sha256 over the used files' relative paths and contents (about 10 MB, a fraction of a
    second): equal on any machine with the same standard library."""
    h = hashlib.sha256()
    for rel in files:
        data = (root / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def load_or_extract(cache_dir: str | None = None, root: Path | None = None):
    """The extracted corpus as a `datasets.Dataset` (columns text, location) plus skipped
    counts, from <cache>/pydoc/<python>-<stdlib fp>-x<version>/ when present, else extracted
    and saved there (written to a temporary folder, then renamed into place)."""
    from datasets import Dataset, load_from_disk

    from rizzrun.paths import cache_root

    root = Path(root) if root is not None else stdlib_dir()
    files = stdlib_files(root)
    version = f"{platform.python_implementation().lower()}{'.'.join(map(str, sys.version_info[:3]))}"
    key = f"{version}-{stdlib_fingerprint(root, files)[:16]}-x{EXTRACT_VERSION}"
    path = cache_root(cache_dir) / "pydoc" / key
    if not (path / "skipped.json").is_file():
        texts, locations, skipped = extract(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=key + ".tmp"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            Dataset.from_dict({"text": texts, "location": locations}).save_to_disk(str(tmp / "data"))
            (tmp / "skipped.json").write_text(json.dumps(skipped), encoding="utf-8")
            if path.exists():  # left by an interrupted or foreign writer: not a finished entry
                shutil.rmtree(path)
            try:
                os.replace(tmp, path)
            except OSError:
                # Another process finished first (the target exists and is not empty): use theirs.
                if not (path / "skipped.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    skipped = json.loads((path / "skipped.json").read_text(encoding="utf-8"))
    return load_from_disk(str(path / "data")), skipped, key


class PyDocCorpus(LMCorpus):
    """Docstrings of the installed Python standard library as an English LM corpus.

    seq_len, batch_size: block length and batch size of the "lm" batches.
    val_fraction: share of documents in the validation split (by hash of source location).
    seed: shuffles the training blocks each epoch; does not change the split.
    max_docs: keep only the first max_docs documents (sorted file order), e.g. for tests.
    max_train_docs: keep only the first max_train_docs training documents after the split,
        the validation split untouched (a small set seen many times: memorization studies).
    packing: "concat" (documents joined by EOS, cut into blocks) or "document" (each document
        starts its own row, padded; rizzrun.data.lm.pack_by_document).
    min_chars: drop documents shorter than this many characters.
    cache_dir: cache root (None: $RIZZRUN_CACHE or ~/.cache/rizzrun).
    """

    batch_kind = "lm"

    def __init__(
        self,
        seq_len: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        seed: int = 0,
        max_docs: int | None = None,
        min_chars: int = 200,
        cache_dir: str | None = None,
        max_train_docs: int | None = None,
        packing: Literal["concat", "document"] = "concat",
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"data.val_fraction={val_fraction!r}: must be in [0, 1)")
        if max_docs is not None and (int(max_docs) != max_docs or max_docs < 1):
            raise InputError(f"data.max_docs={max_docs!r}: must be null or an integer >= 1")
        if max_train_docs is not None and (int(max_train_docs) != max_train_docs or max_train_docs < 1):
            raise InputError(f"data.max_train_docs={max_train_docs!r}: must be null or an integer >= 1")
        if int(min_chars) != min_chars or min_chars < 0:
            raise InputError(f"data.min_chars={min_chars!r}: must be an integer >= 0")
        self.val_fraction = float(val_fraction)
        self.max_docs = None if max_docs is None else int(max_docs)
        self.min_chars = int(min_chars)
        self.max_train_docs = None if max_train_docs is None else int(max_train_docs)
        self._docs: dict[str, tuple[list[str], list[str]]] | None = None
        self._fingerprint: str | None = None

    def documents(self) -> dict[str, tuple[list[str], list[str]]]:
        """{"train": (texts, locations), "val": (texts, locations)} after filtering and split."""
        if self._docs is None:
            ds, skipped, key = load_or_extract(self.cache_dir)
            texts = ds.data.column("text").to_pylist()
            locations = ds.data.column("location").to_pylist()
            keep = [i for i, t in enumerate(texts) if len(t) >= self.min_chars]
            skipped = dict(skipped, too_short=len(texts) - len(keep))
            if self.max_docs is not None:
                skipped["over_max_docs"] = max(len(keep) - self.max_docs, 0)
                keep = keep[: self.max_docs]
            docs = {"train": ([], []), "val": ([], [])}
            for i in keep:
                split = "val" if stable_unit(locations[i]) < self.val_fraction else "train"
                docs[split][0].append(texts[i])
                docs[split][1].append(locations[i])
            if self.max_train_docs is not None:
                texts_, locations_ = docs["train"]
                skipped["over_max_train_docs"] = max(len(texts_) - self.max_train_docs, 0)
                docs["train"] = (texts_[: self.max_train_docs], locations_[: self.max_train_docs])
            self._skipped = skipped
            self._fingerprint = hashlib.sha256(
                json.dumps(["pydoc", key, self.min_chars, self.max_docs, self.val_fraction]
                           + ([self.max_train_docs] if self.max_train_docs is not None else [])).encode()
            ).hexdigest()
            self._docs = docs
        return self._docs

    @property
    def fingerprint(self) -> str:
        """Hash of (python version, stdlib contents, extraction version, filters, split)."""
        self.documents()
        return self._fingerprint

    def train_texts(self):
        return iter(self.documents()["train"][0])

    def val_texts(self):
        return iter(self.documents()["val"][0])

    def _split_origin(self, split: str) -> tuple[str, str]:
        if split == "val":
            return (f"data.val_fraction={self.val_fraction}",
                    "raise data.val_fraction or data.max_docs, or set data.val_fraction=0 for no validation")
        if self.max_train_docs is not None:
            return f"data.max_train_docs={self.max_train_docs}", "raise data.max_train_docs"
        return f"data.max_docs={self.max_docs}", "raise data.max_docs or lower data.min_chars"

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        docs = self.documents()
        splits = ["train"] + (["val"] if self.val_fraction > 0 else [])
        return {s: Dataset.from_dict({"text": docs[s][0]}) for s in splits}
