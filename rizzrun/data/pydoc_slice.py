"""PyDocSlice: a topical slice of the built-in stdlib-docstring corpus (rizzrun.data.pydoc), by
top-level module.

A document's module is the first part of its source location ("email/message.py:..." -> "email",
"difflib.py:..." -> "difflib"). `modules` keeps the documents of those modules only;
`exclude: true` keeps every other document instead. Two slices, `modules=M` and `modules=M
exclude=true`, split the corpus by topic, not at random: a model trained on one has not seen the
other's vocabulary and subjects (a knowledge shift; recipes/paramdelta_tiny.yaml continues
pretraining on the networking/mail slice). The train/validation split is PyDocCorpus's (by a
stable hash of each document's location), so a document is held out in every slice it is in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Sequence

from rizzrun.data.pydoc import PyDocCorpus
from rizzrun.errors import InputError

# The networking, web and mail packages of the standard library: the slice
# recipes/paramdelta_tiny.yaml continues pretraining on (about a fifth of the corpus).
NETWORK_MODULES = ("email", "xml", "http", "urllib", "smtplib", "xmlrpc", "wsgiref", "ftplib", "socketserver",
                   "ssl", "imaplib", "poplib", "nntplib", "mailbox", "mimetypes", "html", "cgi", "smtpd",
                   "telnetlib", "webbrowser", "socket", "selectors", "mailcap", "uu", "quopri", "base64")


def module_of(location: str) -> str:
    """The top-level module of a PyDocCorpus location: "email/mime/text.py:3:MIMEText" -> "email"."""
    path = location.split(":", 1)[0]
    top = path.split("/", 1)[0]
    return top[: -len(".py")] if top.endswith(".py") else top


class PyDocSlice(PyDocCorpus):
    """The PyDocCorpus documents of some top-level modules (or, `exclude`, of all the others).

    modules: top-level module names (non-empty list), e.g. [email, xml, http].
    exclude: false keeps the documents of `modules`; true keeps every other document.
    The other arguments are PyDocCorpus's; max_docs and max_train_docs apply before the slice.
    """

    def __init__(self, modules: Sequence[str] = NETWORK_MODULES, exclude: bool = False,
                 seq_len: int = 256, batch_size: int = 16, val_fraction: float = 0.05, seed: int = 0,
                 max_docs: int | None = None, min_chars: int = 200, cache_dir: str | None = None,
                 max_train_docs: int | None = None, packing: Literal["concat", "document"] = "concat"):
        super().__init__(seq_len=seq_len, batch_size=batch_size, val_fraction=val_fraction, seed=seed,
                         max_docs=max_docs, min_chars=min_chars, cache_dir=cache_dir,
                         max_train_docs=max_train_docs, packing=packing)
        if isinstance(modules, str) or not modules or not all(isinstance(m, str) and m for m in modules):
            raise InputError(f"data.modules={modules!r}: must be a non-empty list of top-level module names, "
                             "e.g. [email, xml, http]")
        if not isinstance(exclude, bool):
            raise InputError(f"data.exclude={exclude!r}: must be true or false")
        self.modules = tuple(sorted(set(modules)))
        self.exclude = exclude
        self._sliced: dict[str, tuple[list[str], list[str]]] | None = None

    def documents(self) -> dict[str, tuple[list[str], list[str]]]:
        """PyDocCorpus's splits, each cut to the slice."""
        if self._sliced is None:
            docs = super().documents()
            wanted = set(self.modules)
            sliced, dropped = {}, 0
            for split, (texts, locations) in docs.items():
                keep = [i for i, loc in enumerate(locations) if (module_of(loc) in wanted) != self.exclude]
                dropped += len(texts) - len(keep)
                sliced[split] = ([texts[i] for i in keep], [locations[i] for i in keep])
            self._skipped = dict(self._skipped, outside_slice=dropped)
            self._sliced = sliced
        return self._sliced

    @property
    def fingerprint(self) -> str:
        base = super().fingerprint
        return hashlib.sha256(json.dumps([base, "slice", list(self.modules), self.exclude]).encode()).hexdigest()

    def _split_origin(self, split: str) -> tuple[str, str]:
        if split == "train":
            return (f"data.modules={list(self.modules)} (exclude={str(self.exclude).lower()})",
                    "name modules that have docstrings, e.g. email, xml, http")
        return super()._split_origin(split)
