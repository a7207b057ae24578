"""`make bench`: rizzrun against the baselines a user would pick instead, timed in one run.

Writes docs/benchmarks.md. Every figure is a ratio against a baseline measured in the same
process, interleaved, best of `--repeats`, warm-up excluded (see ../shared/BENCHMARKS.md):

- start-up: `rizzrun --help` and a rejected config vs `python -c pass`;
- validation: `rizzrun validate` with a bad override vs importing typer, hydra and omegaconf;
- training tokens/s of the tiny and small model: through the rizzrun runner (Lightning,
  logging, checkpoint callback) vs a bare hand-written PyTorch loop on the same model and
  batches, vs `transformers.LlamaForCausalLM` (sdpa) with the same config trained by a bare loop;
  each as a fraction of the machine's dense fp32 matmul rate measured in the same run;
- greedy generation tokens/s, batch 1 and 8: rizzrun's decoder, eager and compiled, vs
  `transformers` generate (dynamic cache; static cache + compiled forward) on the same weights,
  with the per-op floor of the decode step as the limit; every decoder option against greedy;
- token mixers against length (mixers_bench.py); a DPO step against an SFT step on the same
  pairs, with a live and a precomputed reference (preference_bench.py);
- a GRPO step (rollout, scoring, reference, loss, backward, AdamW) against TRL's GRPOTrainer step,
  its generation share, and rollout sampling against `transformers` generate (grpo_bench.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # size: (overrides, measured steps, warm-up steps)
    "tiny": (["model.size=tiny", "data.seq_len=256", "data.batch_size=16"], 12, 3),
    "small": (["model.size=small", "data.seq_len=256", "data.batch_size=16"], 6, 2),
}


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_times(fn) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call. With one torch thread the CPU time
    leaves out the time the shared machine's scheduler gave to other processes."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


def matmul_gflops(repeats: int = 5, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


def startup(repeats: int) -> dict:
    exe = str(Path(sys.executable).with_name("rizzrun"))
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "rizzrun --help": [exe, "--help"],
        "rizzrun validate optimizer.lr=-1 (rejected)": [exe, "validate", "optimizer.lr=-1"],
    }
    best = {k: float("inf") for k in cmds}
    for _ in range(repeats):  # interleaved
        for name, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, cwd=ROOT)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


# A rejected config (an unknown key, the commonest slip) against the import floor of the CLI.
VALIDATION_FLOOR = "python -c 'import typer, hydra, omegaconf'"
VALIDATION_TARGET = 1.5  # issue 11: a rejected config within 1.5x the import floor
GRPO_REPEATS = 5  # interleaved rounds of the on-policy section (grpo_bench.py; a few seconds each)


def validation_speed(repeats: int) -> dict:
    """Wall seconds, best of `repeats`, interleaved: `rizzrun validate` with a bad override vs
    importing what the CLI cannot do without (typer, hydra, omegaconf). Warm: the composition
    and signature caches (rizzrun/config/compose_cache.py, signatures.py) hold what an earlier
    command with the same group choices left; cold: an empty cache folder every time."""
    exe = str(Path(sys.executable).with_name("rizzrun"))
    warm = tempfile.mkdtemp(prefix="rizzrun-bench-cache-")
    cmds = {  # name: (command, cache folder; None: a fresh one every time)
        VALIDATION_FLOOR: ([sys.executable, "-c", "import typer, hydra, omegaconf"], warm),
        "rizzrun validate model.n_layr=2 (unknown key)": ([exe, "validate", "model.n_layr=2"], warm),
        "rizzrun validate +recipe=tiny optimizer.lr=-1 (bad value)":
            ([exe, "validate", "+recipe=tiny", "optimizer.lr=-1"], warm),
        "rizzrun validate model.n_layr=2, cold caches": ([exe, "validate", "model.n_layr=2"], None),
    }
    best = {k: float("inf") for k in cmds}
    for _ in range(repeats):
        for name, (cmd, cache) in cmds.items():
            env = {**os.environ, "RIZZRUN_CACHE": cache or tempfile.mkdtemp(prefix="rizzrun-bench-cold-")}
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, cwd=ROOT, env=env)
            best[name] = min(best[name], time.perf_counter() - t)
            if name != VALIDATION_FLOOR and done.returncode != 2:
                raise RuntimeError(f"{cmd}: expected a rejection (exit 2), got {done.returncode}: {done.stderr!r}")
    return best


def train_flops_per_token(model, seq_len: int) -> float:
    """6 N (dense) + 12 L T d (attention scores and values, forward + backward; PaLM, arXiv 2204.02311 App. B)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 6 * n + 12 * c.n_layer * seq_len * c.d_model


