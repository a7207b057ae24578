"""A verifiable instruction-following task with many right answers, generated on the fly: the tiny
stand-in for IFEval in SPaR (Cheng et al., arXiv 2412.11605; rizzrun.selfplay.spar).

An instruction asks for a string of `length` characters of `alphabet` under four constraints:

    prompt           "s:a,e:b,+c,-d="     start with a, end with b, contain c, do not contain d
    a right answer   "acffgb"             (many others: "aaccfb", "cagb..." is wrong: starts with c)

The start, end and required characters differ from the forbidden one (they may equal each other).
`verify(prompt, completion)`: the completion, stripped, has `length` characters, all of the
prompt's alphabet... (any non-space characters; only the four rules and the length are checked),
starts and ends right, contains the required character and not the forbidden one.

Unlike the string tasks of rizzrun.data.tasks (one right answer), two right answers of one prompt
differ in most characters, so a pair of independent samples (a right one and a wrong one) differs
far more than a wrong answer and its minimal repair: the contrast SPaR is about.

The refiner's two jobs, as plain text (their own leading words, so an actor prompt never reads as one):

    judge   "judge:" + prompt + response + "?"   ->  "yes" | "no"      (does the response follow it)
    fix     "fix:" + prompt + response + ">"     ->  a right answer, the response minimally changed

Problems: every (start, end, required, forbidden) tuple, ordered by sha256("constraints:<seed>:<prompt>");
a problem is held out iff stable_unit(prompt) < val_fraction (as rizzrun.data.tasks). Answers and
corruptions are pure functions of (prompt, key) through sha256.

Components:
- ConstraintSFT (`data=constraint_sft`): an `lm` corpus. Actor documents prompt + answer
  (`answers_per_prompt` right answers per training problem; a `noise` share of them corrupted by one
  character so the SFT model fails sometimes); with `refiner=true` also, per training problem, a
  judge document on a right answer ("yes") and on a corrupted one ("no"), and a fix document from a
  corrupted answer (1 or 2 characters changed, `corrupt`) back to the right answer it came from (a
  minimal repair). Validation: actor documents of held-out problems, never corrupted. `verify`,
  `prompts(split)`, `extra_text`: the task's (so eval.at_end reports task.correct_rate).
- ConstraintPrompts (`data=constraint_prompts`): the prompts as `prompts` batches (job=sample, GRPO),
  default reward `correct` (1.0 iff verify).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Literal

from rizzrun.data.lm import PACKINGS, LMCorpus, stable_unit
from rizzrun.data.prompts import PromptData
from rizzrun.errors import InputError

__all__ = ["ConstraintPrompts", "ConstraintSFT", "corrupt", "fix_prompt", "generate_problems", "judge_prompt",
           "parse", "prompt_of", "right_answer", "verify"]

GENERATOR_VERSION = 1
_PROMPT = re.compile(r"^\s*s:(\S),e:(\S),\+(\S),-(\S)=\s*$")
_JUDGE, _FIX = "judge:", "fix:"
YES, NO = "yes", "no"


def prompt_of(start: str, end: str, has: str, avoid: str) -> str:
    return f"s:{start},e:{end},+{has},-{avoid}="


def parse(prompt: str) -> tuple[str, str, str, str]:
    """(start, end, required, forbidden) of an instruction; ValueError for any other text."""
    m = _PROMPT.match(prompt) if isinstance(prompt, str) else None
    if not m:
        raise ValueError(f"{prompt!r} is not a constraint prompt like 's:a,e:b,+c,-d='")
    return m.group(1), m.group(2), m.group(3), m.group(4)


def verify(prompt: str, completion: str, length: int = 6) -> bool:
    """Whether the stripped completion follows the instruction (module docstring)."""
    start, end, has, avoid = parse(prompt)
    s = completion.strip()
    return (len(s) == length and not any(c.isspace() for c in s) and s[0] == start and s[-1] == end
            and has in s and avoid not in s)


def judge_prompt(prompt: str, response: str) -> str:
    return f"{_JUDGE}{prompt.strip()}{response.strip()}?"


def fix_prompt(prompt: str, response: str) -> str:
    return f"{_FIX}{prompt.strip()}{response.strip()}>"


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def right_answer(prompt: str, alphabet: str, length: int, key: str) -> str:
    """A right answer drawn from sha256(prompt, key): start and end as asked, the middle from the
    alphabet without the forbidden character, the required one put at a drawn middle place when absent."""
    start, end, has, avoid = parse(prompt)
    allowed = [c for c in alphabet if c != avoid]
    h = _hash(f"answer:{prompt}:{key}")
    middle = []
    for _ in range(length - 2):
        middle.append(allowed[h % len(allowed)])
        h //= len(allowed)
    s = start + "".join(middle) + end
    if has not in s:
        pos = 1 + h % (length - 2)
        s = s[:pos] + has + s[pos + 1:]
    return s


def corrupt(prompt: str, answer: str, alphabet: str, key: str, changes: int = 1) -> str:
    """`answer` with `changes` characters (distinct places) replaced so that it breaks the instruction:
    each change is one of the wrong start, wrong end, the forbidden character in the middle, or the
    required character's only occurrence replaced, drawn from sha256(prompt, answer, key)."""
    start, end, has, avoid = parse(prompt)
    s, used, n = list(answer), set(), len(answer)
    for j in range(changes):
        h = _hash(f"corrupt:{prompt}:{answer}:{key}:{j}")
        options = []
        if 0 not in used:
            options += [(0, c) for c in alphabet if c != start]
        if n - 1 not in used:
            options += [(n - 1, c) for c in alphabet if c != end]
        options += [(i, avoid) for i in range(1, n - 1) if i not in used]
        only = [i for i in range(n) if s[i] == has]
        if len(only) == 1 and only[0] not in used and 0 < only[0] < n - 1:
            options += [(only[0], c) for c in alphabet if c not in (has, avoid)]
        # a kind first (start, end, forbidden, required), then a place and character of that kind
        kinds = sorted({("start" if i == 0 else "end" if i == n - 1 else "avoid" if c == avoid else "has")
                        for i, c in options})
        kind = kinds[h % len(kinds)]
        pick = [(i, c) for i, c in options
                if ("start" if i == 0 else "end" if i == n - 1 else "avoid" if c == avoid else "has") == kind]
        i, c = pick[(h >> 20) % len(pick)]
        s[i] = c
        used.add(i)
    return "".join(s)


