"""`job=synthesize`: a run that synthesises reasoning paths instead of training — ReGenesis (arXiv
2410.02108) or STaR (arXiv 2203.14465), `synthesize.method`, on `synthesize.problems` generated problems of
each of `synthesize.tasks` (rizzrun.data.reasoning; `synthesize.problem_seed`), by the run's decoder from the
model of `model.from_pretrained` (a run folder); and the same for `synthesize.val_problems` held-out problems
of each type (the data's hold-out, problem_seed 0) into rollouts/val.jsonl, records-val.jsonl and
stats-val.json: the SFT's validation split. Writes rollouts/train.jsonl (a sample run's line format:
`data=rollouts` with min_reward=0.5 keeps the right paths), records.jsonl (every stage's output) and
stats.json (rizzrun.selfplay.regenesis.stage_stats), and summary.json (status, the stats, seconds).
A stopped job resumed (`resume=<folder>`) keeps each split whose stats file was written (the split's
last file: its rollouts and records are whole) and synthesises the rest; every generate() call of a
seeded decoder starts from its seed, so a kept split and a fresh one are the files an uninterrupted job
writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.errors import InputError


def split_done(run_dir: Path, split: str) -> dict | None:
    """The stats of a split an earlier attempt finished (its stats file whole JSON), else None."""
    suffix = "" if split == "train" else f"-{split}"
    stats = run_dir / f"stats{suffix}.json"
    try:
        return json.loads(stats.read_text()) if stats.is_file() else None
    except json.JSONDecodeError:  # cut while writing it: the split is made again
        return None


def run_synthesize(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict:
    """The synthesize job in `run_dir` (locked and checked by rizzrun.runner.train.run); resume: keep
    the splits a stopped attempt finished (module docstring)."""
    from rizzrun.data.reasoning import TASKS, generate_problems
    from rizzrun.runner.build import build_decoder
    from rizzrun.runner.train import _environment, _write_summary, summary_written
    from rizzrun.selfplay.regenesis import synthesize
    from rizzrun.tokenizers import load_tokenizer

    started = time.perf_counter()
    node = cfg.get("synthesize") or {}
    method, tasks = node.get("method", "regenesis"), list(node.get("tasks", ["add", "rev"]))
    summary = {"run_dir": str(run_dir), "job": "synthesize", "method": method, "status": "running"}
    _write_summary(run_dir, summary)
    with summary_written(run_dir, summary, started):
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        source = cfg.model.get("from_pretrained")
        if not source or not (Path(str(source)).expanduser() / layout.CONFIG).is_file():
            raise InputError(f"model.from_pretrained={source}: job=synthesize synthesises with the model of a run "
                             "folder (e.g. a regenesis_seed_tiny run)")
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise InputError(f"synthesize.tasks={tasks}: give one or more of {', '.join(TASKS)}")
        (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run_dir / layout.ENV).write_text(json.dumps(_environment(), indent=2) + "\n")
        problems = [p for t in tasks for p in generate_problems(t, int(node.get("problems", 100)), 0,
                                                                problem_seed=int(node.get("problem_seed", 100)))[0]]
        source = Path(str(source)).expanduser()
        decoder = build_decoder(cfg.decoder, load_tokenizer(source / layout.TOKENIZER))
        if getattr(decoder, "seed", 0) is None:
            decoder.seed = int(cfg.seed)
        n_val = int(node.get("val_problems", 10))
        splits = {"train": problems}
        if n_val:  # held-out problems of the same types: the SFT's validation split (val loss only)
            splits["val"] = [p for t in tasks for p in generate_problems(t, 0, n_val, problem_seed=0)[1]]
        for split, items in splits.items():
            stats = split_done(run_dir, split) if resume else None
            if stats is not None:
                print(f"{split}: kept from the stopped attempt ({len(items)} problems)", flush=True)
            else:
                stats = synthesize(source, run_dir, method, items, seed=int(cfg.seed),
                                   hint=bool(node.get("hint", True)), decoder=decoder, split=split)
            summary["stats" if split == "train" else "val_stats"] = stats
        summary["status"] = "completed"
    print(f"\nrun folder: {run_dir}\n{method}: {json.dumps(summary['stats'])}", flush=True)
    return summary