def _components(overrides: list[str], cache: str):
    from hydra.utils import instantiate

    from rizzrun.config import compose
    from rizzrun.runner.build import build_model

    cfg = compose([*overrides, "logger=none", f"cache_dir={cache}"])
    tok = instantiate(cfg.tokenizer)
    data = instantiate(cfg.data)
    tok.prepare(data.train_texts, data.fingerprint)
    data.setup(tok, cache_dir=Path(cache))
    torch.manual_seed(0)
    return cfg, tok, data, build_model(cfg, tok)


def rizzrun_tokens_per_s(overrides, steps, warmup, cache) -> tuple[float, float]:
    """Train through the `rizzrun` command (a fresh process, as a user runs it). Returns the
    steady-state tokens/s (median of its logged per-step rates after warm-up) and the start-up:
    process wall time minus the time of the logged steps (imports, corpus and tokenization
    cache, model build, Lightning set-up, the end-of-run checkpoint)."""
    from rizzrun.runner.metrics import read_metrics

    total = steps + warmup
    exe = str(Path(sys.executable).with_name("rizzrun"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            exe, *overrides, "logger=none", f"cache_dir={cache}", f"trainer.max_steps={total}", "trainer.log_every=1",
            f"scheduler.warmup_steps={warmup}", f"trainer.val_every={total}", "trainer.val_batches=1",
            f"trainer.checkpoint_every={total}", "trainer.samples_per_val=0", f"hydra.run.dir={tmp}/run",
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - t
        rows = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    rates = [r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r]
    batch, seq = _batch_shape(overrides)
    startup_s = wall - sum(batch * seq / r for r in rates)
    return statistics.median(rates[warmup:]), startup_s


def _batch_shape(overrides) -> tuple[int, int]:
    get = dict(o.split("=", 1) for o in overrides)
    return int(get["data.batch_size"]), int(get["data.seq_len"])


def bare_loop(model, forward_loss, batches, steps, warmup, lr=3e-3) -> tuple[float, float]:
    """A hand-written loop: forward, loss, backward, clip, AdamW step. Returns (tokens/s, first loss)."""
    from rizzrun.optim import adamw

    opt = adamw(model, lr=lr)
    model.train()
    times, first = [], None
    for i, batch in zip(range(steps + warmup), batches):
        t = time.perf_counter()
        loss = forward_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        first = float(loss.detach()) if first is None else first
    tokens = batch["input_ids"].numel()
    return statistics.median(tokens / t for t in times[warmup:]), first


def rizzrun_loss(model, batch):
    logits = model(batch["input_ids"])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)


def hf_loss(model, batch):
    logits = model(input_ids=batch["input_ids"]).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)


