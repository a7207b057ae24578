"""`job=sample`: a run that generates instead of training — every prompt of a `prompts` data option,
`sample.num_generations` completions each by the run's decoder from the model (`model.from_pretrained`:
a run folder or a Hugging Face folder), scored by `rewards` — into `rollouts/<split>.jsonl` of its own
run folder. The data self-improvement loops train on next (ReST's Grow step, arXiv 2308.08998; read
back by `data=rollouts`, rizzrun.data.rollouts).

One line per completion, in prompt-row order, the batches in order:

    {"batch": b, "row": r, "sample": g (0..G-1; -1: the data's reference answer), "prompt": text,
     "completion": text (up to EOS), "reward": total | null, "rewards": {NAME: value | null},
     "truncated": bool (no EOS within max_new_tokens), "tokens": n (completion tokens, EOS included),
     **the row's columns (e.g. "answer")}

`sample.include_reference`: one more line per prompt, its `answer` column as the completion, scored the
same way (ReST keeps the original data in the grown set, filtered like the samples). Each batch's
completions come from a seed that depends on (run seed, split, batch) only, and each batch is
appended and flushed whole, so a killed job resumes (`resume=true`) after its last whole batch and
writes what an uninterrupted job writes. summary.json: per split the prompts, completions, mean
reward, the rate of truncated completions and the seconds; status as a training run's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.errors import InputError

log = logging.getLogger("rizzrun")

ROLLOUTS = "rollouts"  # the folder of rollouts/<split>.jsonl in a sample run


def rollout_file(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / ROLLOUTS / f"{split}.jsonl"


def _done_batches(path: Path) -> int:
    """Whole batches already in `path` (each ends with a line marked "end"); what follows the last
    whole batch (a batch cut by a kill) is removed."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    keep, done = 0, 0
    for i, line in enumerate(lines):
        if not line.endswith("\n"):
            break  # cut by the kill, even where what is left parses (only its newline lost)
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by the kill
        if row.get("end"):
            keep, done = i + 1, row["batch"] + 1
    if keep != len(lines):
        path.write_text("".join(lines[:keep]))
    return done


def run_sample(cfg: DictConfig, run_dir: Path, resume: bool) -> dict:
    """The sample job in `run_dir` (locked and checked by rizzrun.runner.train.run)."""
    from hydra.utils import instantiate

    from rizzrun.paths import cache_root
    from rizzrun.rollouts.sample import sample_rollout, score_rollout
    from rizzrun.runner.build import build_decoder, build_model
    from rizzrun.runner.on_policy import build_rewards, rollout_seed
    from rizzrun.runner.train import _environment, _write_summary, summary_written

    started = time.perf_counter()
    scfg = cfg.sample
    summary = {"run_dir": str(run_dir), "job": "sample", "status": "crashed", "splits": {}}
    _write_summary(run_dir, {**summary, "status": "running"})
    with summary_written(run_dir, summary, started):
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        if resume:
            _refuse_changes(cfg, run_dir)
        (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run_dir / layout.ENV).write_text(json.dumps(_environment(), indent=2) + "\n")
        tokenizer = instantiate(cfg.tokenizer)
        data = instantiate(cfg.data)
        if getattr(data, "batch_kind", None) != "prompts":
            raise InputError(f"job=sample: data {type(data).__name__} makes '{getattr(data, 'batch_kind', None)}' "
                             "batches; sampling needs prompts (e.g. data=arithmetic_prompts, task_prompts, prompt_file)")
        tokenizer.prepare(data.train_texts, data.fingerprint)
        tokenizer.save(run_dir / layout.TOKENIZER)
        data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
        rewards = build_rewards(cfg.get("rewards"), data)
        torch.manual_seed(int(cfg.seed))
        model = build_model(cfg, tokenizer).eval()
        device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
        model.to(device)
        decoder = build_decoder(cfg.decoder, tokenizer)
        G = int(scfg.num_generations)
        limit = getattr(getattr(model, "config", None), "max_seq_len", None)
        new = int(getattr(decoder, "max_new_tokens", 0))
        if limit is not None and data.longest_prompt() + new > limit:
            raise InputError(f"decoder.max_new_tokens={new}: the longest prompt has {data.longest_prompt()} tokens, "
                             f"more than the model's max_seq_len={limit} allows with it")
        base = getattr(decoder, "seed", None)
        base = int(cfg.seed if base is None else base)
        for split in scfg.splits:
            if split not in data.stats:
                raise InputError(f"sample.splits: data {type(data).__name__} has no '{split}' split "
                                 f"(it has: {', '.join(s for s in data.stats)})")
            path = rollout_file(run_dir, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            done = _done_batches(path) if resume else 0
            if not resume:
                path.unlink(missing_ok=True)
            rows = list(data.split_rows(split))[: scfg.max_prompts or None]
            size = int(scfg.batch_size or data.batch_size)
            split_started = time.perf_counter()
            with path.open("a") as out:
                for b, first in enumerate(range(0, len(rows), size)):
                    if b < done:
                        continue
                    chunk = torch.tensor(rows[first:first + size])
                    batch = data.batch_of_rows(chunk)
                    batch = {k: v.to(device) for k, v in batch.items()}
                    if hasattr(decoder, "seed"):
                        decoder.seed = rollout_seed(base, 0, b, 0, f"sample:{split}")
                    rollout = sample_rollout(model, decoder, batch, G, tokenizer.eos_id)
                    prompts, columns = data.columns(chunk)
                    texts, _ = score_rollout(rollout, tokenizer, rewards, prompts, columns)
                    lines = _lines(b, chunk.tolist(), G, prompts, columns, texts, rollout, rewards.names)
                    if scfg.include_reference:
                        lines += _reference_lines(b, chunk.tolist(), prompts, columns, rewards)
                    lines[-1]["end"] = True
                    out.write("".join(json.dumps(line) + "\n" for line in lines))
                    out.flush()
            summary["splits"][split] = {**_split_summary(path),
                                        "seconds": round(time.perf_counter() - split_started, 1)}
            log.info("sample %s: %s", split, summary["splits"][split])
        summary["status"] = "completed"
    print(f"\nrun folder: {run_dir}\n" + "\n".join(
        f"{s}: {v['prompts']} prompts, {v['completions']} completions, mean reward {v['reward']:.4f}"
        for s, v in summary["splits"].items()), flush=True)
    return summary


# What decides the lines a job writes: a resume that changed one would write the rest of the file
# by other settings (e.g. 3 completions a prompt after 2). Where caches live may change.
_KEPT_ON_RESUME = ("seed", "model", "tokenizer", "data", "decoder", "rewards", "sample.num_generations",
                   "sample.batch_size", "sample.include_reference")
_MOVABLE = ("cache_dir", "num_proc")


def _refuse_changes(cfg: DictConfig, run_dir: Path) -> None:
    """InputError naming each setting of _KEPT_ON_RESUME that differs from the job's config.yaml."""
    saved_file = run_dir / layout.CONFIG
    if not saved_file.is_file():
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False)
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = []
    for key in _KEPT_ON_RESUME:
        before, after = _leaves(_select(saved, key), key), _leaves(_select(now, key), key)
        changed += [f"{k} {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after))
                    if k.rsplit(".", 1)[-1] not in _MOVABLE and before.get(k) != after.get(k)]
    if changed:
        raise InputError(f"resume={cfg.get('resume')}: this sample job changes {', '.join(changed)}; the rollouts "
                         "already written used the job's values, which a resumed job keeps; resume without "
                         "changing them, or start a new job")


