"""A verifiable instruction with many right answers, generated on the fly: reverse a string, then
sign it with any `tail` letters — the tiny stand-in for IFEval in SPaR (Cheng et al., arXiv 2412.11605;
rizzrun.selfplay.spar).

    prompt            "rev:abcdef="
    right answers     "fedcba/xyz", "fedcba/hhb", ... (any `tail` letters of the alphabet after "/")
    wrong             "fedcpa/xyz" (a wrong letter), "fedcba" (no signature), "fedcb/xyz"

`verify(prompt, completion)`: the completion, stripped, is the string backwards, "/", and exactly
`tail` lower-case letters. The signature is free: two right answers of one prompt differ in most of
it, so a pair of independent samples (a right one and a wrong one) differs in places that have
nothing to do with why one is wrong, while a wrong answer and its minimal repair differ only in the
wrong letter: the contrast SPaR is about. (The string tasks of rizzrun.data.tasks have one right
answer each, so there a repair is the answer and the two kinds of pairs coincide.) The prompt is that
of rizzrun.data.tasks' reverse task on purpose: the tiny SPaR SFT starts from a model of that task
(sft_reverse_tiny), which a tiny model learns from scratch slowly; only the signature is new. (Free
letter case instead of a free signature broke that model's reversal: 0% held-out after 300 steps.)

The refiner's two jobs, as plain text (their own leading words, so an actor prompt never reads as one):

    judge   "judge:" + prompt + response + "?"   ->  "yes" | "no"      (does the response follow it)
    fix     "fix:" + response + ">" + prompt     ->  a right answer, the response minimally changed

(The fix document ends with the actor's own prompt, so the answer follows "rev:...=" exactly where
the actor's does: the reversal the model already knows carries over, and only copying the response's
signature is new. With the response after the prompt ("fix:rev:...=y>"), 300 multitask steps taught
the tiny model no repair at all.)

Problems: candidate k is a string of `length` letters of `alphabet` (lower case) read from
sha256("signed:<problem_seed>:<length>:<alphabet>:<k>"); a problem is held out iff
stable_unit(prompt) < val_fraction (as rizzrun.data.tasks); the first n_train / n_val distinct ones of
each kind. Answers (their signatures) and corruptions are pure functions of (prompt, key).

Components:
- SignedSFT (`data=signed_sft`): an `lm` corpus. Actor documents prompt + answer
  (`answers_per_prompt` right answers, their signatures drawn, per training problem; a `noise` share
  of them with one letter of the reversal replaced, so the SFT model fails sometimes); with
  `refiner=true` also, per training problem, a judge document on a right answer ("yes") and on a
  corrupted one ("no"), and a fix document from a corrupted answer (1 or 2 letters replaced,
  `corrupt`) back to the right answer it came from (a minimal repair). Validation: actor documents of
  held-out problems, never corrupted. `verify`, `prompts(split)`, `extra_text`: the task's (so
  eval.at_end reports task.correct_rate).
- SignedPrompts (`data=signed_prompts`): the prompts as `prompts` batches (job=sample, GRPO),
  default reward `correct` (1.0 iff verify).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from rizzrun.data.lm import LMCorpus, stable_unit
from rizzrun.data.prompts import PromptData
from rizzrun.errors import InputError

__all__ = ["SignedPrompts", "SignedSFT", "corrupt", "fix_prompt", "generate_problems", "judge_prompt",
           "parse", "prompt_of", "right_answer", "verify"]

GENERATOR_VERSION = 2  # 2: fix documents are fix:<response>><prompt> (the tokenized cache must not serve 1)
_PROMPT = re.compile(r"^\s*rev:([^\s:=]+)=\s*$")
_JUDGE, _FIX = "judge:", "fix:"
YES, NO = "yes", "no"


def prompt_of(text: str) -> str:
    return f"rev:{text}="


def parse(prompt: str) -> str:
    """The string of an instruction; ValueError for any other text."""
    m = _PROMPT.match(prompt) if isinstance(prompt, str) else None
    if not m:
        raise ValueError(f"{prompt!r} is not a signed reversal prompt like 'rev:abcdef='")
    return m.group(1)


TAIL = 3  # letters of the free signature


def verify(prompt: str, completion: str, tail: int = TAIL) -> bool:
    """Whether the stripped completion is the prompt's string backwards, "/" and `tail` lower-case
    letters a-z (module docstring)."""
    head, sep, sign = completion.strip().partition("/")
    return (head == parse(prompt)[::-1] and sep == "/" and len(sign) == tail
            and all("a" <= c <= "z" for c in sign))


def judge_prompt(prompt: str, response: str) -> str:
    return f"{_JUDGE}{prompt.strip()}{response.strip()}?"


def fix_prompt(prompt: str, response: str) -> str:
    return f"{_FIX}{response.strip()}>{prompt.strip()}"


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def right_answer(prompt: str, key: str, alphabet: str = "abcdefgh", tail: int = TAIL) -> str:
    """The string backwards, "/", and `tail` letters of `alphabet` drawn from sha256(prompt, key)."""
    h = _hash(f"answer:{prompt}:{key}")
    sign = []
    for _ in range(tail):
        sign.append(alphabet[h % len(alphabet)])
        h //= len(alphabet)
    return parse(prompt)[::-1] + "/" + "".join(sign)


def corrupt(prompt: str, answer: str, alphabet: str, key: str, changes: int = 1) -> str:
    """`answer` with `changes` letters of its reversal (distinct places before "/", drawn from
    sha256(prompt, answer, key)) replaced by other letters of `alphabet`: a wrong answer `changes`
    edits away, its signature kept."""
    s = list(answer)
    n = answer.index("/") if "/" in answer else len(answer)
    places = sorted(range(n), key=lambda i: _hash(f"place:{prompt}:{answer}:{key}:{i}"))[:changes]
    for j, i in enumerate(places):
        options = [c for c in alphabet if c != s[i]]
        s[i] = options[_hash(f"letter:{prompt}:{answer}:{key}:{j}") % len(options)]
    return "".join(s)


def generate_problems(n_train: int, n_val: int, length: int = 6, alphabet: str = "abcdefgh",
                      val_fraction: float = 0.1, problem_seed: int = 0) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): the first n_train / n_val distinct candidates of each kind."""
    if n_train + n_val > len(alphabet) ** length:
        raise InputError(f"data.n_train={n_train}, data.n_val={n_val}: only {len(alphabet) ** length} strings of "
                         f"{length} letters of {alphabet!r}; lower them, raise data.length or give data.alphabet more letters")
    train, val, seen, k = [], [], set(), 0
    while len(train) < n_train or len(val) < n_val:
        if k > 1000 * (n_train + n_val) + 10_000:
            raise InputError(f"data.val_fraction={val_fraction}: too few distinct problems of a kind for "
                             f"data.n_train={n_train}, data.n_val={n_val}; lower them or change data.val_fraction")
        h = hashlib.sha256(f"signed:{problem_seed}:{length}:{alphabet}:{k}".encode()).digest()
        k += 1
        p = prompt_of("".join(alphabet[b % len(alphabet)] for b in h[:length]))
        if p in seen:
            continue
        seen.add(p)
        target = val if stable_unit(p) < val_fraction else train
        if len(target) < (n_val if target is val else n_train):
            target.append(p)
    return train, val


