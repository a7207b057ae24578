"""A built-in synthetic dialogue set for DDS (arXiv 2406.07850), made on the fly: "fact" prompts
with one right answer and "chat" prompts with many acceptable continuations.

    fact  "Q: 3+4? A:"                  -> " 7"                     (100 prompts: a, b in 0..9)
    chat  "Q: tell me about rain. A:"   -> " calm ship sleeps"      (8 topics x 8^3 replies, uniform)

Example k of a part ("train", "val") is drawn from sha256("dialogue:<problem_seed>:<part>:<k>"):
fact or chat with probability 1/2 each, then the operands or the topic and the three reply words.
The prompts of both parts come from the same small spaces (the point is decoding, not
generalisation); their replies are fresh draws, so a chat prompt appears with many replies.

- DialogueSFT (`data=dialogue_sft`): an `lm` corpus of documents prompt + reply, joined by EOS; a model
  trained on it answers the prompt EOS + "Q: 3+4? A:" and stops with EOS.
- DialogueContexts (`data=dialogue_contexts`): the same examples as `diversity` rows (context, reply,
  d*) with the ground-truth label of their kind, d* = 0 for fact and 1 for chat (the spec's labels
  for unit-level demos; `rizzrun.eval.diversity.label_contexts` makes sampled-proxy labels instead).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from rizzrun.data.contexts import ContextData
from rizzrun.data.lm import LMCorpus
from rizzrun.errors import InputError

__all__ = ["DialogueSFT", "DialogueContexts", "dialogue_examples", "fact_answer", "is_fact", "TOPICS", "WORDS"]

GENERATOR_VERSION = 1
TOPICS = ("rain", "cats", "music", "books", "tea", "boats", "stars", "trains")
WORDS = (("big", "small", "red", "old", "new", "odd", "calm", "warm"),
         ("dog", "cup", "song", "hat", "road", "tree", "ship", "lamp"),
         ("runs", "sings", "waits", "falls", "shines", "moves", "sleeps", "grows"))
_FACT = re.compile(r"^Q: (\d)\+(\d)\? A:$")


def _h(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def dialogue_examples(n: int, part: str = "train", problem_seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind "fact" | "chat", prompt, reply) of examples 0..n-1 of `part` (module docstring)."""
    out = []
    for k in range(n):
        h = _h(f"dialogue:{problem_seed}:{part}:{k}")
        if h & 1:
            a, b = (h >> 8) % 10, (h >> 16) % 10
            out.append(("fact", f"Q: {a}+{b}? A:", f" {a + b}"))
        else:
            topic = TOPICS[(h >> 8) % len(TOPICS)]
            words = [w[(h >> (16 + 8 * i)) % len(w)] for i, w in enumerate(WORDS)]
            out.append(("chat", f"Q: tell me about {topic}. A:", " " + " ".join(words)))
    return out


def is_fact(prompt: str) -> bool:
    return _FACT.match(prompt) is not None


def fact_answer(prompt: str) -> str:
    """The one right reply to a fact prompt (" 7"); ValueError for another prompt."""
    m = _FACT.match(prompt)
    if m is None:
        raise ValueError(f"fact_answer: {prompt!r} is not a fact prompt like 'Q: 3+4? A:'")
    return f" {int(m.group(1)) + int(m.group(2))}"


def _check(n_train, n_val, problem_seed) -> None:
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("problem_seed", problem_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")


class DialogueSFT(LMCorpus):
    """The synthetic dialogue examples as an `lm` corpus (module docstring): n_train / n_val
    documents prompt + reply (n_val=0: no validation); seq_len, batch_size, seed, packing, cache_dir
    as every lm corpus."""

    batch_kind = "lm"

    def __init__(self, n_train: int = 4000, n_val: int = 200, problem_seed: int = 0, seq_len: int = 64,
                 batch_size: int = 32, seed: int = 0, packing: Literal["concat", "document"] = "concat",
                 cache_dir: str | None = None):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        _check(n_train, n_val, problem_seed)
        self.n_train, self.n_val, self.problem_seed = n_train, n_val, problem_seed

    @property
    def fingerprint(self) -> str:
        key = ["dialogue-sft", GENERATOR_VERSION, self.n_train, self.n_val, self.problem_seed]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def examples(self, split: str) -> list[tuple[str, str, str]]:
        return dialogue_examples(self.n_train if split == "train" else self.n_val, split, self.problem_seed)

    def prompts(self, split: str) -> list[str]:
        return [p for _, p, _ in self.examples(split)]

    def documents(self, split: str) -> list[str]:
        return [p + r for _, p, r in self.examples(split)]

    def train_texts(self):
        return iter(self.documents("train"))

    def val_texts(self):
        return iter(self.documents("val"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        splits = ("train", "val") if self.n_val else ("train",)
        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in splits}

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"


class DialogueContexts(ContextData):
    """The synthetic dialogue examples as `diversity` rows with ground-truth labels (fact 0, chat 1):
    n_train / n_val contexts (n_val=0: no validation), each with its reference reply; problem_seed,
    batch_size, seed, cache_dir as DialogueSFT / ContextData."""

    def __init__(self, n_train: int = 512, n_val: int = 128, problem_seed: int = 0, batch_size: int = 32,
                 seed: int = 0, cache_dir: str | None = None):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir)
        _check(n_train, n_val, problem_seed)
        self.n_train, self.n_val, self.problem_seed = n_train, n_val, problem_seed

    def _data_key(self) -> str:
        return json.dumps(["dialogue-contexts", GENERATOR_VERSION, self.n_train, self.n_val, self.problem_seed])

    def _raw_rows(self) -> dict:
        parts = {"train": self.n_train, **({"val": self.n_val} if self.n_val else {})}
        return {part: [(p, r, 0.0 if kind == "fact" else 1.0)
                       for kind, p, r in dialogue_examples(n, part, self.problem_seed)]
                for part, n in parts.items()}

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"
