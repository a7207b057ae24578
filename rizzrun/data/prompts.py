"""PromptData: prompts (with per-row columns such as a reference answer) as `prompts` batches,
what on-policy objectives (GRPO, ReST, ...) generate from (docs/contracts.md "Batch kinds").

A subclass gives `_rows() -> {split: [row dict]}` (each row a dict with "prompt": a string, or a
list of chat messages {"role", "content"}, plus any columns, e.g. "answer") and `fingerprint`; this
class tokenizes, batches, and hands the rows' columns to the reward functions.

Tokenization, as a prompt of the preference data (rizzrun.data.pairs): a plain prompt with
rizzrun's own tokenizers (byte, bpe) is [EOS] + encode(prompt), the way a packed document and every
prompt the runner samples from begins; with a Hugging Face tokenizer encode(prompt,
add_special_tokens=True) without a trailing EOS a post-processor appends; chat prompts are
rendered with apply_chat_template(add_generation_prompt=True) and encoded without added specials.
`max_prompt_length` keeps a prompt's last tokens (TRL's left truncation; counted as truncated).
A prompt that is empty or only whitespace, or encodes to no token, is dropped and counted (`stats[split]["dropped"]["empty_prompt"]`).

Batches: prompt_ids (B, P) LEFT-padded with id 0, prompt_mask (B, P) bool (True = real), row (B,)
long (train 0..N-1, then val). Training order as rizzrun.data.pairs: with n prompts and b =
min(batch_size, n), batch i is the j-th slice of b prompts (j = i % (n // b)) of the permutation
seeded by (seed, epoch i // (n // b)), so `train_batches(start=i)` is an exact resume.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator

import numpy as np
import torch

from rizzrun.data.lm import _seed_for
from rizzrun.errors import InputError

__all__ = ["PromptData", "left_padded"]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The ids a model reads for a plain-text prompt, as a document begins: a Hugging Face tokenizer's
    own specials (its BOS; a post-processor's EOS after the text dropped: the completion follows), or
    [EOS] + encode(prompt) for rizzrun's tokenizers. What every `prompts` data option feeds the policy,
    and what a model scoring (prompt, completion) text re-encodes (rizzrun.rewards.teacher)."""
    from rizzrun.data.pairs import hf_style

    if hf_style(tokenizer):
        ids = list(tokenizer.encode(prompt, add_special_tokens=True))
        bare = list(tokenizer.encode(prompt))
        if ids[-1:] == [tokenizer.eos_id] and bare[-1:] != [tokenizer.eos_id]:
            ids = ids[:-1]
        return ids
    return [tokenizer.eos_id, *tokenizer.encode(prompt)]


