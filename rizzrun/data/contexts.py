"""ContextData: contexts with a diversity label as `diversity` batches (the DDS head's data), and
`DiversityLabels`, such rows read from a JSONL file.

A row is (context, reply, d*): the context the model continues, a reply to it ("" for none) and
the label d* in [0, 1] (0: one right answer, 1: many acceptable continuations). Tokenization, as
rizzrun.data.pairs tokenizes a prompt and a completion: the context begins as a document begins in
rizzrun's packed stream ([EOS] + encode(context) for rizzrun's tokenizers, the folder's own specials
for a Hugging Face tokenizer), a non-empty reply is encode(reply) + [EOS]. The batch
(rizzrun.objectives.diversity; docs/contracts.md "Batch kinds"):

    input_ids (B, L) long    context ++ reply, right-padded with 0 to the batch's longest row
    prompt_mask (B, L) bool  the context's tokens        reply_mask (B, L) bool  the reply's tokens
    diversity (B,) float32   d*                          row (B,) long  train 0..N-1, then val

Training order as rizzrun.data.lm: b = min(batch_size, n) rows per batch, P = n // b batches per
epoch, epoch e visits the rows in a permutation seeded by (seed, e); batch i is a pure function of
(data, seed, i), so `train_batches(start=i)` is an exact resume. Validation: every row once.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterator
from pathlib import Path

import torch

from rizzrun.data.lm import SPLIT_NAMES, _seed_for, stable_unit
from rizzrun.data.pairs import hf_style
from rizzrun.errors import InputError

__all__ = ["ContextData", "DiversityLabels", "read_label_rows", "write_label_rows"]

CONTEXTS_VERSION = 1


class ContextData:
    """Base of the `diversity` data: subclasses supply `_data_key()` (a hash input naming the rows)
    and `_raw_rows()` ({"train": [(context, reply, d*)], "val": [...] (absent: no validation)});
    this class tokenizes and batches them (module docstring). batch_size: contexts per batch;
    seed: the training order."""

    batch_kind = "diversity"

    def __init__(self, batch_size: int = 16, seed: int = 0, cache_dir: str | None = None):
        owner = type(self).__name__
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise InputError(f"data.batch_size={batch_size!r}: must be an integer >= 1 ({owner})")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InputError(f"data.seed={seed!r}: must be an integer ({owner})")
        self.batch_size, self.seed, self.cache_dir = int(batch_size), int(seed), cache_dir
        self._parts: dict[str, dict] | None = None
        self._raw: dict[str, list[tuple[str, str, float]]] | None = None

    # -- subclass hooks --------------------------------------------------------------------

    def _data_key(self) -> str:
        raise NotImplementedError

    def _raw_rows(self) -> dict[str, list[tuple[str, str, float]]]:
        raise NotImplementedError

    def _split_origin(self, split: str) -> tuple[str, str]:
        return f"data={type(self).__name__}", "add rows"

    # -- identity and texts ----------------------------------------------------------------

    def rows(self, split: str) -> list[tuple[str, str, float]]:
        """(context, reply, d*) of `split`, in row order."""
        if self._raw is None:
            self._raw = self._raw_rows()
        return list(self._raw[split])

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(["contexts", CONTEXTS_VERSION, self._data_key()]).encode()).hexdigest()

    def train_texts(self) -> Iterator[str]:
        """Every training context and reply (for tokenizer training)."""
        for context, reply, _ in self.rows("train"):
            yield context
            if reply:
                yield reply

    def prompts(self, split: str) -> list[str]:
        return [c for c, _, _ in self.rows(split)]

    def labels(self, split: str) -> list[float]:
        return [d for _, _, d in self.rows(split)]

    # -- pipeline --------------------------------------------------------------------------

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        """Tokenize every split (small: in memory). InputError naming every empty split."""
        if self._raw is None:
            self._raw = self._raw_rows()
        eos, hf = tokenizer.eos_id, hf_style(tokenizer)
        parts, problems, first = {}, [], 0
        for split, rows in self._raw.items():
            ids, prompt_len, labels = [], [], []
            for context, reply, d in rows:
                if hf:
                    p = list(tokenizer.encode(context, add_special_tokens=True))
                    if p[-1:] == [eos] and list(tokenizer.encode(context))[-1:] != [eos]:
                        p = p[:-1]  # a post-processor's EOS after the context (rizzrun.data.pairs)
                else:
                    p = [eos, *tokenizer.encode(context)]
                r = list(tokenizer.encode(reply)) + [eos] if reply else []
                ids.append(p + r)
                prompt_len.append(len(p))
                labels.append(float(d))
            if not rows:
                setting, fix = self._split_origin(split)
                problems.append(f"{setting}: the {SPLIT_NAMES.get(split, split)} split has no contexts: {fix}")
            parts[split] = {"ids": ids, "prompt_len": prompt_len, "labels": labels, "first": first}
            first += len(rows)
        if problems:
            raise InputError("; ".join(problems))
        self._parts = parts

    def _require_setup(self) -> dict[str, dict]:
        if self._parts is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(tokenizer) before asking for batches")
        return self._parts

    def _batch(self, split: str, idx: list[int]) -> dict[str, torch.Tensor]:
        part = self._require_setup()[split]
        width = max(len(part["ids"][i]) for i in idx)
        B = len(idx)
        input_ids = torch.zeros(B, width, dtype=torch.long)
        prompt_mask = torch.zeros(B, width, dtype=torch.bool)
        reply_mask = torch.zeros(B, width, dtype=torch.bool)
        for j, i in enumerate(idx):
            row, p = part["ids"][i], part["prompt_len"][i]
            input_ids[j, :len(row)] = torch.tensor(row, dtype=torch.long)
            prompt_mask[j, :p] = True
            reply_mask[j, p:len(row)] = True
        return {"input_ids": input_ids, "prompt_mask": prompt_mask, "reply_mask": reply_mask,
                "diversity": torch.tensor([part["labels"][i] for i in idx], dtype=torch.float32),
                "row": torch.tensor([part["first"] + i for i in idx], dtype=torch.long)}

    @property
    def train_batch_size(self) -> int:
        return min(self.batch_size, len(self._require_setup()["train"]["ids"]))

    @property
    def batches_per_epoch(self) -> int:
        return len(self._require_setup()["train"]["ids"]) // self.train_batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_for(self.seed, epoch))
        return torch.randperm(len(self._require_setup()["train"]["ids"]), generator=g)

    def train_batches(self, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Infinite stream of `diversity` batches of train_batch_size contexts from global batch
        index `start` (module docstring)."""
        if int(start) != start or start < 0:
            raise ValueError(f"train_batches start={start!r}: must be an integer >= 0")
        per_epoch, b = self.batches_per_epoch, self.train_batch_size
        epoch, i = divmod(int(start), per_epoch)
        while True:
            order = self.epoch_order(epoch).tolist()
            for j in range(i, per_epoch):
                yield self._batch("train", order[j * b:(j + 1) * b])
            epoch, i = epoch + 1, 0

    def val_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every validation context once, in row order; nothing without a validation split."""
        part = self._require_setup().get("val")
        if part is None:
            return
        n = len(part["ids"])
        for i in range(0, n, self.batch_size):
            yield self._batch("val", list(range(i, min(i + self.batch_size, n))))

    def prompt_token_ids(self, split: str) -> list[list[int]]:
        """The context ids of `split` (what the model reads before a reply), in row order."""
        part = self._require_setup()[split]
        return [row[:p] for row, p in zip(part["ids"], part["prompt_len"])]

    @property
    def stats(self) -> dict:
        out = {}
        for split, part in (self._parts or {}).items():
            labels = part["labels"]
            out[split] = {"contexts": len(labels), "tokens": sum(len(r) for r in part["ids"]),
                          "mean_diversity": sum(labels) / len(labels) if labels else None}
        out["skipped"] = {}
        return out


# -- JSONL label files ---------------------------------------------------------------------------


def write_label_rows(path: str | Path, rows: list[dict]) -> Path:
    """Write rows ({"text": context, "diversity": d*, optional "reply"}) as JSONL; the file
    `DiversityLabels` reads (rizzrun.eval.diversity.label_contexts makes such rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_label_rows(path: str | Path, text_field: str = "text", label_field: str = "diversity",
                    reply_field: str = "reply") -> list[tuple[str, str, float]]:
    """(context, reply, d*) of every row of a JSONL file; InputError naming the line of a bad row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"data.path={path}: no such file; give a .jsonl of {{{text_field!r}, {label_field!r}}} rows")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"data.path={path}: line {i + 1} is not JSON ({e.msg})") from None
        text, d, reply = row.get(text_field), row.get(label_field), row.get(reply_field, "")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"data.path={path}: line {i + 1} has no non-empty string {text_field!r} field")
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
            raise InputError(f"data.path={path}: line {i + 1} has no number {label_field!r} field (got {d!r})")
        if reply is None:
            reply = ""
        if not isinstance(reply, str):
            raise InputError(f"data.path={path}: line {i + 1}: {reply_field!r} must be a string (got {reply!r})")
        out.append((text, reply, float(d)))
    return out


class DiversityLabels(ContextData):
    """Contexts with diversity labels from a JSONL file: one row per context, {"text": context,
    "diversity": d*, "reply": optional}; e.g. the sampled-proxy labels of
    `rizzrun.eval.diversity.label_contexts` (1 - mean pairwise similarity of N replies sampled at
    T = 1), written by `write_label_rows`.

    path: the .jsonl file. text_field, label_field, reply_field: its field names.
    val_fraction: the contexts with stable_unit(text) < val_fraction are validation (0: none).
    normalize: min-max rescale the labels to [0, 1] with the training split's minimum and maximum
      (the spec's "normalised over the dataset"); off: every label must already be in [0, 1].
    batch_size, seed, cache_dir: as ContextData.
    """

    def __init__(self, path: str, text_field: str = "text", label_field: str = "diversity",
                 reply_field: str = "reply", val_fraction: float = 0.1, normalize: bool = False,
                 batch_size: int = 16, seed: int = 0, cache_dir: str | None = None):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise InputError(f"data.val_fraction={val_fraction!r}: must be in [0, 1)")
        if not isinstance(normalize, bool):
            raise InputError(f"data.normalize={normalize!r}: must be true or false")
        self.path, self.val_fraction, self.normalize = str(path), float(val_fraction), normalize
        self.text_field, self.label_field, self.reply_field = text_field, label_field, reply_field

    def _data_key(self) -> str:
        digest = hashlib.sha256(Path(self.path).expanduser().read_bytes()).hexdigest() \
            if Path(self.path).expanduser().is_file() else "missing"
        return json.dumps(["labels", digest, self.text_field, self.label_field, self.reply_field, self.val_fraction,
                           self.normalize])

    def _raw_rows(self) -> dict[str, list[tuple[str, str, float]]]:
        rows = read_label_rows(self.path, self.text_field, self.label_field, self.reply_field)
        train = [r for r in rows if stable_unit(r[0]) >= self.val_fraction]
        val = [r for r in rows if stable_unit(r[0]) < self.val_fraction]
        if self.normalize and train:
            lo, hi = min(r[2] for r in train), max(r[2] for r in train)
            scale = (hi - lo) or 1.0
            train = [(c, r, min(max((d - lo) / scale, 0.0), 1.0)) for c, r, d in train]
            val = [(c, r, min(max((d - lo) / scale, 0.0), 1.0)) for c, r, d in val]
        else:
            bad = [d for _, _, d in rows if not 0 <= d <= 1]
            if bad:
                raise InputError(f"data.path={self.path}: labels must be in [0, 1] (found {bad[0]}); set "
                                 "data.normalize=true to rescale them")
        return {"train": train, **({"val": val} if self.val_fraction > 0 else {})}

    def _split_origin(self, split: str) -> tuple[str, str]:
        if split == "val":
            return f"data.val_fraction={self.val_fraction}", "raise data.val_fraction, or set it to 0"
        return f"data.path={self.path}", "add rows"