def hf_twin(model):
    """`transformers.LlamaForCausalLM` with the same config and weights, sdpa attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rizzrun.models.hf_llama import to_hf_state_dict

    c = model.config
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, max_position_embeddings=c.max_seq_len,
        rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
        attention_bias=False, mlp_bias=False, attn_implementation="sdpa",
    ))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return hf


def training(size: str, repeats: int, cache: str, peak_gflops: float) -> dict:
    import copy

    overrides, steps, warmup = SIZES[size]
    cfg, tok, data, model = _components(overrides, cache)
    flops = train_flops_per_token(model, cfg.data.seq_len)
    best = {"rizzrun": 0.0, "bare": 0.0, "transformers": 0.0}
    if size == "tiny":
        best["rizzrun compiled"] = 0.0
    startup_s = float("inf")
    for _ in range(repeats):
        rate, start = rizzrun_tokens_per_s(overrides, steps, warmup, cache)
        best["rizzrun"] = max(best["rizzrun"], rate)
        startup_s = min(startup_s, start)
        if "rizzrun compiled" in best:  # trainer.compile=true; compilation falls in the warm-up steps
            rate, _ = rizzrun_tokens_per_s([*overrides, "trainer.compile=true"], steps, warmup, cache)
            best["rizzrun compiled"] = max(best["rizzrun compiled"], rate)
        torch.manual_seed(0)
        ours = copy.deepcopy(model)
        theirs = hf_twin(model)
        rate, loss_ours = bare_loop(ours, rizzrun_loss, data.train_batches(start=0), steps, warmup)
        best["bare"] = max(best["bare"], rate)
        rate, loss_hf = bare_loop(theirs, hf_loss, data.train_batches(start=0), steps, warmup)
        best["transformers"] = max(best["transformers"], rate)
        assert abs(loss_ours - loss_hf) < 1e-4, f"not the same work: first loss {loss_ours} vs {loss_hf}"
    params = sum(p.numel() for p in model.parameters())
    return {
        "size": size, "params": params, "batch": f"{cfg.data.batch_size}x{cfg.data.seq_len}",
        "tokens_per_s": best, "startup_s": startup_s,
        "mfu": {k: v * flops / (peak_gflops * 1e9) for k, v in best.items()},
    }


def op_floor_us(repeats: int = 2000) -> float:
    """Cost of one tiny eager aten op (dispatch + kernel launch): the per-op floor of decoding."""
    a, b = torch.ones(8), torch.ones(8)
    for _ in range(100):
        torch.add(a, b)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.add(a, b)
    return (time.perf_counter() - t) / repeats * 1e6


def ops_per_step(model, batch: int) -> int:
    """Kernels one rizzrun decode step launches: the leaf aten ops of its profile (an op that
    calls others is counted through them; views and allocations launch nothing)."""
    from torch.profiler import ProfilerActivity, profile

    free = ("aten::empty", "aten::view", "aten::as_strided", "aten::_unsafe_view", "aten::t", "aten::transpose",
            "aten::slice", "aten::select", "aten::unsqueeze", "aten::reshape", "aten::expand", "aten::detach",
            "aten::alias", "aten::split", "aten::chunk", "aten::narrow", "aten::to", "aten::resolve_conj",
            "aten::result_type", "aten::lift_fresh")
    cache = model.init_cache(batch, max_len=64)
    ids = torch.zeros(batch, 1, dtype=torch.long)
    with torch.inference_mode():
        model.step(ids, cache)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.step(ids, cache)
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children
               and not e.name.startswith(free))


def _hf_static_compiled_kwargs():
    """transformers' own fast path: a static cache and its `torch.compile`d forward (on the CPU
    only when asked: `CompileConfig._compile_all_devices`); None where this transformers lacks it."""
    try:
        from transformers import CompileConfig
    except ImportError:
        return None
    config = CompileConfig(fullgraph=False, dynamic=False, backend="inductor", mode="default")
    config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": config}


def generation(repeats: int, new_tokens: int = 128, prompt_len: int = 32, batches=(1, 8),
               threads: int = 1) -> list[dict]:
    """Greedy decoding tokens/s, batch 1 and 8, same weights, eval + inference_mode,
    min_new_tokens = max_new_tokens, identical tokens checked first: rizzrun's Greedy eager
    (static KV cache) and compiled (`compile=True`), `transformers` generate with its dynamic
    cache and with its static cache + compiled forward. The first call of each (compile and
    warm-up) is timed apart and reported as `first_call_s`. One torch thread for every side: on
    the shared 2-core machine a second thread spins waiting for a descheduled peer at every op
    and makes decoding many times slower; rates come from this thread's CPU time (best of
    `repeats`, interleaved), the wall-clock rates are kept too (`tokens_per_s_wall`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _generation(repeats, new_tokens, prompt_len, batches, threads)
    finally:
        torch.set_num_threads(before)


def _generation(repeats, new_tokens, prompt_len, batches, threads):
    from rizzrun.decoders.greedy import Greedy
    from rizzrun.models.llama import Llama

    torch.manual_seed(0)
    model = Llama(259, size="tiny").eval()
    hf = hf_twin(model).eval()
    floor = op_floor_us()
    static = _hf_static_compiled_kwargs()
    out = []
    for batch in batches:
        prompts = torch.randint(0, 256, (batch, prompt_len))
        eager, compiled = Greedy(max_new_tokens=new_tokens), Greedy(max_new_tokens=new_tokens, compile=True)

        def hf_generate(**extra):
            with torch.inference_mode():
                return hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                                   pad_token_id=0, **extra)

        methods = {
            "rizzrun": lambda: eager.generate(model, prompts, eos_token_id=None),
            "rizzrun compiled": lambda: compiled.generate(model, prompts, eos_token_id=None),
            "transformers": hf_generate,
        }
        if static is not None:
            methods["transformers static+compiled"] = lambda: hf_generate(**static)
        first, skipped, reference = {}, {}, None
        for name, fn in list(methods.items()):
            t = time.perf_counter()
            try:
                tokens = fn()
            except Exception as e:  # a baseline this transformers/torch cannot run: say why
                skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                del methods[name]
                continue
            first[name] = time.perf_counter() - t
            reference = tokens if reference is None else reference
            assert torch.equal(tokens, reference), f"not the same work: {name}'s greedy tokens differ from rizzrun's"
        best = {k: float("inf") for k in methods}
        wall = dict(best)
        for _ in range(repeats):  # interleaved
            for name, fn in methods.items():
                w, c = best_times(fn)
                best[name], wall[name] = min(best[name], c), min(wall[name], w)
        ops = ops_per_step(model, batch)
        per_token_us = best["rizzrun"] / new_tokens * 1e6
        out.append({
            "batch": batch, "new_tokens": new_tokens, "prompt_len": prompt_len, "threads": threads,
            "tokens_per_s": {k: batch * new_tokens / v for k, v in best.items()},
            "tokens_per_s_wall": {k: batch * new_tokens / v for k, v in wall.items()},
            "ms_per_step": {k: v / new_tokens * 1e3 for k, v in best.items()},
            "first_call_s": first, "skipped": skipped,
            "ops_per_step": ops, "op_floor_us": floor, "floor_fraction": ops * floor / per_token_us,
        })
    return out


