"""`run(cfg, run_dir)`: train one composed config into one run folder (layout: rizzrun.layout).

summary.json's `status` says how the run ended: "completed", "stopped by SIGTERM" /
"stopped by SIGINT" (resumable), "diverged" (non-finite loss, gradient or weights; the last good
checkpoint stays `latest`), "bad input" (an InputError: a data file, a path, a device) or
"crashed" (with the error; the traceback is in error.txt).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.config.resume import resuming
from rizzrun.errors import InputError, RunEnded


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train `cfg` into `run_dir`; the summary (also in summary.json, with how the run ended).

    A fresh run refuses a folder that holds another run; `resume` continues the folder's newest
    valid checkpoint. The folder is locked for the process's lifetime. A signal or divergence
    ends the run with `RunEnded` after the loggers are finished and summary.json is written.
    In a run of several processes started by a cluster (srun, torchrun) every rank calls this;
    ranks > 0 go to `run_rank` (rizzrun.ranks)."""
    from rizzrun import ranks
    from rizzrun.run_dirs import RunLock, refuse_taken

    run_dir = Path(run_dir)
    if not ranks.is_lead():
        return run_rank(cfg, run_dir, None)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        if not resuming(cfg):
            refuse_taken(run_dir)
        (run_dir / layout.ERROR).unlink(missing_ok=True)  # left by an earlier attempt of this run
        if cfg.get("stages"):  # a pipeline: its runs one after another in subfolders
            from rizzrun.runner.pipeline import run_pipeline

            return run_pipeline(cfg, run_dir)
        if cfg.get("job", "train") == "sample":
            from rizzrun.runner.sample_job import run_sample

            return run_sample(cfg, run_dir, resume=resuming(cfg))
        if cfg.get("job", "train") == "synthesize":
            from rizzrun.selfplay.job import run_synthesize

            return run_synthesize(cfg, run_dir, resume=resuming(cfg))
        if cfg.get("job", "train") == "refine":
            from rizzrun.runner.refine_job import run_refine

            return run_refine(cfg, run_dir, resume=resuming(cfg))
        return _train(cfg, run_dir, lead=True)


def run_rank(cfg: DictConfig, run_dir: Path, resume_from: Path | None) -> dict:
    """A rank > 0 of a distributed run: trains alongside rank 0 and writes nothing into
    `run_dir`. `resume_from`: the checkpoint rank 0 resumes from (handed over by rank 0), or None
    to find it the way rank 0 does (a rank a cluster started: every rank reads the same folder)."""
    if resume_from is None and resuming(cfg):
        from rizzrun.runner.checkpoint import latest_valid_checkpoint

        resume_from, _ = latest_valid_checkpoint(run_dir)
    return _train(cfg, Path(run_dir), lead=False, resume_from=resume_from)