def left_padded(rows: list[list[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """{"prompt_ids": (B, P) long, "prompt_mask": (B, P) bool} of id lists, left-padded to the longest."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = True
    return {"prompt_ids": ids, "prompt_mask": mask}


class PromptData:
    """Base of the `prompts` data options (module docstring).

    batch_size: prompts per batch (each becomes G completions). seed: training order.
    max_prompt_length: keep a prompt's last tokens (None: no limit). cache_dir: unused (prompts are
    tokenized in memory; kept so every data option takes it).
    """

    batch_kind = "prompts"

    def __init__(self, batch_size: int = 16, seed: int = 0, cache_dir: str | None = None,
                 max_prompt_length: int | None = None):
        for key, value, nullable in (("batch_size", batch_size, False), ("max_prompt_length", max_prompt_length, True)):
            if value is None and nullable:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"data.{key}={value!r}: must be an integer >= 1{' or null' if nullable else ''}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"data.seed={seed!r}: must be an integer")
        self.batch_size, self.seed, self.cache_dir = batch_size, seed, cache_dir
        self.max_prompt_length = max_prompt_length
        self._parts: dict[str, dict] | None = None
        self._stats: dict[str, dict] = {}

    # -- subclass hooks --------------------------------------------------------------------

    def _rows(self) -> dict[str, list[dict]]:
        """{"train": [row, ...], "val": [...] (optional)}: each row {"prompt": str | messages, **columns}."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def _split_origin(self, split: str) -> tuple[str, str]:
        """(what set the split's size, how to grow it), for the empty-split message."""
        return f"data ({type(self).__name__})", "give more prompts"

    def default_rewards(self) -> dict[str, tuple[Callable, float]] | None:
        """{name: (reward function, weight)} that score this data's completions when
        rewards is null; None: the data brings none."""
        return None

    # -- setup -------------------------------------------------------------------------------

    def train_texts(self) -> Iterator[str]:
        """Texts to train a tokenizer on: the training prompts and any string columns."""
        for row in self._rows()["train"]:
            for key, value in row.items():
                if isinstance(value, str):
                    yield value
                elif key == "prompt" and isinstance(value, list):  # chat messages
                    yield from (str(m.get("content", "")) for m in value if isinstance(m, dict))

    def _encode(self, tokenizer, prompt) -> tuple[str, list[int]]:
        if isinstance(prompt, list):  # chat messages
            if not hasattr(tokenizer, "apply_chat_template"):
                raise InputError(f"data: a chat prompt (a list of messages) needs a tokenizer with a chat template; "
                                 f"{type(tokenizer).__name__} has none (use tokenizer=hf)")
            text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
            return text, list(tokenizer.encode(text))
        if not isinstance(prompt, str):
            raise InputError(f"data: prompt {prompt!r} is neither a string nor a list of chat messages")
        return prompt, encode_prompt(tokenizer, prompt)

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        rows = self._rows()
        parts, first = {}, 0
        for split in ("train", "val"):
            if split not in rows:
                continue
            kept, dropped, truncated, tokens = [], Counter(), 0, 0
            for row in rows[split]:
                if isinstance(row["prompt"], str) and not row["prompt"].strip():
                    dropped["empty_prompt"] += 1  # [EOS] / [BOS] alone is no prompt
                    continue
                text, ids = self._encode(tokenizer, row["prompt"])
                if not ids:
                    dropped["empty_prompt"] += 1
                    continue
                if self.max_prompt_length is not None and len(ids) > self.max_prompt_length:
                    ids, truncated = ids[len(ids) - self.max_prompt_length:], truncated + 1
                tokens += len(ids)
                kept.append({**row, "prompt_text": text, "ids": ids})
            parts[split] = {"rows": kept, "first_row": first}
            self._stats[split] = {"prompts": len(kept), "tokens": tokens, "truncated": truncated,
                                  "dropped": dict(dropped)}
            first += len(kept)
        empty = [s for s in parts if not parts[s]["rows"] and (s == "train" or rows.get(s))]
        if empty or "train" not in parts:
            problems = []
            for s in empty or ["train"]:
                origin, fix = self._split_origin(s)
                problems.append(f"{s} split: no prompt ({origin}); {fix}")
            raise InputError("data: " + "; ".join(problems))
        self._parts = parts

    def _require_setup(self) -> dict[str, dict]:
        if self._parts is None:
            raise RuntimeError(f"{type(self).__name__}.setup(tokenizer) must be called first")
        return self._parts

    # -- batches ----------------------------------------------------------------------------

    def _batch(self, split: str, idx) -> dict[str, torch.Tensor]:
        part = self._require_setup()[split]
        idx = [int(i) for i in idx]
        out = left_padded([part["rows"][i]["ids"] for i in idx])
        out["row"] = torch.tensor([part["first_row"] + i for i in idx], dtype=torch.long)
        return out

    def batch_of_rows(self, rows) -> dict[str, torch.Tensor]:
        """The `prompts` batch of the given row ids (any split), in that order."""
        found = [self._row(int(r)) for r in rows]
        out = left_padded([r["ids"] for r in found])
        out["row"] = torch.tensor([int(r) for r in rows], dtype=torch.long)
        return out

    @property
    def n_rows(self) -> int:
        return sum(len(p["rows"]) for p in self._require_setup().values())

    def split_rows(self, split: str) -> range:
        p = self._require_setup()[split]
        return range(p["first_row"], p["first_row"] + len(p["rows"]))

    @property
    def train_batch_size(self) -> int:
        return min(self.batch_size, len(self._require_setup()["train"]["rows"]))

    @property
    def batches_per_epoch(self) -> int:
        return len(self._require_setup()["train"]["rows"]) // self.train_batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_for(self.seed, epoch))
        return torch.randperm(len(self._require_setup()["train"]["rows"]), generator=g)

    def train_batches(self, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Infinite stream of `prompts` batches from global batch index `start` (module docstring)."""
        if int(start) != start or start < 0:
            raise ValueError(f"train_batches start={start!r}: must be an integer >= 0")
        per_epoch, b = self.batches_per_epoch, self.train_batch_size
        epoch, i = divmod(int(start), per_epoch)
        while True:
            order = self.epoch_order(epoch).numpy()
            for j in range(i, per_epoch):
                yield self._batch("train", order[j * b:(j + 1) * b])
            epoch, i = epoch + 1, 0

    def val_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every validation prompt once, in row order, batch_size at a time (none without a val split)."""
        parts = self._require_setup()
        if "val" not in parts:
            return
        n = len(parts["val"]["rows"])
        for i in range(0, n, self.batch_size):
            yield self._batch("val", np.arange(i, min(i + self.batch_size, n)))

    # -- rows for the rewards ---------------------------------------------------------------

    def _row(self, row: int) -> dict:
        for part in self._require_setup().values():
            if part["first_row"] <= row < part["first_row"] + len(part["rows"]):
                return part["rows"][row - part["first_row"]]
        raise IndexError(f"prompt row {row} is outside the data's {self.n_rows} rows")

    def columns(self, rows) -> tuple[list[str], dict[str, list[Any]]]:
        """(prompt texts, {column: values}) of the given row ids, in order: what the reward functions
        receive (the prompt as the model read it, chat templates rendered; every other field of the
        row as a column, None where a row lacks it)."""
        found = [self._row(int(r)) for r in rows]
        names = sorted({k for r in found for k in r} - {"prompt", "prompt_text", "ids"})
        return [r["prompt_text"] for r in found], {k: [r.get(k) for r in found] for k in names}

    def prompts(self, split: str) -> list[str]:
        """The prompt texts of `split`, in row order."""
        return [r["prompt_text"] for r in self._require_setup()[split]["rows"]]

    def prompt_token_ids(self, split: str) -> list[list[int]]:
        """The ids the model reads for each prompt of `split`, in row order."""
        return [list(r["ids"]) for r in self._require_setup()[split]["rows"]]

    def longest_prompt(self) -> int:
        return max((len(r["ids"]) for p in self._require_setup().values() for r in p["rows"]), default=0)

    @property
    def stats(self) -> dict:
        """{split: {prompts, tokens, truncated, dropped: {reason: n}}} after setup."""
        return {k: dict(v) for k, v in self._stats.items()}
