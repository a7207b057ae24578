"""A family of generated reasoning tasks with short textual reasoning paths under a few general
guidelines: the seed SFT of ReGenesis (Peng et al., arXiv 2410.02108) vs STaR (arXiv 2203.14465)
at tiny scale (rizzrun.selfplay.regenesis runs the loops).

Task types (2-digit numbers; 4-letter strings of a..h):

    task  problem       answer   in-domain / held-out (the loops train on IN_DOMAIN types only)
    add   "add 37 45"   "82"     in-domain
    rev   "rev dbca"    "acbd"   in-domain
    sub   "sub 82 45"   "37"     held-out (a > b)
    sort  "sort dbca"   "abcd"   held-out

Every type has three path styles; style i is what general guideline i of GUIDELINES asks for
(rizzrun's pool, our choice: the paper's exact pool of seed reasoning modules is unconfirmed;
these three are its "step by step", "work from the most important part", "decompose" kinds):

    general guideline     add / sub            rev              sort
    one step at a time    ones then tens       last to first    smallest first
    biggest part first    tens then ones       swap the ends    count letters
    split in two          split 2nd number     reverse halves   sort halves

A path ends with "#" + the answer (`extract_answer` reads it), e.g. for "add 37 45":
style 0 "7+5=12,3+4+1=8#82", style 1 "30+40=70,7+5=12,70+12=82#82", style 2 "37+40=77,77+5=82#82".

Formats (one line; the model's completion follows the prompt and ends with EOS):

    direct      "add 37 45 P:"                   -> path       (STaR's sampling, evaluation, the loops' SFT)
    direct+hint "add 37 45|H:82 P:"              -> path       (STaR's rationalization)
    adaption    "G:split in two|add 37 45 T:"    -> task guideline, "split 2nd number"
    structure   "T:split 2nd number|add 37 45 S:" -> structure, "37+40,+5"
    path        "S:37+40,+5|add 37 45 P:"        -> path
    path+hint   "S:37+40,+5|add 37 45|H:82 P:"   -> path       (ReGenesis's regeneration with the answer)

Problems: candidate k of a type is read from sha256("reasoning:<task>:<problem_seed>:<k>"); a
problem is held out (val) iff stable_unit(its problem text) < val_fraction, so every option built
with one val_fraction agrees on what is held out.

ReasoningSFT (`data=reasoning_sft`): the seed corpus. Per training problem of every type in
`tasks`, one direct document (style 0 with probability `default_style_share`, else style 1 or 2:
a model asked directly has a default way of reasoning, the premise of the paper) and, with one
guideline drawn uniformly, one document of each stage (adaption, structure, path) and one hint
document of each hinted kind. Validation: the direct documents of the held-out problems.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from rizzrun.data.lm import LMCorpus, stable_unit
from rizzrun.errors import InputError

__all__ = ["ADAPTED", "GUIDELINES", "HELD_OUT", "IN_DOMAIN", "TASKS", "ReasoningSFT", "adaption_prompt",
           "direct_prompt", "extract_answer", "generate_problems", "path_of", "path_prompt", "seed_documents",
           "solve", "structure_of", "structure_prompt", "style_of", "task_of"]

TASKS = ("add", "rev", "sub", "sort")
IN_DOMAIN = ("add", "rev")
HELD_OUT = ("sub", "sort")
GUIDELINES = ("one step at a time", "biggest part first", "split in two")
ADAPTED = {
    "add": ("ones then tens", "tens then ones", "split 2nd number"),
    "sub": ("ones then tens", "tens then ones", "split 2nd number"),
    "rev": ("last to first", "swap the ends", "reverse halves"),
    "sort": ("smallest first", "count letters", "sort halves"),
}
LETTERS = "abcdefgh"
GENERATOR_VERSION = 1
_PROBLEM = re.compile(r"^(add|sub) (\d\d) (\d\d)$|^(rev|sort) ([a-h]{4})$")


# --- problems --------------------------------------------------------------------------------

def _parse(problem: str):
    m = _PROBLEM.match(problem.strip())
    if not m:
        raise ValueError(f"{problem!r} is not a reasoning problem like 'add 37 45', 'sub 82 45', 'rev dbca', "
                         "'sort dbca'")
    if m.group(1):
        return m.group(1), int(m.group(2)), int(m.group(3))
    return m.group(4), m.group(5), None


def task_of(problem: str) -> str:
    return _parse(problem)[0]


def solve(problem: str) -> str:
    """The answer of a problem ("add 37 45" -> "82"); ValueError for other text."""
    task, x, y = _parse(problem)
    return {"add": lambda: str(x + y), "sub": lambda: str(x - y), "rev": lambda: x[::-1],
            "sort": lambda: "".join(sorted(x))}[task]()


def _candidate(task: str, problem_seed: int, k: int) -> str | None:
    digest = hashlib.sha256(f"reasoning:{task}:{problem_seed}:{k}".encode()).digest()
    if task in ("add", "sub"):
        a, b = 10 + digest[0] % 90, 10 + digest[1] % 90
        if task == "sub":
            if a == b:
                return None
            a, b = max(a, b), min(a, b)
        return f"{task} {a} {b}"
    return f"{task} " + "".join(LETTERS[d % len(LETTERS)] for d in digest[2:6])


def generate_problems(task: str, n_train: int, n_val: int, val_fraction: float = 0.1,
                      problem_seed: int = 0) -> tuple[list[str], list[str]]:
    """(training problems, held-out problems) of one type: the first n_train / n_val distinct
    candidates of each kind in k order (module docstring); InputError when the space is too small."""
    if task not in TASKS:
        raise InputError(f"data.tasks: {task!r} is not a task; allowed: {', '.join(TASKS)}")
    train, val, seen, k = [], [], set(), 0
    while len(train) < n_train or len(val) < n_val:
        if k > 100 * (n_train + n_val) + 10_000:
            raise InputError(f"data.n_train={n_train}, data.n_val={n_val}: too many distinct {task!r} problems "
                             "asked for; lower them")
        p = _candidate(task, problem_seed, k)
        k += 1
        if p is None or p in seen:
            continue
        seen.add(p)
        target, want = (val, n_val) if stable_unit(p) < val_fraction else (train, n_train)
        if len(target) < want:
            target.append(p)
    return train, val


# --- structures and paths --------------------------------------------------------------------

def structure_of(problem: str, style: int) -> str:
    """The outline guideline `style` gives the problem (module docstring)."""
    task, x, y = _parse(problem)
    if task in ("add", "sub"):
        op = "+" if task == "add" else "-"
        (a1, a0), (b1, b0) = divmod(x, 10), divmod(y, 10)
        return (f"{a0}{op}{b0},{a1}{op}{b1}{op}c", f"{a1 * 10}{op}{b1 * 10},{a0}{op}{b0},sum",
                f"{x}{op}{b1 * 10},{op}{b0}")[style]
    s = x
    if task == "rev":
        return (f"{s[3]}..{s[0]}", f"{s[0]}{s[3]},{s[1]}{s[2]}", f"{s[:2]}|{s[2:]}")[style]
    return ("min x4", "count a-h", f"{s[:2]}|{s[2:]}")[style]


def path_of(problem: str, style: int) -> str:
    """The reasoning path of `style`, ending with "#" + the answer (module docstring)."""
    task, x, y = _parse(problem)
    answer = solve(problem)
    if task == "add":
        (a1, a0), (b1, b0) = divmod(x, 10), divmod(y, 10)
        c = (a0 + b0) // 10
        body = (f"{a0}+{b0}={a0 + b0},{a1}+{b1}+{c}={a1 + b1 + c}",
                f"{a1 * 10}+{b1 * 10}={10 * (a1 + b1)},{a0}+{b0}={a0 + b0},{10 * (a1 + b1)}+{a0 + b0}={x + y}",
                f"{x}+{b1 * 10}={x + 10 * b1},{x + 10 * b1}+{b0}={x + y}")[style]
    elif task == "sub":
        (a1, a0), (b1, b0) = divmod(x, 10), divmod(y, 10)
        c = int(a0 < b0)
        body = (f"{a0 + 10 * c}-{b0}={a0 + 10 * c - b0},{a1}-{b1}-{c}={a1 - b1 - c}",
                f"{a1 * 10}-{b1 * 10}={10 * (a1 - b1)},{a0}-{b0}={a0 - b0},"
                f"{10 * (a1 - b1)}{a0 - b0:+d}={x - y}",
                f"{x}-{b1 * 10}={x - 10 * b1},{x - 10 * b1}-{b0}={x - y}")[style]
    elif task == "rev":
        s = x
        body = (",".join(s[::-1]), f"{s[0]}{s[3]}>{s[3]}{s[0]},{s[1]}{s[2]}>{s[2]}{s[1]}",
                f"{s[:2]}|{s[2:]}>{s[2:][::-1]}|{s[:2][::-1]}")[style]
    else:
        s = x
        counts = "".join(f"{ch}{s.count(ch)}" for ch in sorted(set(s)))
        body = (",".join(sorted(s)), counts,
                f"{s[:2]}>{''.join(sorted(s[:2]))},{s[2:]}>{''.join(sorted(s[2:]))},merge")[style]
    return f"{body}#{answer}"


def style_of(problem: str, path: str) -> int | None:
    """Which style's path `path` is, exactly (None: none of them)."""
    for style in range(len(GUIDELINES)):
        if path.strip() == path_of(problem, style):
            return style
    return None


