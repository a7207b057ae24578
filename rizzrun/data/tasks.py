"""Built-in verifiable string tasks, generated on the fly: sort, reverse, count.

Formats (one line, no spaces but the one after "count", so every byte tokenizer reads them as
is; the answer follows "=" directly and an SFT model ends it with EOS):

    task     prompt               answer    rule
    sort     "sort:dbca="         "abcd"    the characters in code-point order (Python's sorted)
    reverse  "rev:abcd="          "dcba"    the string backwards
    count    "count a:abaca="     "3"       how often the character before ":" occurs (decimal)

The string has `length` characters of `alphabet` (drawn with repetition; a character of the
alphabet is printable, not whitespace, ':' or '='); count's character is one of the alphabet too,
so 0 is a possible answer.

Problems: candidate k is read from sha256("task:<task>:<problem_seed>:<length>:<alphabet>:<k>:<i>")
(i = 0, 1, ... for each 8 characters, 4 bytes a character; count's first character is the one
counted), so a problem set is a pure function of (task, problem_seed,
length, alphabet, sizes). A problem is held out iff stable_unit(its prompt) < val_fraction: the rule
depends on nothing but the problem, so every data option built with one val_fraction (TaskSFT,
TaskPrompts) agrees on what is held out. A problem set takes the first n_train distinct training
candidates and the first n_val distinct held-out ones in k order (InputError when the space holds
fewer).

Answers: `verify(prompt, completion)` is True iff the completion, stripped of surrounding
whitespace, is the answer (`solve(prompt)`); TaskPrompts's default reward `correct`
(rizzrun.rewards.verifiable.exact_match on the `answer` column) agrees with it, and the partial
credit rizzrun.rewards.tasks.char_accuracy (the fraction of correct characters) is 1.0 exactly
when it holds.

Components:
- TaskSFT (`data=task_sft`): an `lm` corpus whose documents are prompt + answer ("rev:abcd=dcba";
  training problems in train, held-out ones in val), joined by EOS when packed: a model trained on
  it answers EOS + prompt and stops with EOS, as the runner's prompts begin. `noise`: the share of
  training documents whose answer is corrupted (noisy demonstrations, as ReST's tiny setup,
  arXiv 2308.08998): exactly round(noise * n_train) of them, the ones with the smallest
  stable_unit("noise:<problem_seed>:<prompt>"); a corrupted answer has one character replaced by
  another of the alphabet (sort, reverse; position and character from sha256 of the prompt) or is
  off by one (count: +1, or -1 when above 0 and the hash says so). Validation is never corrupted.
- TaskPrompts (`data=task_prompts`): the prompts with their answers (column `answer`, a str) as
  `prompts` batches for on-policy objectives (GRPO, ReST), same problems and hold-out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from functools import lru_cache
from typing import Literal

from rizzrun.data.lm import LMCorpus, stable_unit
from rizzrun.data.prompts import PromptData
from rizzrun.data.tasks_spec import TASKS, alphabet_problem, space_size
from rizzrun.errors import InputError

__all__ = ["TASKS", "TaskPrompts", "TaskSFT", "corrupt", "generate_problems", "is_held_out", "parse", "prompt_of",
           "solve", "task_of", "verify"]

# Bump when the generator changes for the same options.
GENERATOR_VERSION = 1
_TEXT = r"([^\s:=]+)"
_PROMPT = {
    "sort": re.compile(r"^\s*sort:" + _TEXT + r"=\s*$"),
    "reverse": re.compile(r"^\s*rev:" + _TEXT + r"=\s*$"),
    "count": re.compile(r"^\s*count ([^\s:=]):" + _TEXT + r"=\s*$"),
}
EXAMPLE = {"sort": "sort:dbca=", "reverse": "rev:abcd=", "count": "count a:abaca="}
_EXACT_LIMIT = 1_000_000  # problem spaces up to this size are counted exactly before drawing
_DRAW_LIMIT = 1000  # draws per wanted problem before a huge space with a tiny val_fraction gives up


def prompt_of(task: str, text: str, char: str | None = None) -> str:
    """The prompt of a problem: "sort:<text>=", "rev:<text>=" or "count <char>:<text>="."""
    if task == "count":
        return f"count {char}:{text}="
    return {"sort": "sort:", "reverse": "rev:"}[task] + text + "="


def parse(prompt: str) -> tuple[str, str, str | None]:
    """(task, text, char or None) of a task prompt; ValueError for any other text."""
    if isinstance(prompt, str):
        for task, pattern in _PROMPT.items():
            m = pattern.match(prompt)
            if m:
                return (task, m.group(2), m.group(1)) if task == "count" else (task, m.group(1), None)
    raise ValueError(f"{prompt!r} is not a task prompt like {' / '.join(map(repr, EXAMPLE.values()))}")


def task_of(prompt: str) -> str:
    return parse(prompt)[0]


def _answer(task: str, text: str, char: str | None) -> str:
    if task == "sort":
        return "".join(sorted(text))
    if task == "reverse":
        return text[::-1]
    return str(text.count(char))


def solve(prompt: str) -> str:
    """The answer of a task prompt (module docstring); ValueError for any other text."""
    return _answer(*parse(prompt))


def verify(prompt: str, completion: str) -> bool:
    """Whether `completion`, stripped of surrounding whitespace, is the answer of `prompt` (any task)."""
    return completion.strip() == solve(prompt)


def is_held_out(prompt: str, val_fraction: float) -> bool:
    """Whether a problem belongs to validation: stable_unit(prompt) < val_fraction."""
    return stable_unit(prompt) < val_fraction


def _chars(key: str, alphabet: str, n: int) -> str:
    """n characters of `alphabet`, each from 4 bytes of sha256(key:i) (8 per digest)."""
    out = []
    for i in range((n + 7) // 8):
        digest = hashlib.sha256(f"{key}:{i}".encode()).digest()
        out += [alphabet[int.from_bytes(digest[4 * j:4 * j + 4], "big") % len(alphabet)] for j in range(8)]
    return "".join(out[:n])


def candidate(task: str, problem_seed: int, length: int, alphabet: str, k: int) -> tuple[str, str]:
    """(prompt, answer) of candidate k (module docstring)."""
    drawn = _chars(f"task:{task}:{problem_seed}:{length}:{alphabet}:{k}", alphabet, length + (task == "count"))
    text, char = (drawn[1:], drawn[0]) if task == "count" else (drawn, None)
    return prompt_of(task, text, char), _answer(task, text, char)


@lru_cache(maxsize=32)
def _capacity(task: str, alphabet: str, length: int, val_fraction: float) -> tuple[int, int] | None:
    """(training problems, held-out problems) in the whole space, when small enough to count."""
    size = space_size(task, alphabet, length)
    if size > _EXACT_LIMIT:
        return None
    held = 0
    for chars in itertools.product(alphabet, repeat=length + (task == "count")):
        drawn = "".join(chars)
        text, char = (drawn[1:], drawn[0]) if task == "count" else (drawn, None)
        held += is_held_out(prompt_of(task, text, char), val_fraction)
    return size - held, held


def generate_problems(task: str, n_train: int, n_val: int, length: int = 5, alphabet: str = "abcdefgh",
                      val_fraction: float = 0.1, problem_seed: int = 0) -> tuple[list[tuple[str, str]],
                                                                                 list[tuple[str, str]]]:
    """(training problems, held-out problems), each a list of (prompt, answer): the first n_train /
    n_val distinct candidates of each kind (module docstring). InputError when the space holds fewer."""
    _check_options(task, n_train, n_val, length, alphabet, val_fraction, problem_seed)
    size = space_size(task, alphabet, length)
    if n_train + n_val > size:
        raise InputError(f"data.n_train={n_train}: with data.n_val={n_val} needs {n_train + n_val} distinct problems; "
                         f"task {task!r} with {len(alphabet)} characters and length {length} has only {size}; lower "
                         f"them, or raise data.length or give data.alphabet more characters")
    capacity = _capacity(task, alphabet, length, float(val_fraction))
    if capacity is not None:
        for key, want, have, fix in (("n_train", n_train, capacity[0], "lower data.val_fraction"),
                                     ("n_val", n_val, capacity[1], "raise data.val_fraction")):
            if want > have:
                kind = "held out" if key == "n_val" else "left for training"
                raise InputError(f"data.{key}={want}: only {have} distinct {task!r} problems of length {length} are "
                                 f"{kind} with data.val_fraction={val_fraction}; lower data.{key}, raise data.length, "
                                 f"give data.alphabet more characters, or {fix}")
    train, val, seen = [], [], set()
    k, limit = 0, _DRAW_LIMIT * (n_train + n_val) + 10_000
    while len(train) < n_train or len(val) < n_val:
        if k >= limit:  # a space too big to count (or nearly exhausted) with too few problems of a kind
            raise InputError(f"data.val_fraction={val_fraction}: drew {k} problems and found too few distinct ones "
                             f"for data.n_train={n_train}, data.n_val={n_val}; lower them or change "
                             f"data.val_fraction")
        prompt, answer = candidate(task, problem_seed, length, alphabet, k)
        k += 1
        if prompt in seen:
            continue
        seen.add(prompt)
        target = val if is_held_out(prompt, val_fraction) else train
        if len(target) < (n_val if target is val else n_train):
            target.append((prompt, answer))
    return train, val


def corrupt(prompt: str, answer: str, alphabet: str, problem_seed: int = 0) -> str:
    """A wrong answer close to `answer`, fixed by (problem_seed, prompt) (module docstring)."""
    h = int.from_bytes(hashlib.sha256(f"corrupt:{problem_seed}:{prompt}".encode()).digest()[:16], "big")
    if task_of(prompt) == "count":
        n = int(answer)
        return str(n - 1 if n > 0 and h % 2 else n + 1)
    pos = h % len(answer)
    options = [c for c in alphabet if c != answer[pos]]
    return answer[:pos] + options[(h >> 32) % len(options)] + answer[pos + 1:]


def _check_options(task, n_train, n_val, length, alphabet, val_fraction, problem_seed) -> None:
    if task not in TASKS:
        raise InputError(f"data.task={task!r}: allowed: {', '.join(TASKS)}")
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("length", length, 1),
                            ("problem_seed", problem_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")
    why = alphabet_problem(alphabet)
    if why:
        raise InputError(f"data.alphabet={alphabet!r}: {why}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise InputError(f"data.val_fraction={val_fraction!r}: must be in (0, 1) (held-out problems are "
                         f"those with stable_unit(prompt) < val_fraction)")


class _TaskProblems:
    """What TaskSFT and TaskPrompts share: the options, the problem set, verify."""

    def _init_problems(self, task, n_train, n_val, length, alphabet, val_fraction, problem_seed) -> None:
        _check_options(task, n_train, n_val, length, alphabet, val_fraction, problem_seed)
        self.task, self.n_train, self.n_val, self.length = task, n_train, n_val, length
        self.alphabet, self.val_fraction, self.problem_seed = alphabet, float(val_fraction), problem_seed
        self._problems = None

    def _drawn(self) -> dict[str, list[tuple[str, str]]]:
        if self._problems is None:
            train, val = generate_problems(self.task, self.n_train, self.n_val, self.length, self.alphabet,
                                           self.val_fraction, self.problem_seed)
            self._problems = {"train": train, **({"val": val} if self.n_val else {})}
        return self._problems

    def _key(self, kind: str, more: list = ()) -> str:
        key = [kind, GENERATOR_VERSION, self.task, self.n_train, self.n_val, self.length, self.alphabet,
               self.val_fraction, self.problem_seed, *more]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def problems(self, split: str) -> list[tuple[str, str]]:
        """(prompt, answer) of every problem of `split`, in row order: ("rev:abcd=", "dcba")."""
        return list(self._drawn()[split])

    def prompts(self, split: str) -> list[str]:
        return [p for p, _ in self.problems(split)]

    def verify(self, prompt: str, completion: str) -> bool:
        """Whether `completion` (surrounding whitespace stripped) is the answer of `prompt`, a prompt
        of this data's task; ValueError for a prompt of another task or none."""
        try:
            task = task_of(prompt)
        except ValueError:
            task = None
        if task != self.task:
            got = f"a {task!r} prompt" if task else "not a task prompt"
            raise ValueError(f"verify: {prompt!r} is {got}; this data's task is {self.task!r} (prompts like "
                             f"{EXAMPLE[self.task]!r})")
        return verify(prompt, completion)

    def extra_text(self, completion: str) -> str:
        """What follows the answer's place in a completion (leading whitespace skipped): after the
        first `length` characters (sort, reverse) or the leading digits (count); surrounding
        whitespace stripped ('' when none). Text a correct completion would not have."""
        text = completion.lstrip()
        cut = len(re.match(r"\d*", text).group(0)) if self.task == "count" else self.length
        return text[cut:].strip()

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"