def decoder_overheads(repeats: int, new_tokens: int = 64, prompt_len: int = 32, batches=(1, 8),
                      threads: int = 1) -> list[dict]:
    """Tokens/s of every `conf/decoder` option relative to greedy on the same model and prompts
    (what each method costs per token), eager and, where the option takes it, `compile=true`.
    Each option is built from its own yaml (`build_decoder`, the byte tokenizer) with
    max_new_tokens set and no EOS, so every row generates the same number of tokens; an option
    that cannot be built or run on this model is listed with the reason."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _decoder_overheads(repeats, new_tokens, prompt_len, batches)
    finally:
        torch.set_num_threads(before)


def _decoder_overheads(repeats, new_tokens, prompt_len, batches):
    from omegaconf import OmegaConf

    from rizzrun.config.catalog import option_file, options
    from rizzrun.models.llama import Llama
    from rizzrun.runner.build import build_decoder
    from rizzrun.tokenizers.byte import ByteTokenizer

    torch.manual_seed(0)
    model = Llama(259, size="tiny").eval()
    tokenizer = ByteTokenizer()
    rows = []
    for batch in batches:
        prompts = torch.randint(0, 256, (batch, prompt_len))
        runs, reasons = {}, {}
        for name in options("decoder"):
            for compiled in (False, True):
                label = f"{name} compiled" if compiled else name
                try:
                    node = OmegaConf.load(option_file("decoder", name))
                    if compiled and "compile" not in node:
                        continue
                    node.max_new_tokens = new_tokens
                    if "compile" in node:
                        node.compile = compiled
                    decoder = build_decoder(node, tokenizer)
                    fn = (lambda d: lambda: d.generate(model, prompts, eos_token_id=None))(decoder)
                    t = time.perf_counter()
                    fn()
                    runs[label] = (fn, time.perf_counter() - t)
                except Exception as e:
                    reasons[label] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
        best = {k: float("inf") for k in runs}
        for _ in range(repeats):  # interleaved
            for name, (fn, _) in runs.items():
                best[name] = min(best[name], best_times(fn)[1])
        base = best.get("greedy")
        base_compiled = best.get("greedy compiled")
        for name in sorted(set(runs) | set(reasons)):
            row = {"decoder": name, "batch": batch, "new_tokens": new_tokens}
            if name in runs:
                ref = base_compiled if name.endswith(" compiled") else base
                row |= {"tokens_per_s": batch * new_tokens / best[name], "first_call_s": runs[name][1],
                        "vs_greedy": (ref / best[name]) if ref else None}
            else:
                row["skipped"] = reasons[name]
            rows.append(row)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def generation_report(gen: list[dict], repeats: int, decoders: list[dict]) -> list[str]:
    """The markdown of the generation section (greedy speed, then each decoder against greedy)."""
    names = [n for n in ("rizzrun", "rizzrun compiled", "transformers", "transformers static+compiled")
             if n in gen[0]["tokens_per_s"]]
    lines = [
        "## Greedy generation (tiny model, prompt %d, %d new tokens, %d torch thread, best of %d interleaved)"
        % (gen[0]["prompt_len"], gen[0]["new_tokens"], gen[0].get("threads", torch.get_num_threads()), repeats),
        "",
        "Command: `python benchmarks/run.py --only generation` (or `make bench`); the machine above.",
        "",
        "| batch | " + " | ".join(f"{n} tokens/s" for n in names) + " | rizzrun / transformers | compiled / transformers "
        "| compiled / transformers static+compiled | compiled / rizzrun eager | kernels per eager step | "
        "op floor / eager step |",
        "| ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in gen:
        t = g["tokens_per_s"]
        ratio = (lambda a, b: f"{t[a] / t[b]:.2f}×" if a in t and b in t else "—")
        lines.append(
            f"| {g['batch']} | " + " | ".join(f"{t[n]:.0f}" for n in names) + " | "
            f"{ratio('rizzrun', 'transformers')} | {ratio('rizzrun compiled', 'transformers')} | "
            f"{ratio('rizzrun compiled', 'transformers static+compiled')} | {ratio('rizzrun compiled', 'rizzrun')} | "
            f"{g['ops_per_step']} | {g['floor_fraction']:.0%} |"
        )
    lines += [
        "",
        "First call (compile + warm-up, excluded from the rates above), seconds: "
        + "; ".join(f"batch {g['batch']}: " + ", ".join(f"{k} {v:.1f}" for k, v in g.get("first_call_s", {}).items())
                    for g in gen) + ".",
    ]
    for g in gen:
        for name, why in (g.get("skipped") or {}).items():
            lines.append(f"Not measured at batch {g['batch']}: {name} ({why}).")
    lines += [
        "",
        "Rates from the process's CPU time with one torch thread (what the shared machine's other jobs do not",
        "change); wall-clock rates of the same calls are in the .json (`tokens_per_s_wall`).",
        "Same work checked before timing: every side produces identical token ids. All run in eval mode under",
        "`torch.inference_mode()`, with `min_new_tokens = max_new_tokens` and no EOS. `rizzrun compiled` is",
        "`decoder.compile=true` (rizzrun/decoders/compiled.py: the decode step as one `torch.compile` graph",
        "per batch size and cache length); `transformers static+compiled` is `generate(cache_implementation=\"static\")`",
        "with its `CompileConfig` (inductor) forced on for the CPU. Batch-1 decoding of a model this small is",
        "overhead-bound (its weights stay in cache), so the eager limit is the per-op floor: the aten ops one",
        "eager step launches times the cost of one tiny op, measured in the same run.",
        "",
    ]
    if decoders:
        batches = sorted({r["batch"] for r in decoders})
        names = sorted({r["decoder"] for r in decoders}, key=lambda n: (n.removesuffix(" compiled"), n))
        by = {(r["decoder"], r["batch"]): r for r in decoders}
        lines += [
            "### Each decoder against greedy (tiny model, prompt 32, %d new tokens, best of %d interleaved)"
            % (decoders[0]["new_tokens"], repeats),
            "",
            "Tokens/s of every `conf/decoder` option built from its own yaml (`build_decoder`, byte tokenizer), no",
            "EOS, relative to greedy in the same mode (eager rows to eager greedy, compiled rows to compiled greedy).",
            "",
            "| decoder | " + " | ".join(f"batch {b} tokens/s | vs greedy" for b in batches) + " |",
            "| --- | " + " | ".join("---: | ---:" for _ in batches) + " |",
        ]
        notes = []
        for n in names:
            cells = []
            for b in batches:
                r = by.get((n, b))
                if r is None or "skipped" in r:
                    cells.append("— | —")
                    if r is not None and b == batches[0]:
                        notes.append(f"`{n}` not measured: {r['skipped']}")
                else:
                    vs = f"{r['vs_greedy']:.2f}×" if r.get("vs_greedy") else "—"
                    cells.append(f"{r['tokens_per_s']:.0f} | {vs}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {x}" for x in notes] + ([""] if notes else [])
    return lines


def write_report(path: Path, results: dict) -> None:
    import lightning
    import transformers

    s = results["startup"]
    base = s["python -c pass"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['date']} by `make bench` (`python benchmarks/run.py --out docs/benchmarks.md`).",
        f"Machine: {results['cpu']}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU. "
        f"torch {torch.__version__}, lightning {lightning.__version__}, transformers {transformers.__version__}.",
        f"Dense fp32 matmul (2048², best of 5): **{results['gflops']:.1f} GFLOP/s** — the limit the MFU column divides by.",
        "",
        "## Start-up (best of %d, interleaved)" % results["repeats_startup"],
        "",
        "| command | seconds | vs `python -c pass` |",
        "| --- | ---: | ---: |",
    ]
    for name, sec in s.items():
        lines.append(f"| `{name}` | {sec:.3f} | {sec / base:.1f}× |")
    lines += [
        "",
        "`--help`, `list`, `show` and `validate` import neither torch, lightning nor wandb (tested).",
        "",
        "## Validation speed (best of %d, interleaved)" % results["repeats_validation"],
        "",
        f"A rejected config against the import floor of the CLI, `{VALIDATION_FLOOR}` "
        f"(target: at most {VALIDATION_TARGET}×). Warm: the composition of the same group choices and the "
        "targets' signatures are cached on disk by an earlier command (rizzrun/config/compose_cache.py, "
        "signatures.py); cold: an empty cache every time.",
        "",
        "| command | seconds | vs import floor |",
        "| --- | ---: | ---: |",
    ]
    v = results["validation"]
    floor = v[VALIDATION_FLOOR]
    for name, sec in v.items():
        lines.append(f"| `{name}` | {sec:.3f} | {sec / floor:.2f}× |")
    lines += [
        "",
        "## Training throughput (tokens/s, steady state, best of %d interleaved rounds)" % results["repeats"],
        "",
        "| model | params | batch | rizzrun runner | bare PyTorch loop | transformers Llama (sdpa) | rizzrun / bare | rizzrun / transformers | MFU rizzrun | MFU transformers | runner start-up s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    compiled = [r for r in results["training"] if "rizzrun compiled" in r["tokens_per_s"]]
    for r in results["training"]:
        t, m = r["tokens_per_s"], r["mfu"]
        lines.append(
            f"| {r['size']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {t['rizzrun']:.0f} | {t['bare']:.0f} | "
            f"{t['transformers']:.0f} | {t['rizzrun'] / t['bare']:.3f} | {t['rizzrun'] / t['transformers']:.3f} | "
            f"{m['rizzrun']:.0%} | {m['transformers']:.0%} | {r['startup_s']:.1f} |"
        )
    for r in compiled:
        t = r["tokens_per_s"]
        lines += ["", f"With `trainer.compile=true` ({r['size']}, same run, compilation excluded as warm-up): "
                      f"{t['rizzrun compiled']:.0f} tokens/s = {t['rizzrun compiled'] / t['transformers']:.3f}× "
                      f"`transformers`, {t['rizzrun compiled'] / t['rizzrun']:.3f}× eager rizzrun."]
    lines += [
        "",
        "Same work checked before timing: the first-step loss of the bare loop and of `transformers`",
        "agree to 1e-4 on the same weights and batches. MFU = (6·params + 12·layers·seq·d_model) × tokens/s",
        "over the matmul rate above. Runner start-up = wall time of the run minus its logged step times",
        "(imports, corpus and tokenization cache, model build, Lightning set-up).",
        "",
    ]
    ddp = results.get("distributed")
    if ddp:
        t = ddp["tokens_per_s"]
        one = t["rizzrun x1 (doubled batch)"]
        lines += [
            "## Data-parallel training (tiny model, 2 gloo processes on the CPU, best of %d)" % results["repeats"],
            "",
            f"The same global batch ({ddp['batch']}) trained three ways, measured in the same run:",
            "`trainer=ddp trainer.devices=2` (Lightning DDP through the `rizzrun` command), a hand-written",
            "DistributedDataParallel loop on the same model and batches (benchmarks/ddp_bench.py), and rizzrun",
            "with one process and the doubled batch.",
            "",
            "| | tokens/s | vs bare DDP loop | vs one process |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, rate in t.items():
            lines.append(f"| {name} | {rate:.0f} | {rate / t['bare ddp x2']:.3f} | {rate / one:.3f} |")
        lines += [
            "",
            "Two processes on two cores do the work of one process with two threads plus a gradient",
            "all-reduce per step, so a ratio near 1 against one process is the best this machine allows;",
            "rizzrun's own cost over the bare loop is one small all-reduce per step (the metrics summed",
            "over ranks and the signal agreement) and Lightning's loop.",
            "",
        ]
    gen = results.get("generation") or []
    if gen:
        lines += generation_report(gen, results.get("repeats_generation", 3), results.get("decoders") or [])
    mixers = results.get("mixers")
    if mixers:
        from mixers_bench import report

        lines += report(mixers) + [""]
    pref = results.get("preference")
    if pref:
        from preference_bench import report as preference_report

        lines += [preference_report(pref), ""]
    on_policy = results.get("grpo")
    if on_policy:
        from grpo_bench import report as grpo_report

        lines += [grpo_report(on_policy), ""]
    extra = results.get("notes")
    if extra:
        lines += ["## Notes", "", extra, ""]
    path.write_text("\n".join(lines))


def main() -> None:
    from rizzrun.paths import cache_root

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--cache", default=str(cache_root()))
    parser.add_argument("--notes", default=str(ROOT / "benchmarks" / "notes.md"))
    parser.add_argument("--only", choices=["mixers", "generation", "preference", "grpo"],
                        help="re-measure one section; the others come from the .json beside --out")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.only:
        results = json.loads(args.out.with_suffix(".json").read_text())
        if args.only == "mixers":
            from mixers_bench import mixers

            results["mixers"] = mixers()
        elif args.only == "preference":
            from preference_bench import preference

            results["preference"] = preference(args.repeats, args.cache)
        elif args.only == "grpo":
            from grpo_bench import grpo

            results["grpo"] = grpo(GRPO_REPEATS)
        else:
            results["repeats_generation"] = 5
            results["generation"] = generation(repeats=results["repeats_generation"])
            results["decoders"] = decoder_overheads(repeats=results["repeats_generation"])
        notes = Path(args.notes)  # the prose beside the tables follows the notes file
        results["notes"] = notes.read_text().strip() if notes.exists() else results.get("notes", "")
        write_report(args.out, results)
        (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=2, default=str))
        print(args.out.read_text())
        return

    results = {"date": dt.date.today().isoformat(), "cpu": cpu_name(), "repeats": args.repeats, "repeats_startup": 5}
    results["gflops"] = matmul_gflops()
    results["startup"] = startup(5)
    results["repeats_validation"] = 7
    results["validation"] = validation_speed(results["repeats_validation"])
    results["training"] = [training(size, args.repeats, args.cache, results["gflops"]) for size in args.sizes]
    if "tiny" in args.sizes:
        from ddp_bench import distributed_training

        overrides, steps, warmup = SIZES["tiny"]
        per_process = [o for o in overrides if not o.startswith("data.batch_size=")] + ["data.batch_size=8"]
        results["distributed"] = distributed_training(per_process, steps, warmup, args.repeats, args.cache,
                                                      rizzrun_tokens_per_s, _components)
    results["repeats_generation"] = 5
    results["generation"] = generation(repeats=results["repeats_generation"])
    results["decoders"] = decoder_overheads(repeats=results["repeats_generation"])
    from mixers_bench import mixers

    results["mixers"] = mixers()
    from preference_bench import preference

    results["preference"] = preference(args.repeats, args.cache)
    from grpo_bench import grpo

    results["grpo"] = grpo(GRPO_REPEATS)
    notes = Path(args.notes)
    results["notes"] = notes.read_text().strip() if notes.exists() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, results)
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=2, default=str))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