def extract_answer(completion: str) -> str | None:
    """The answer a path gives: what follows its last "#", surrounding whitespace stripped
    (None when there is no "#")."""
    if "#" not in completion:
        return None
    return completion.rsplit("#", 1)[1].strip()


# --- prompts ---------------------------------------------------------------------------------

def _hint(hint: str | None) -> str:
    return "" if hint is None else f"|H:{hint}"


def direct_prompt(problem: str, hint: str | None = None) -> str:
    return f"{problem}{_hint(hint)} P:"


def adaption_prompt(guideline: str, problem: str) -> str:
    return f"G:{guideline}|{problem} T:"


def structure_prompt(task_guideline: str, problem: str) -> str:
    return f"T:{task_guideline}|{problem} S:"


def path_prompt(structure: str, problem: str, hint: str | None = None) -> str:
    return f"S:{structure}|{problem}{_hint(hint)} P:"


def seed_documents(problem: str, unit: float, guideline_unit: float, default_style_share: float) -> list[str]:
    """The seed documents of one training problem (module docstring): `unit` in [0, 1) picks the
    direct document's style, `guideline_unit` the guideline of the stage documents."""
    task, answer = task_of(problem), solve(problem)
    rest = (1 - default_style_share) / 2
    direct = 0 if unit < default_style_share else (1 if unit < default_style_share + rest else 2)
    g = min(int(guideline_unit * len(GUIDELINES)), len(GUIDELINES) - 1)
    structure, path = structure_of(problem, g), path_of(problem, g)
    return [direct_prompt(problem) + path_of(problem, direct),
            direct_prompt(problem, answer) + path_of(problem, direct),
            adaption_prompt(GUIDELINES[g], problem) + ADAPTED[task][g],
            structure_prompt(ADAPTED[task][g], problem) + structure,
            path_prompt(structure, problem) + path,
            path_prompt(structure, problem, answer) + path]