class TaskSFT(_TaskProblems, LMCorpus):
    """Task problems prompt + answer ("rev:abcd=dcba") as an `lm` corpus (module docstring).

    task: "sort", "reverse" or "count". n_train, n_val: problems in train / validation (n_val=0:
        no validation split). length: characters of a problem's string. alphabet: the characters
        strings are drawn from. val_fraction: the share of the problem space held out (use the
        same value in TaskPrompts). problem_seed: which problems are drawn.
    seq_len, batch_size, seed (block order), packing, cache_dir: as every lm corpus.
    noise: the share of training documents with a corrupted answer (module docstring; 0: none).
    """

    batch_kind = "lm"

    def __init__(
        self,
        task: Literal["sort", "reverse", "count"] = "sort",
        n_train: int = 5000,
        n_val: int = 200,
        length: int = 5,
        alphabet: str = "abcdefgh",
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        seq_len: int = 64,
        batch_size: int = 16,
        seed: int = 0,
        packing: Literal["concat", "document"] = "concat",
        cache_dir: str | None = None,
        noise: float = 0.0,
    ):
        LMCorpus.__init__(self, seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        self._init_problems(task, n_train, n_val, length, alphabet, val_fraction, problem_seed)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
            raise InputError(f"data.noise={noise!r}: must be in [0, 1] (the share of training answers corrupted)")
        if noise > 0 and task != "count" and len(alphabet) < 2:
            raise InputError(f"data.noise={noise}: corrupting an answer needs an alphabet of 2 or more characters "
                             f"(data.alphabet={alphabet!r}); set data.noise=0 or give data.alphabet more characters")
        self.noise = float(noise)

    @property
    def fingerprint(self) -> str:
        return self._key("task-sft", [self.noise] if self.noise else [])

    def noisy(self) -> set[int]:
        """Indices of the training problems whose document carries a corrupted answer (module docstring)."""
        train = self.prompts("train")
        n = round(self.noise * len(train))
        units = [stable_unit(f"noise:{self.problem_seed}:{p}") for p in train]
        return set(sorted(range(len(train)), key=units.__getitem__)[:n])

    def documents(self, split: str) -> list[str]:
        """prompt + answer of every problem of `split`; in train, a corrupted answer for `noisy()`."""
        wrong = self.noisy() if split == "train" else set()
        return [p + (corrupt(p, answer, self.alphabet, self.problem_seed) if k in wrong else answer)
                for k, (p, answer) in enumerate(self.problems(split))]

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in self._drawn()}


