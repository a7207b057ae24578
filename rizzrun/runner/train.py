"""`run(cfg, run_dir)`: train one composed config into one run folder.

    run_dir/
      config.yaml          the resolved config (Hydra's .hydra/ holds the unresolved one + overrides)
      env.json             library versions, git commit, machine
      tokenizer/           what `rizzrun generate` needs to decode
      metrics.jsonl        every logged metric (whatever the logger)
      samples.jsonl        sampled continuations at each validation
      checkpoints/         step-NNNNNN/{model.safetensors,state.pt,meta.json}, latest
      wandb/               the W&B run (offline unless told), its id in wandb_id.txt
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig, run_dir: Path) -> dict:
    import lightning as L
    from hydra.utils import instantiate

    from rizzrun.paths import cache_root
    from rizzrun.runner.build import build_model
    from rizzrun.runner.callbacks import PeriodicCheckpoint, interactive, progress_callback, quiet_lightning
    from rizzrun.runner.checkpoint import FolderCheckpointIO, latest_checkpoint, read_meta
    from rizzrun.runner.loggers import build_loggers, finish_loggers
    from rizzrun.runner.task import LanguageModelTask

    quiet_lightning()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg.trainer
    started = time.perf_counter()

    resume_from = _resume_checkpoint(cfg, run_dir, latest_checkpoint)
    meta = read_meta(resume_from) if resume_from else {}
    if tcfg.num_threads:
        torch.set_num_threads(int(tcfg.num_threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "env.json").write_text(json.dumps(_environment(), indent=2) + "\n")

    tokenizer = instantiate(cfg.tokenizer)
    data = instantiate(cfg.data)
    tokenizer.prepare(data.train_texts, data.fingerprint)
    tokenizer.save(run_dir / "tokenizer")
    data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
    _log_data(data)

    model = build_model(cfg, tokenizer)
    if tcfg.compile:
        model.compile()
    task = LanguageModelTask(
        model=model,
        objective=instantiate(cfg.objective),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        decoder=instantiate(cfg.decoder),
        tokenizer=tokenizer,
        prompts=list(cfg.prompts or []),
        samples_per_val=int(tcfg.samples_per_val),
        samples_path=run_dir / "samples.jsonl",
        seed=int(cfg.seed),
        accumulate=int(tcfg.accumulate),
    )

    resume_step = meta.get("step") if resume_from else None
    if resume_from is None:
        for stale in ("metrics.jsonl", "samples.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
    else:
        _truncate_jsonl(run_dir / "samples.jsonl", resume_step)
    loggers = build_loggers(cfg, run_dir, resume_step=resume_step)

    train_loader = torch.utils.data.DataLoader(
        _Stream(data.train_batches, start=int(meta.get("data_position", 0))), batch_size=None
    )
    val = data.val_batches()
    val_loader = torch.utils.data.DataLoader(
        list(itertools.islice(val, tcfg.val_batches or None)), batch_size=None
    )
    val_every = min(int(tcfg.val_every), int(tcfg.max_steps))
    trainer = L.Trainer(
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        strategy=tcfg.strategy,
        precision=tcfg.precision,
        max_steps=int(tcfg.max_steps),
        max_epochs=-1,
        accumulate_grad_batches=int(tcfg.accumulate),
        gradient_clip_val=float(tcfg.grad_clip) or None,
        val_check_interval=val_every * int(tcfg.accumulate),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=int(tcfg.log_every),
        logger=loggers,
        callbacks=[
            PeriodicCheckpoint(run_dir / "checkpoints", int(tcfg.checkpoint_every), int(tcfg.keep_checkpoints), val_every),
            progress_callback(int(tcfg.log_every)),
        ],
        plugins=[FolderCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=interactive(),
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )
    loggers[0].trainer = trainer
    failed = True
    try:
        trainer.fit(
            task, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None, weights_only=False
        )
        evaluation = _evaluate_at_end(cfg, task.model, tokenizer, data, loggers, run_dir, trainer.global_step)
        failed = False
    finally:
        finish_loggers(loggers, failed)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary = {
        "run_dir": str(run_dir),
        "step": trainer.global_step,
        "train_loss": metrics.get("train/loss"),
        "val_loss": metrics.get("val/loss"),
        "seconds": round(time.perf_counter() - started, 1),
        "samples": task.last_samples,
        "eval": evaluation,
        "data": getattr(data, "stats", {}),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary)
    return summary


def _evaluate_at_end(cfg: DictConfig, model, tokenizer, data, loggers, run_dir: Path, step: int) -> dict | None:
    """`eval.at_end`: memorization + held-out loss of the final model, logged at the last step
    and written to eval.json (the same as `rizzrun eval RUN_DIR` afterwards)."""
    if not (cfg.get("eval") and cfg.eval.at_end):
        return None
    from rizzrun.runner.evaluate import evaluate, flat_metrics, write

    result = evaluate(model, tokenizer, data, cfg.eval)
    write(run_dir, result)
    for logger in loggers:
        logger.log_metrics(flat_metrics(result), step=step)
    return {k: v for k, v in result["memorization"].items() if k != "rows"} | {"val": result["val"]}


class _Stream(torch.utils.data.IterableDataset):
    """An IterableDataset view of `train_batches(start)`: infinite, already batched."""

    def __init__(self, batches, start: int):
        self.batches, self.start = batches, start

    def __iter__(self):
        return iter(self.batches(start=self.start))


def _resume_checkpoint(cfg: DictConfig, run_dir: Path, latest_checkpoint):
    resume = cfg.get("resume")
    if resume in (None, False) or str(resume).lower() == "false":
        return None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(
            f"resume={resume}: {run_dir}/checkpoints/latest does not exist; "
            "resume needs a run folder that saved a checkpoint (trainer.checkpoint_every)"
        )
    return checkpoint


def _truncate_jsonl(path: Path, step: int | None) -> None:
    from rizzrun.runner.metrics import truncate_after

    if step is not None and path.exists():
        truncate_after(path, step)


def _environment() -> dict:
    versions = {}
    for name in ("torch", "lightning", "hydra", "omegaconf", "wandb", "datasets", "tokenizers", "safetensors", "triton"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except Exception:  # optional at run time (e.g. triton on a CPU-only box)
                continue
        versions[name] = getattr(module, "__version__", "?")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except Exception:
        commit = ""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": commit,
        "argv": sys.argv,
        "versions": versions,
    }


def _log_data(data) -> None:
    """What the corpus holds, and every row it skipped by reason (also in summary.json)."""
    import logging

    log = logging.getLogger("rizzrun")
    stats = getattr(data, "stats", {}) or {}
    for split in ("train", "val"):
        if split in stats:
            s = stats[split]
            log.info("data %s: %s documents, %s tokens, %s blocks", split, s.get("documents"), s.get("tokens"),
                     s.get("blocks"))
    skipped = {reason: n for reason, n in (stats.get("skipped") or {}).items() if n}
    if skipped:
        log.warning("data: rows skipped, by reason: %s", ", ".join(f"{k} {v}" for k, v in skipped.items()))
        for example in getattr(data, "skipped_examples", [])[:5]:
            log.warning("  %s", example)


def _print_summary(summary: dict) -> None:
    print(f"\nrun folder: {summary['run_dir']}", flush=True)
    if summary["val_loss"] is not None:
        print(f"steps {summary['step']}  val loss {summary['val_loss']:.4f}  ({summary['seconds']} s)")
    for row in summary["samples"][:2]:
        print(f"--- sample (step {row['step']}) ---\n{row['text']}")