class ReasoningSFT(LMCorpus):
    """The seed reasoning corpus (module docstring): documents prompt + completion, joined by EOS.

    tasks: the task types of the seed data (default all four). n_train, n_val: problems per type in
    train / validation. val_fraction, problem_seed: which problems, which are held out.
    default_style_share: the share of direct documents in style 0.
    seq_len, batch_size, seed, packing, cache_dir: as every lm corpus.
    `prompts(split)` / `verify(prompt, completion)`: the direct prompts of the split and the check
    of a completion's extracted answer, so `eval.at_end` reports greedy accuracy.
    """

    batch_kind = "lm"

    def __init__(
        self,
        tasks: list[str] | tuple[str, ...] = TASKS,
        n_train: int = 1000,
        n_val: int = 50,
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        default_style_share: float = 0.8,
        seq_len: int = 64,
        batch_size: int = 16,
        seed: int = 0,
        packing: Literal["concat", "document"] = "concat",
        cache_dir: str | None = None,
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        tasks = list(tasks)
        bad = [t for t in tasks if t not in TASKS]
        if not tasks or bad:
            raise InputError(f"data.tasks={tasks}: give one or more of {', '.join(TASKS)}")
        for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("problem_seed", problem_seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")
        if not 0 < val_fraction < 1:
            raise InputError(f"data.val_fraction={val_fraction!r}: must be in (0, 1)")
        if not 0 <= default_style_share <= 1:
            raise InputError(f"data.default_style_share={default_style_share!r}: must be in [0, 1]")
        self.tasks, self.n_train, self.n_val = tasks, n_train, n_val
        self.val_fraction, self.problem_seed = float(val_fraction), problem_seed
        self.default_style_share = float(default_style_share)
        self._problems = None

    def problems(self, split: str) -> list[str]:
        if self._problems is None:
            drawn = {t: generate_problems(t, self.n_train, self.n_val, self.val_fraction, self.problem_seed)
                     for t in self.tasks}
            self._problems = {"train": [p for t in self.tasks for p in drawn[t][0]],
                              **({"val": [p for t in self.tasks for p in drawn[t][1]]} if self.n_val else {})}
        return list(self._problems[split])

    @property
    def fingerprint(self) -> str:
        key = ["reasoning-sft", GENERATOR_VERSION, self.tasks, self.n_train, self.n_val, self.val_fraction,
               self.problem_seed, self.default_style_share]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def documents(self, split: str) -> list[str]:
        if split != "train":
            return [direct_prompt(p) + path_of(p, 0) for p in self.problems(split)]
        return [d for p in self.problems("train")
                for d in seed_documents(p, stable_unit(f"style:{self.problem_seed}:{p}"),
                                        stable_unit(f"guideline:{self.problem_seed}:{p}"), self.default_style_share)]

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in (["train", "val"] if self.n_val else ["train"])}

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"

    def prompts(self, split: str) -> list[str]:
        return [direct_prompt(p) for p in self.problems(split)]

    def verify(self, prompt: str, completion: str) -> bool:
        """Whether the completion's extracted answer is the answer of the direct prompt's problem."""
        problem = prompt.strip().removesuffix("P:").strip()
        return extract_answer(completion) == solve(problem)

    def extra_text(self, completion: str) -> str:
        return ""
