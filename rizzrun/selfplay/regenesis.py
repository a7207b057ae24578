"""ReGenesis (Peng et al., arXiv 2410.02108) and STaR (Zelikman et al., arXiv 2203.14465): the
self-synthesis of reasoning paths that the loops fine-tune on, as plain functions of a `complete`
callable (list of prompt texts -> list of completion texts, one each; `model_completer` makes one
from a model, a decoder and a tokenizer).

ReGenesis, per problem q with answer a, for each general guideline g of the pool
(rizzrun.data.reasoning.GUIDELINES):
    1. adaption:  t = complete("G:<g>|<q> T:")          the task-specific guideline
    2. structure: s = complete("T:<t>|<q> S:")          an outline of steps
    3. path:      p = complete("S:<s>|<q> P:")          a reasoning path ending "#<answer>"
    4. filter: keep p iff extract_answer(p) == a. A problem with no kept path is regenerated once
       with the answer as a hint, p' = complete("S:<s>|<q>|H:<a> P:") for each of its structures,
       keeping the p' whose answer is a (consistent with the hint).
STaR, per problem: p = complete("<q> P:") sampled len(pool) times, keep iff right; a problem with
none kept: len(pool) more with the hint ("<q>|H:<a> P:"), keep the right ones (rationalization).
Both spend len(pool) path samples per problem, and len(pool) more on problems with none right.

Every kept path trains as the direct document "<q> P:" + p (the hint never appears in training),
written by `write_rollouts` as the rows of a sample run (rizzrun.runner.sample_job's line format,
reward 1.0 = right) that `data=rollouts` (min_reward=0.5) reads.

`distinct_n(paths, n)`: distinct n-grams / all n-grams over the paths' tokens (digits runs, letter
runs, single symbols; Li et al., arXiv 1510.03055), the diversity measure of the kept paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from rizzrun.data.reasoning import (ADAPTED, GUIDELINES, adaption_prompt, direct_prompt, extract_answer, path_prompt,
                                    solve, structure_of, structure_prompt, style_of, task_of)

__all__ = ["distinct_n", "model_completer", "path_tokens", "regenesis", "star", "stage_stats", "write_rollouts"]

Complete = Callable[[list[str]], list[str]]


def path_tokens(path: str) -> list[str]:
    """"37+40=77#77" -> ["37", "+", "40", "=", "77", "#", "77"]."""
    return re.findall(r"\d+|[a-z]+|\S", path)


def distinct_n(paths: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the tokens of every path (0.0 when there is none)."""
    grams = [tuple(t[i:i + n]) for t in map(path_tokens, paths) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _right(problem: str, completion: str) -> bool:
    return extract_answer(completion) == solve(problem)


def regenesis(problems: Sequence[str], complete: Complete, guidelines: Sequence[str] = GUIDELINES,
              hint: bool = True) -> list[dict]:
    """One record per (problem, guideline) path and per hinted regeneration (module docstring):
    {"problem", "guideline" (index), "stage": "path" | "hint", "task_guideline", "structure",
    "completion", "answer", "right", "kept"}. Stages run batched over all problems."""
    pairs = [(q, g) for q in problems for g in range(len(guidelines))]
    adapted = complete([adaption_prompt(guidelines[g], q) for q, g in pairs])
    structures = complete([structure_prompt(t.strip(), q) for (q, _), t in zip(pairs, adapted)])
    paths = complete([path_prompt(s.strip(), q) for (q, _), s in zip(pairs, structures)])
    records = [{"problem": q, "guideline": g, "stage": "path", "task_guideline": t.strip(), "structure": s.strip(),
                "completion": p.strip(), "answer": solve(q), "right": _right(q, p), "kept": _right(q, p)}
               for (q, g), t, s, p in zip(pairs, adapted, structures, paths)]
    if hint:
        solved = {r["problem"] for r in records if r["right"]}
        retry = [r for r in records if r["problem"] not in solved]
        again = complete([path_prompt(r["structure"], r["problem"], r["answer"]) for r in retry])
        records += [{**r, "stage": "hint", "completion": p.strip(), "right": _right(r["problem"], p),
                     "kept": _right(r["problem"], p)} for r, p in zip(retry, again)]
    return records


def star(problems: Sequence[str], complete: Complete, samples: int = len(GUIDELINES), hint: bool = True) -> list[dict]:
    """STaR's records (module docstring), in regenesis's record shape (guideline = sample index,
    task_guideline and structure empty)."""
    pairs = [(q, k) for q in problems for k in range(samples)]
    paths = complete([direct_prompt(q) for q, _ in pairs])
    records = [{"problem": q, "guideline": k, "stage": "path", "task_guideline": "", "structure": "",
                "completion": p.strip(), "answer": solve(q), "right": _right(q, p), "kept": _right(q, p)}
               for (q, k), p in zip(pairs, paths)]
    if hint:
        solved = {r["problem"] for r in records if r["right"]}
        retry = [r for r in records if r["problem"] not in solved]
        again = complete([direct_prompt(r["problem"], r["answer"]) for r in retry])
        records += [{**r, "stage": "hint", "completion": p.strip(), "right": _right(r["problem"], p),
                     "kept": _right(r["problem"], p)} for r, p in zip(retry, again)]
    return records


def stage_stats(records: Sequence[dict]) -> dict:
    """The loop's mechanics: how often each stage did what the guideline asks and what was kept.

    adaption_follows: task guideline == the canonical adaption of its general guideline (ADAPTED);
    structure_follows: structure == the canonical outline of the task guideline it was given;
    path_right / hint_right: right answers among first-pass / hinted paths; path_style_follows:
    first-pass paths whose exact style is their guideline's; problems_solved: problems with a right
    first-pass path; problems_kept: with any kept path; kept: kept paths (distinct per problem),
    kept_per_problem, distinct_2 / distinct_3 of the kept paths (pooled: a larger pool scores lower
    for the same variety), styles: distinct exact styles kept, styles_per_problem: the mean number of
    distinct exact styles among the kept paths of a problem with any (a size-free diversity);
    kept_exact: the share of kept paths that are exactly one style's path (every step right, not
    only the answer)."""
    first = [r for r in records if r["stage"] == "path"]
    hinted = [r for r in records if r["stage"] == "hint"]
    problems = {r["problem"] for r in records}
    kept = sorted({(r["problem"], r["completion"]) for r in records if r["kept"]})
    chained = [r for r in first if r["task_guideline"] or r["structure"]]

    def share(rows, test):
        return sum(map(test, rows)) / len(rows) if rows else float("nan")

    def outline_follows(r):
        task = task_of(r["problem"])
        return r["task_guideline"] in ADAPTED[task] and \
            r["structure"] == structure_of(r["problem"], ADAPTED[task].index(r["task_guideline"]))

    return {
        "problems": len(problems),
        "adaption_follows": share(chained, lambda r: r["task_guideline"] == ADAPTED[task_of(r["problem"])][r["guideline"]]),
        "structure_follows": share(chained, outline_follows),
        "path_style_follows": share(chained, lambda r: style_of(r["problem"], r["completion"]) == r["guideline"]),
        "path_right": share(first, lambda r: r["right"]),
        "problems_solved": len({r["problem"] for r in first if r["right"]}) / max(len(problems), 1),
        "hinted": len(hinted),
        "hint_right": share(hinted, lambda r: r["right"]),
        "problems_kept": len({q for q, _ in kept}) / max(len(problems), 1),
        "kept": len(kept),
        "kept_per_problem": len(kept) / max(len(problems), 1),
        "distinct_2": distinct_n([p for _, p in kept], 2),
        "distinct_3": distinct_n([p for _, p in kept], 3),
        "styles": len({style_of(q, p) for q, p in kept} - {None}),
        "kept_exact": _mean([style_of(q, p) is not None for q, p in kept]),
        "styles_per_problem": _mean([len({style_of(q, p) for q, p in kept if q == k} - {None})
                                     for k in {q for q, _ in kept}]),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def write_rollouts(records: Sequence[dict], folder: str | Path, split: str = "train") -> Path:
    """The records as <folder>/rollouts/<split>.jsonl in a sample run's line format (one batch; row =
    the problem's index in first-seen order, sample = the record's index within its problem),
    prompt = the direct prompt, reward 1.0 when right: what `data=rollouts` reads."""
    path = Path(folder) / "rollouts" / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    count: dict[str, int] = {}
    lines = []
    for r in records:
        row = rows.setdefault(r["problem"], len(rows))
        sample = count[r["problem"]] = count.get(r["problem"], -1) + 1
        reward = 1.0 if r["right"] else 0.0
        lines.append({"batch": 0, "row": row, "sample": sample, "prompt": direct_prompt(r["problem"]),
                      "completion": r["completion"], "reward": reward, "rewards": {"correct": reward},
                      "truncated": False, "tokens": None, "answer": r["answer"], "stage": r["stage"],
                      "guideline": r["guideline"]})
    if lines:
        lines[-1]["end"] = True
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def model_completer(model, decoder, tokenizer, batch_size: int = 256) -> Complete:
    """`complete` from a model: each prompt as EOS + its bytes (as the runner's prompts begin), the
    decoder's continuation up to EOS decoded; a completion that never ends is returned as is."""
    import torch

    eos = tokenizer.eos_id

    @torch.no_grad()
    def complete(prompts: list[str]) -> list[str]:
        out = []
        for first in range(0, len(prompts), batch_size):
            chunk = [[eos, *tokenizer.encode(p)] for p in prompts[first:first + batch_size]]
            width = max(map(len, chunk))
            ids = decoder.generate(model, chunk, eos_token_id=eos, pad_token_id=tokenizer.pad_id)
            for row in ids[:, width:].tolist():
                row = row[:row.index(eos)] if eos in row else row
                out.append(tokenizer.decode([t for t in row if t != tokenizer.pad_id]))
        return out

    return complete


def synthesize(run_dir: str | Path, out_dir: str | Path, method: str, problems: Sequence[str], seed: int = 0,
               temperature: float = 1.0, max_new_tokens: int = 40, hint: bool = True, decoder=None,
               split: str = "train") -> dict:
    """Load the model of a run folder, synthesise paths of `problems` by `method` ("regenesis" or
    "star") with `decoder` (default: a Sample decoder, T = `temperature`, seeded by `seed`), and
    write into `out_dir`: rollouts/<split>.jsonl (`write_rollouts`), records.jsonl (every record) and
    stats.json (`stage_stats`; for a split other than train: records-<split>.jsonl, stats-<split>.json).
    Returns the stats."""
    import torch

    from rizzrun.decoders.sample import Sample
    from rizzrun.runner.generate import load_run

    if method not in ("regenesis", "star"):
        raise ValueError(f"method={method!r}: allowed: regenesis, star")
    torch.manual_seed(seed)
    _, tokenizer, model = load_run(Path(run_dir))
    if decoder is None:
        decoder = Sample(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    complete = model_completer(model, decoder, tokenizer)
    records = regenesis(problems, complete, hint=hint) if method == "regenesis" else star(problems, complete, hint=hint)
    out = Path(out_dir)
    write_rollouts(records, out, split)
    suffix = "" if split == "train" else f"-{split}"
    (out / f"records{suffix}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    stats = stage_stats(records)
    (out / f"stats{suffix}.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def evaluate(run_dir: str | Path, problems: Sequence[str], max_new_tokens: int = 40) -> dict:
    """Greedy direct answers of a run's model: {task: accuracy} over `problems`, plus "examples"
    (the first problem of each task with its completion)."""
    from rizzrun.decoders.greedy import Greedy
    from rizzrun.runner.generate import load_run

    _, tokenizer, model = load_run(Path(run_dir))
    complete = model_completer(model, Greedy(max_new_tokens=max_new_tokens), tokenizer)
    outs = complete([direct_prompt(q) for q in problems])
    by_task: dict[str, list[bool]] = {}
    examples = {}
    for q, p in zip(problems, outs):
        by_task.setdefault(task_of(q), []).append(_right(q, p))
        examples.setdefault(task_of(q), f"{direct_prompt(q)}{p}")
    return {**{t: sum(v) / len(v) for t, v in by_task.items()}, "examples": examples}