def _select(tree, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _leaves(node, prefix: str) -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}.{key}").items()}
    return {prefix: node}


def _lines(b, rows, G, prompts, columns, texts, rollout, names) -> list[dict]:
    out = []
    total, per_fn = rollout["rewards"].tolist(), rollout["reward_per_function"].tolist()
    truncated, tokens = rollout["truncated"].tolist(), rollout["completion_mask"].sum(dim=1).tolist()
    for i, row in enumerate(rows):
        for g in range(G):
            n = i * G + g
            out.append({"batch": b, "row": row, "sample": g, "prompt": prompts[i], "completion": texts[n],
                        "reward": _number(total[n]), "rewards": {k: _number(v) for k, v in zip(names, per_fn[n])},
                        "truncated": bool(truncated[n]), "tokens": int(tokens[n]),
                        **{k: v[i] for k, v in columns.items()}})
    return out


def _reference_lines(b, rows, prompts, columns, rewards) -> list[dict]:
    if "answer" not in columns:
        raise InputError("sample.include_reference=true: the data's rows have no `answer` column to use as the "
                         "reference completion; set sample.include_reference=false")
    answers = [str(a) for a in columns["answer"]]
    scores = rewards(prompts, answers, **columns)
    return [{"batch": b, "row": row, "sample": -1, "prompt": prompts[i], "completion": answers[i],
             "reward": _number(float(scores.total[i])),
             "rewards": {k: _number(float(scores.per_function[i, j])) for j, k in enumerate(scores.names)},
             "truncated": False, "tokens": None, **{k: v[i] for k, v in columns.items()}}
            for i, row in enumerate(rows)]


def _number(x: float) -> float | None:
    return None if x != x else float(x)  # NaN (unscorable) -> null


def _split_summary(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    samples = [r for r in rows if r["sample"] >= 0]
    scored = [r["reward"] for r in samples if r["reward"] is not None]
    return {"prompts": len({r["row"] for r in rows}), "completions": len(samples),
            "reward": sum(scored) / len(scored) if scored else float("nan"),
            "truncated": sum(r["truncated"] for r in samples) / max(len(samples), 1)}