def generate_problems(n_train: int, n_val: int, alphabet: str = "abcdefgh", val_fraction: float = 0.1,
                      problem_seed: int = 0) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): the first n_train / n_val of each kind in sha256 order."""
    every = [prompt_of(s, e, h, a) for a in alphabet for s, e, h in itertools.product(alphabet, repeat=3)
             if a not in (s, e, h)]
    every.sort(key=lambda p: hashlib.sha256(f"constraints:{problem_seed}:{p}".encode()).digest())
    val = [p for p in every if stable_unit(p) < val_fraction]
    train = [p for p in every if stable_unit(p) >= val_fraction]
    if n_train > len(train) or n_val > len(val):
        raise InputError(f"data.n_train={n_train}, data.n_val={n_val}: alphabet {alphabet!r} with "
                         f"val_fraction={val_fraction} has {len(train)} training and {len(val)} held-out problems; "
                         f"lower them, change data.val_fraction or give data.alphabet more characters")
    return train[:n_train], val[:n_val]


def _check(n_train, n_val, length, alphabet, val_fraction, problem_seed) -> None:
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("length", length, 3),
                            ("problem_seed", problem_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")
    if (not isinstance(alphabet, str) or len(set(alphabet)) != len(alphabet) or len(alphabet) < 3
            or any(not c.isprintable() or c.isspace() or c in ":,=+-?>" for c in alphabet)):
        raise InputError(f"data.alphabet={alphabet!r}: must be 3 or more distinct printable characters, none of them "
                         f"whitespace or one of : , = + - ? >")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise InputError(f"data.val_fraction={val_fraction!r}: must be in (0, 1)")


class _Problems:
    def _init_problems(self, n_train, n_val, length, alphabet, val_fraction, problem_seed) -> None:
        _check(n_train, n_val, length, alphabet, val_fraction, problem_seed)
        self.n_train, self.n_val, self.length, self.alphabet = n_train, n_val, length, alphabet
        self.val_fraction, self.problem_seed = float(val_fraction), problem_seed
        self._drawn = None

    def _splits(self) -> dict[str, list[str]]:
        if self._drawn is None:
            train, val = generate_problems(self.n_train, self.n_val, self.alphabet, self.val_fraction,
                                           self.problem_seed)
            self._drawn = {"train": train, **({"val": val} if self.n_val else {})}
        return self._drawn

    def _key(self, kind: str, more: list = ()) -> str:
        key = [kind, GENERATOR_VERSION, self.n_train, self.n_val, self.length, self.alphabet, self.val_fraction,
               self.problem_seed, *more]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def prompts(self, split: str) -> list[str]:
        return list(self._splits()[split])

    def verify(self, prompt: str, completion: str) -> bool:
        return verify(prompt, completion, self.length)

    def extra_text(self, completion: str) -> str:
        """What follows the answer's `length` characters (stripped; '' when none)."""
        return completion.strip()[self.length:].strip()

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"