class TaskPrompts(_TaskProblems, PromptData):
    """Task prompts with their answers (column `answer`, a str) as `prompts` batches, for on-policy
    training: the same problems and hold-out as TaskSFT with the same options. Its own reward
    (rewards=null): `correct`, 1.0 when the stripped completion is the answer
    (rizzrun.rewards.verifiable.exact_match, as `verify`). Partial credit for sort / reverse:
    rewards={chars: {_target_: rizzrun.rewards.tasks.char_accuracy, _partial_: true}}.

    task, n_train, n_val, length, alphabet, val_fraction, problem_seed: as TaskSFT.
    batch_size, seed, max_prompt_length, cache_dir: rizzrun.data.prompts.PromptData.
    `prompts(split)` needs no setup (the problems' prompts, which are the prompt texts).
    """

    batch_kind = "prompts"

    def __init__(
        self,
        task: Literal["sort", "reverse", "count"] = "sort",
        n_train: int = 5000,
        n_val: int = 200,
        length: int = 5,
        alphabet: str = "abcdefgh",
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        batch_size: int = 16,
        seed: int = 0,
        max_prompt_length: int | None = None,
        cache_dir: str | None = None,
    ):
        PromptData.__init__(self, batch_size=batch_size, seed=seed, cache_dir=cache_dir,
                            max_prompt_length=max_prompt_length)
        self._init_problems(task, n_train, n_val, length, alphabet, val_fraction, problem_seed)
        self._cached = None

    @property
    def fingerprint(self) -> str:
        return self._key("task-prompts")

    def _rows(self) -> dict[str, list[dict]]:
        if self._cached is None:
            self._cached = {s: [{"prompt": p, "answer": a} for p, a in problems]
                            for s, problems in self._drawn().items()}
        return self._cached

    def default_rewards(self):
        from rizzrun.rewards.verifiable import exact_match

        return {"correct": (exact_match, 1.0)}