def _check(n_train, n_val, length, alphabet, val_fraction, problem_seed) -> None:
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("length", length, 1),
                            ("problem_seed", problem_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")
    if length > 32:
        raise InputError(f"data.length={length}: at most 32 (a problem's letters come from one sha256 digest)")
    if (not isinstance(alphabet, str) or len(set(alphabet)) != len(alphabet) or len(alphabet) < 2
            or not all("a" <= c <= "z" for c in alphabet)):
        raise InputError(f"data.alphabet={alphabet!r}: must be 2 or more distinct lower-case letters a-z")
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
            train, val = generate_problems(self.n_train, self.n_val, self.length, self.alphabet,
                                           self.val_fraction, self.problem_seed)
            self._drawn = {"train": train, **({"val": val} if self.n_val else {})}
        return self._drawn

    def _key(self, kind: str, more: list = ()) -> str:
        key = [kind, GENERATOR_VERSION, self.n_train, self.n_val, self.length, self.alphabet, self.val_fraction,
               self.problem_seed, *more]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def prompts(self, split: str) -> list[str]:
        return list(self._splits()[split])

    def verify(self, prompt: str, completion: str) -> bool:
        return verify(prompt, completion)

    def extra_text(self, completion: str) -> str:
        """What follows the answer's reversal, "/" and signature (stripped; '' when none)."""
        return completion.strip()[self.length + 1 + TAIL:].strip()

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"


class SignedSFT(_Problems, LMCorpus):
    """Actor (and, with `refiner`, judge and fix) documents of the signed reversal task (module docstring).

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
        LMCorpus.__init__(self, seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        self._init_problems(n_train, n_val, length, alphabet, val_fraction, problem_seed)
        if isinstance(answers_per_prompt, bool) or not isinstance(answers_per_prompt, int) or answers_per_prompt < 1:
            raise InputError(f"data.answers_per_prompt={answers_per_prompt!r}: must be an integer >= 1")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
            raise InputError(f"data.noise={noise!r}: must be in [0, 1] (the share of actor answers corrupted)")
        self.answers_per_prompt, self.noise, self.refiner = answers_per_prompt, float(noise), bool(refiner)

    @property
    def fingerprint(self) -> str:
        return self._key("signed-sft", [self.answers_per_prompt, self.noise, self.refiner])

    def documents(self, split: str) -> list[str]:
        a = self.alphabet
        docs = []
        for p in self.prompts(split):
            if split != "train":
                docs.append(p + right_answer(p, "val", a))
                continue
            for k in range(self.answers_per_prompt):
                y = right_answer(p, str(k), a)
                noisy = stable_unit(f"noise:{self.problem_seed}:{p}:{k}") < self.noise
                docs.append(p + (corrupt(p, y, a, f"noise{k}") if noisy else y))
            if self.refiner:
                y = right_answer(p, "refiner", a)
                wrong = corrupt(p, y, a, "judge")
                bad = corrupt(p, y, a, "fix", changes=1 + _hash(f"changes:{p}") % 2)
                docs += [judge_prompt(p, y) + YES, judge_prompt(p, wrong) + NO, fix_prompt(p, bad) + y]
        return docs

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in self._splits()}


class SignedPrompts(_Problems, PromptData):
    """The signed reversal prompts as `prompts` batches; default reward `correct` = verify (module docstring).

    n_train, n_val, length, alphabet, val_fraction, problem_seed: as SignedSFT (use the same values).
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
        return self._key("signed-prompts")

    def _rows(self) -> dict[str, list[dict]]:
        if self._cached is None:
            self._cached = {s: [{"prompt": p} for p in ps] for s, ps in self._splits().items()}
        return self._cached

    def default_rewards(self):
        return {"correct": (follows, 1.0)}


def follows(prompts, completions, **columns) -> list[float]:
    """Reward function: 1.0 where the completion follows its prompt's instruction (verify), else 0.0."""
    return [float(verify(p, c)) for p, c in zip(prompts, completions)]
