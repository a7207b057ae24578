"""Data-parallel training speed on this machine's CPU cores (gloo): rizzrun's `trainer=ddp` with 2
processes against a hand-written DDP loop doing the same work (the same model, the same global
batches cut in two, AdamW, clipping), both measured in the same run, and against rizzrun with one
process and the doubled batch (the same tokens per step).

The bare loop is torch's DistributedDataParallel with nothing else: no Lightning, no metrics
all-reduce, no signal agreement, no logging. Each process gets cores // 2 threads, as Lightning
gives each of its processes."""

from __future__ import annotations

import os
import statistics
import time

import torch


def _bare_worker(rank: int, world: int, model, batches: list, warmup: int, port: int, out) -> None:
    import torch.distributed as dist

    from rizzrun.optim import adamw
    from rizzrun.runner.distributed import share

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = adamw(model, lr=3e-3)
    times = []
    for batch in batches:
        mine = share(batch, rank, world)
        dist.barrier()  # time each step from a common start, as a step of the whole group
        t = time.perf_counter()
        logits = ddp(mine["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), mine["labels"].flatten(),
                                                 ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    if rank == 0:
        tokens = batches[0]["input_ids"].numel()  # the global batch: every rank's rows
        out.put(statistics.median(tokens / t for t in times[warmup:]))
    dist.destroy_process_group()


def bare_ddp_tokens_per_s(model, batches: list, warmup: int, world: int = 2) -> float:
    """Global tokens/s of the hand-written DDP loop over `batches` (global batches) with `world`
    processes (median step after `warmup`)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_bare_worker, args=(world, model, batches, warmup, port, out), nprocs=world, join=True,
                       start_method="spawn")
    return out.get()


def distributed_training(overrides: list[str], steps: int, warmup: int, repeats: int, cache: str,
                         rizzrun_tokens_per_s, components) -> dict:
    """Best of `repeats` tokens/s: rizzrun DDP (2 processes, data.batch_size each), the bare DDP
    loop, and rizzrun with one process and the doubled batch."""
    import copy
    import itertools

    get = dict(o.split("=", 1) for o in overrides)
    per_process = int(get["data.batch_size"])
    doubled = [o for o in overrides if not o.startswith("data.batch_size=")] + [f"data.batch_size={2 * per_process}"]
    cfg, _, data, model = components(doubled, cache)
    batches = list(itertools.islice(data.train_batches(start=0), steps + warmup))
    ddp = ["trainer.strategy=ddp", "trainer.devices=2"]
    best = {"rizzrun ddp x2": 0.0, "bare ddp x2": 0.0, "rizzrun x1 (doubled batch)": 0.0}
    for _ in range(repeats):
        best["rizzrun ddp x2"] = max(best["rizzrun ddp x2"], rizzrun_tokens_per_s([*overrides, *ddp], steps, warmup,
                                                                                  cache)[0])
        best["bare ddp x2"] = max(best["bare ddp x2"], bare_ddp_tokens_per_s(copy.deepcopy(model), batches, warmup))
        best["rizzrun x1 (doubled batch)"] = max(best["rizzrun x1 (doubled batch)"],
                                                 rizzrun_tokens_per_s(doubled, steps, warmup, cache)[0])
    return {"batch": f"2 x {per_process}x{cfg.data.seq_len}", "tokens_per_s": best}