def _train(cfg: DictConfig, run_dir: Path, lead: bool, resume_from: Path | None = None) -> dict:
    """The run itself, on every rank; only the `lead` (global rank 0) writes files and logs."""
    import lightning as L
    from hydra.utils import instantiate

    from rizzrun.paths import cache_root
    from rizzrun.ranks import handing_over
    from rizzrun.runner.build import build_decoder, build_model
    from rizzrun.runner.callbacks import PeriodicCheckpoint, interactive, progress_callback, quiet_lightning
    from rizzrun.runner.checkpoint import prepare_checkpoints, read_meta
    from rizzrun.runner.control import NonFiniteGuard, SignalStop
    from rizzrun.runner.distributed import RankShard, end_process_group
    from rizzrun.runner.extra_models import build_extra_models, build_objective
    from rizzrun.runner.loggers import build_loggers, finish_loggers
    from rizzrun.rollouts.schedule import repeat_blocks
    from rizzrun.runner.task import LanguageModelTask

    quiet_lightning()
    if not interactive():  # logs of batch jobs (CI, SLURM): no progress bars from `datasets`
        import datasets

        datasets.disable_progress_bars()
    tcfg = cfg.trainer
    started = time.perf_counter()
    checkpointer = PeriodicCheckpoint(run_dir / layout.CHECKPOINTS, int(tcfg.checkpoint_every),
                                      int(tcfg.keep_checkpoints), min(int(tcfg.val_every), int(tcfg.max_steps)))
    stopper = SignalStop(checkpointer, resume_hint=f"continue with: rizzrun resume={run_dir}")
    stopper.install()  # from here on a signal ends the run cleanly, with summary.json saying so
    summary = {"run_dir": str(run_dir), "status": "crashed", "step": None, "eval": None}
    loggers, trainer, task, data, ended, writing = [], None, None, None, None, False
    try:
        if lead:
            # Leftovers of a crashed checkpoint write are removed; a resume takes the newest intact
            # checkpoint (each damaged one named in the log).
            resume_from = prepare_checkpoints(run_dir, _resume_value(cfg))
        meta = read_meta(resume_from) if resume_from else {}
        resume_step = meta.get("step") if resume_from else None
        if resume_from is not None:
            checkpointer.last_saved_step = resume_step
        if tcfg.num_threads:
            torch.set_num_threads(int(tcfg.num_threads))
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        trainer = _trainer(tcfg, run_dir, [checkpointer, stopper, progress_callback(int(tcfg.log_every))], lead)
        processes = trainer.world_size  # devices × nodes under a distributed strategy
        _check_processes(meta, processes, resume_from)  # before anything is written
        if lead:
            if resume_from is not None:
                summary["resumed"] = _resume_record(run_dir, resume_from, resume_step)
            _write_summary(run_dir, {**summary, "status": "running"})  # what a killed segment leaves behind
            writing = True
            (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
            (run_dir / layout.ENV).write_text(json.dumps(_environment(), indent=2) + "\n")
            if resume_from is not None:
                _truncate_jsonl(run_dir / layout.SAMPLES, resume_step)
            loggers = build_loggers(cfg, run_dir, resume_step=resume_step)
            trainer.loggers = loggers

        tokenizer = instantiate(cfg.tokenizer)
        # data.batch_size is per process: the data cuts batches for all of them, each takes its rows
        data = instantiate(cfg.data, **({"batch_size": int(cfg.data.batch_size) * processes} if processes > 1 else {}))
        tokenizer.prepare(data.train_texts, data.fingerprint)
        if lead:
            tokenizer.save(run_dir / layout.TOKENIZER)
        data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
        if lead:
            _log_data(data)
        shard = RankShard(processes)
        shard.check_training_rows(data.train_batch_size, cfg.data.batch_size)
        rewards = _rewards(cfg, data)  # before the model: a missing reward is found early

        model = build_model(cfg, tokenizer)
        _check_pairs_fit(data, model)
        objective = build_objective(cfg, model, tokenizer)
        # Before compiling and training: `init` is the policy's starting weights.
        extra_models, extra_records = build_extra_models(cfg, objective, model, tokenizer, data,
                                                         resume_meta=meta if resume_from else None)
        if tcfg.compile:
            model.compile()
        decoder = build_decoder(cfg.decoder, tokenizer)
        on_policy = _on_policy(cfg, objective, decoder, tokenizer, data, model, rewards)
        if on_policy is not None or (int(tcfg.samples_per_val) and cfg.prompts):
            _check_decoder_fits(decoder, model, cfg)
        task = LanguageModelTask(
            model=model,
            objective=objective,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            decoder=decoder,
            tokenizer=tokenizer,
            prompts=list(cfg.prompts or []),
            samples_per_val=int(tcfg.samples_per_val),
            samples_path=run_dir / layout.SAMPLES if lead else None,
            seed=int(cfg.seed),
            accumulate=int(tcfg.accumulate),
            log_every=int(tcfg.log_every),
            guard=NonFiniteGuard(str(tcfg.get("on_nonfinite", "stop")), int(tcfg.get("max_nonfinite_skips", 0)),
                                 check_grads=str(tcfg.precision) != "16-mixed"),
            extra_models=extra_models,
            extra_records=extra_records,
            on_policy=on_policy,
        )

        # An on-policy objective trains num_iterations steps on each block of prompt batches.
        stream = partial(repeat_blocks, data.train_batches, accumulate=int(tcfg.accumulate),
                         iterations=on_policy.iterations if on_policy is not None else 1)
        train_loader = torch.utils.data.DataLoader(shard.stream(stream, start=int(meta.get("data_position", 0))),
                                                   batch_size=None)
        val = list(itertools.islice(data.val_batches(), tcfg.val_batches or None))
        val_loader = torch.utils.data.DataLoader(shard.batches(val), batch_size=None)
        with handing_over(run_dir, resume_from):  # ranks Lightning starts join this run (rizzrun.ranks)
            trainer.fit(
                task, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None, weights_only=False
            )
        summary["eval"] = _evaluate_at_end(cfg, task.model, tokenizer, data, loggers, run_dir, trainer.global_step,
                                           lead, task.objective, task.extra_models,
                                           on_policy.rewards if on_policy is not None else None)
        summary["status"] = "completed"
    except RunEnded as e:
        summary.update(status=e.status, reason=str(e))
        ended = e
    except BaseException as e:
        summary.update(status="bad input" if isinstance(e, InputError) else "crashed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        stopper.restore()
        end_process_group()
        if writing:  # a run refused before it wrote anything leaves the folder as it was
            finish_loggers(loggers, failed=summary["status"] != "completed")
            summary.update(_results(trainer, task, data, started))
            _write_summary(run_dir, summary)
    if ended is not None:
        stopper.hand_over(ended)  # a signal's earlier owner (submitit: requeue) acts once the run has ended
        raise ended
    if lead:
        _print_summary(summary)
    return summary


def _check_decoder_fits(decoder, model, cfg: DictConfig) -> None:
    """The decoder that samples at validation must be able to decode this model (decoder=think
    needs softmax key caches): found before training, not at the first validation."""
    check = getattr(decoder, "check_model", None)
    if check is None:
        return
    try:
        check(model)
    except ValueError as e:
        option = str(cfg.decoder.get("_target_", "")).rsplit(".", 1)[-1]
        raise InputError(f"decoder ({option}): {e}; pick another decoder, or trainer.samples_per_val=0") from None


def _rewards(cfg: DictConfig, data):
    """The RewardSet that scores rollouts of `prompts` data (rewards, else the data's own), else None."""
    if getattr(data, "batch_kind", "lm") != "prompts":
        return None
    from rizzrun.runner.on_policy import build_rewards

    return build_rewards(cfg.get("rewards"), data)


def _on_policy(cfg: DictConfig, objective, decoder, tokenizer, data, model, rewards):
    """The rollout machinery of a `prompts` objective (rizzrun.runner.on_policy.OnPolicy), else None.
    Refuses, before training, prompts that cannot fit the model with the decoder's new tokens."""
    if getattr(objective, "batch_kind", "lm") != "prompts":
        return None
    from rizzrun.runner.on_policy import OnPolicy
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    longest, new = data.longest_prompt(), int(getattr(decoder, "max_new_tokens", 0))
    if limit is not None and longest + new > limit:
        raise InputError(f"decoder.max_new_tokens={new}: the longest prompt has {longest} tokens, and {longest} + {new} "
                         f"is more than the model's max_seq_len={limit}; lower decoder.max_new_tokens to "
                         f"{max(limit - longest, 0)} or set data.max_prompt_length={max(limit - new, 1)}")
    return OnPolicy(objective, decoder, tokenizer, rewards, data.columns, seed=int(cfg.seed))


def _check_pairs_fit(data, model) -> None:
    """Preference data: the longest prompt + completion must fit the model (read as one fewer
    inputs), found before training, not at the batch that holds it."""
    longest = data.longest_pair() if hasattr(data, "longest_pair") else 0
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    if limit is not None and longest - 1 > limit:
        raise InputError(f"data: the longest pair has {longest} tokens (prompt + completion), read as {longest - 1} "
                         f"inputs, more than the model's max_seq_len={limit}; set data.max_length={limit + 1} "
                         "(truncation as TRL: data.truncation) or use a model with a longer context")


def _trainer(tcfg: DictConfig, run_dir: Path, callbacks: list, lead: bool):
    """The Lightning Trainer for `trainer.*` (loggers are attached once the run may write)."""
    import lightning as L

    from rizzrun.runner.callbacks import interactive
    from rizzrun.runner.checkpoint import FolderCheckpointIO
    from rizzrun.runner.cluster import cluster_num_nodes, cluster_plugins, under_slurm
    from rizzrun.runner.distributed import strategy_for

    val_every = min(int(tcfg.val_every), int(tcfg.max_steps))
    return L.Trainer(
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        num_nodes=cluster_num_nodes() if under_slurm() else int(tcfg.get("num_nodes", 1)),
        strategy=strategy_for(tcfg),
        precision=tcfg.precision,
        max_steps=int(tcfg.max_steps),
        max_epochs=-1,
        accumulate_grad_batches=int(tcfg.accumulate),
        gradient_clip_val=float(tcfg.grad_clip) or None,
        val_check_interval=val_every * int(tcfg.accumulate),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # unused: the task sends its rows to the loggers itself
        logger=False,
        callbacks=callbacks,
        plugins=[FolderCheckpointIO(), *cluster_plugins(tcfg.devices)],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=interactive() and lead,
        use_distributed_sampler=False,  # every rank takes its own rows of each batch: RankShard
        default_root_dir=str(run_dir),
    )


def _check_processes(meta: dict, processes: int, resume_from: Path | None) -> None:
    """A resume trains with as many processes as the checkpoint: its data position counts global
    batches of data.batch_size × processes, so another count would continue on other rows."""
    trained = int(meta.get("processes", 1))
    if resume_from is not None and trained != processes:
        raise InputError(f"trainer.devices × trainer.num_nodes = {processes} processes, but {resume_from.name} was "
                         f"trained by {trained}: its data position counts batches of data.batch_size × {trained}; "
                         f"resume with {trained} processes (e.g. trainer.devices={trained})")


def _results(trainer, task, data, started: float) -> dict:
    """What summary.json reports besides the status, from whatever the run got to."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()} if trainer is not None else {}
    return {
        "step": trainer.global_step if trainer is not None else None,
        "train_loss": metrics.get("train/loss"),
        "val_loss": metrics.get("val/loss"),
        **({"val_reward": metrics["val/reward"]} if "val/reward" in metrics else {}),  # an on-policy run
        "seconds": round(time.perf_counter() - started, 1),
        "samples": task.last_samples if task is not None else [],
        "skipped_nonfinite_steps": task.guard.skipped if task is not None and task.guard is not None else [],
        "data": getattr(data, "stats", {}) if data is not None else {},
    }


def _write_summary(run_dir: Path, summary: dict) -> None:
    from rizzrun.files import write_atomic

    write_atomic(run_dir / layout.SUMMARY, json.dumps(summary, indent=2, default=str) + "\n")


@contextlib.contextmanager
def summary_written(run_dir: Path, summary: dict, started: float):
    """Around the body of a job that makes files instead of training (job=sample, refine, synthesize):
    summary.json written however the body ends, with `seconds` since `started` and, when it raised,
    status "bad input" (InputError) or "crashed" (anything else, a signal's exception included) and the
    one-line error; the body sets status "completed" itself."""
    try:
        yield summary
    except InputError as e:
        summary.update(status="bad input", error=f"{type(e).__name__}: {e}")
        raise
    except BaseException as e:
        summary.update(status="crashed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        summary["seconds"] = round(time.perf_counter() - started, 1)
        _write_summary(run_dir, summary)


def _resume_record(run_dir: Path, checkpoint: Path, step: int) -> list[dict]:
    """Every resume of the run so far: the checkpoint it started from and how the segment before
    it ended ("killed" when that segment never wrote its end: SIGKILL, power loss, the OOM
    killer)."""
    path = run_dir / layout.SUMMARY
    previous = json.loads(path.read_text()) if path.is_file() else {}
    ended = previous.get("status", "running")
    ended = "killed" if ended == "running" else ended  # it never wrote its end
    history = list(previous.get("resumed", []))
    return [*history, {"from_checkpoint": checkpoint.name, "step": step, "previous_segment_ended": ended}]


def _evaluate_at_end(cfg: DictConfig, model, tokenizer, data, loggers, run_dir: Path, step: int,
                     lead: bool = True, objective=None, extra_models: dict | None = None,
                     rewards=None) -> dict | None:
    """`eval.at_end`: memorization + held-out loss of the final model, logged at the last step
    and written to eval.json (the same as `rizzrun eval RUN_DIR` afterwards). Every rank
    evaluates (a sharded model needs all of them); the lead writes."""
    if not (cfg.get("eval") and cfg.eval.at_end):
        return None
    from rizzrun.runner.evaluate import evaluate, flat_metrics, write

    result = evaluate(model, tokenizer, data, cfg.eval, objective=objective, extra_models=extra_models, rewards=rewards)
    if not lead:
        return None
    write(run_dir, result)
    for logger in loggers:
        logger.log_metrics(flat_metrics(result), step=step)
    return {k: v for k, v in result.get("memorization", {}).items() if k != "rows"} | {
        k: result[k] for k in ("val", "sets", "task", "rewards") if k in result}


def _resume_value(cfg: DictConfig) -> str | None:
    """`resume` as the user wrote it ("true" or a folder), or None for a fresh run."""
    if not resuming(cfg):
        return None
    return "true" if cfg.resume is True else str(cfg.resume)


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
        if split not in stats:
            continue
        s = stats[split]
        if "prompts" in s:  # prompts data (on-policy objectives)
            dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "none"
            log.info("data %s: %s prompts, %s tokens, %s truncated, dropped: %s", split, s.get("prompts"),
                     s.get("tokens"), s.get("truncated"), dropped)
        elif "pairs" in s:  # preference data
            dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "none"
            log.info("data %s: %s pairs, %s tokens, %s truncated, dropped: %s", split, s.get("pairs"), s.get("tokens"),
                     s.get("truncated"), dropped)
        else:
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