class ConstraintSFT(_Problems, LMCorpus):
    """Actor (and, with `refiner`, judge and fix) documents of the constraint task (module docstring).

    n_train, n_val, length, alphabet, val_fraction, problem_seed: the problems. answers_per_prompt:
    right answers (actor documents) per training problem. noise: the share of actor documents
    corrupted by one character. refiner: add the judge and fix documents (a multitask SFT model
    that is both actor and refiner). seq_len, batch_size, seed, packing, cache_dir: every lm corpus.
    """

    batch_kind = "lm"

    def __init__(self, n_train: int = 2000, n_val: int = 200, length: int = 6, alphabet: str = "abcdefgh",
                 val_fraction: float = 0.1, problem_seed: int = 0, answers_per_prompt: int = 2,
                 noise: float = 0.0, refiner: bool = False, seq_len: int = 64, batch_size: int = 16, seed: int = 0,
                 packing: Literal["concat", "document"] = "concat", cache_dir: str | None = None):
        LMCorpus.__init__(self, seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir)
        self._init_problems(n_train, n_val, length, alphabet, val_fraction, problem_seed)
        if isinstance(answers_per_prompt, bool) or not isinstance(answers_per_prompt, int) or answers_per_prompt < 1:
            raise InputError(f"data.answers_per_prompt={answers_per_prompt!r}: must be an integer >= 1")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
            raise InputError(f"data.noise={noise!r}: must be in [0, 1] (the share of actor answers corrupted)")
        if packing not in PACKINGS:
            raise InputError(f"data.packing={packing!r}: allowed: {', '.join(PACKINGS)}")
        self.answers_per_prompt, self.noise, self.refiner = answers_per_prompt, float(noise), bool(refiner)
        self.packing = packing

    @property
    def fingerprint(self) -> str:
        return self._key("constraint-sft", [self.answers_per_prompt, self.noise, self.refiner])

    def documents(self, split: str) -> list[str]:
        a, n = self.alphabet, self.length
        docs = []
        for p in self.prompts(split):
            if split != "train":
                docs.append(p + right_answer(p, a, n, "val"))
                continue
            for k in range(self.answers_per_prompt):
                y = right_answer(p, a, n, str(k))
                noisy = stable_unit(f"noise:{self.problem_seed}:{p}:{k}") < self.noise
                docs.append(p + (corrupt(p, y, a, f"noise{k}") if noisy else y))
            if self.refiner:
                y = right_answer(p, a, n, "refiner")
                wrong = corrupt(p, y, a, "judge")
                bad = corrupt(p, y, a, "fix", changes=1 + _hash(f"changes:{p}") % 2)
                docs += [judge_prompt(p, y) + YES, judge_prompt(p, wrong) + NO, fix_prompt(p, bad) + y]
        return docs

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in self._splits()}


class ConstraintPrompts(_Problems, PromptData):
    """The constraint task's prompts as `prompts` batches; default reward `correct` = verify (module docstring).

    n_train, n_val, length, alphabet, val_fraction, problem_seed: as ConstraintSFT (use the same values).
    batch_size, seed, max_prompt_length, cache_dir: rizzrun.data.prompts.PromptData.
    """

    batch_kind = "prompts"

    def __init__(self, n_train: int = 2000, n_val: int = 200, length: int = 6, alphabet: str = "abcdefgh",
                 val_fraction: float = 0.1, problem_seed: int = 0, batch_size: int = 16, seed: int = 0,
                 max_prompt_length: int | None = None, cache_dir: str | None = None):
        PromptData.__init__(self, batch_size=batch_size, seed=seed, cache_dir=cache_dir,
                            max_prompt_length=max_prompt_length)
        self._init_problems(n_train, n_val, length, alphabet, val_fraction, problem_seed)
        self._cached = None

    @property
    def fingerprint(self) -> str:
        return self._key("constraint-prompts")

    def _rows(self) -> dict[str, list[dict]]:
        if self._cached is None:
            self._cached = {s: [{"prompt": p} for p in ps] for s, ps in self._splits().items()}
        return self._cached

    def default_rewards(self):
        from functools import partial

        return {"correct": (partial(follows, length=self.length), 1.0)}


def follows(prompts, completions, length: int = 6, **columns) -> list[float]:
    """Reward function: 1.0 where the completion follows its prompt's instruction (verify), else 0.0."""
    return [float(verify(p, c, length)) for p, c in zip(prompts, completions)]
