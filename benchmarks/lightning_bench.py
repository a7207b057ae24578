"""Lightning Attention-2 (arXiv 2401.04658) speed: forward + backward time against sequence length.

CPU (always): rizzrun's chunk form vs its naive O(T^2) form vs torch's causal SDPA, B1 H4 D64 fp32,
T = 1K, 2K, 4K, 8K; a markdown table with each method's T_max / T_min time ratio (linear growth
gives T_max / T_min, quadratic its square).
GPU (when CUDA is present; spec section 8): B8 H32 D128 T16K bf16, the Triton kernels vs fla's
`chunk_simple_gla` (if installed) vs SDPA (flash attention).

    python benchmarks/lightning_bench.py [--lengths 1024 2048 4096 8192] [--naive-max 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rizzrun.kernels.lightning import lightning_attn, lightning_decay


def _time(fn, repeats, sync=lambda: None):
    """Median seconds of fn() (forward + backward) over `repeats` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cases(b, t, h, d, dtype, device, with_fla=False):
    """name -> closure running forward + backward on fresh leaf inputs (B, T, H, D) / (B, H, T, D)."""
    g = torch.tensor(lightning_decay(h, 0, 2), device=device)
    q, k, v = (torch.randn(b, t, h, d, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    do = torch.randn(b, t, h, d, device=device, dtype=dtype)
    qs, ks, vs = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
    dos = do.transpose(1, 2).contiguous()

    def lightning(impl):
        def run():
            o, _ = lightning_attn(q, k, v, g, impl=impl)
            o.backward(do)
        return run

    def sdpa():
        F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).backward(dos)

    cases = {}
    if device == "cpu":
        cases.update(chunk=lightning("chunk"), naive=lightning("naive"))
    else:
        cases["triton"] = lightning("triton")
    if with_fla:
        from fla.ops.simple_gla import chunk_simple_gla

        g_gamma = g.to(torch.float32)  # constant per-head log gate, as fla's chunk_lightning_attn passes

        def fla():
            o, _ = chunk_simple_gla(q, k, v, g_gamma=g_gamma, scale=1.0)
            o.backward(do)
        cases["fla chunk_simple_gla"] = fla
    cases["sdpa causal"] = sdpa
    return cases


def cpu_table(lengths, naive_max, repeats):
    rows = {}
    for t in lengths:
        for name, fn in _cases(1, t, 4, 64, torch.float32, "cpu").items():
            if name == "naive" and t > naive_max:
                continue
            rows.setdefault(name, {})[t] = _time(fn, repeats)
            print(f"  T={t} {name}: {rows[name][t] * 1e3:.1f} ms", flush=True)
    lo, hi = min(lengths), max(lengths)
    head = "| method | " + " | ".join(f"T={t}" for t in lengths) + f" | T={hi}/T={lo} |"
    lines = [head, "|" + "---|" * (len(lengths) + 2)]
    for name, by_t in rows.items():
        cells = [f"{by_t[t] * 1e3:.1f} ms" if t in by_t else "—" for t in lengths]
        ratio = f"{by_t[hi] / by_t[lo]:.1f}x" if hi in by_t and lo in by_t else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def gpu_table(repeats):
    try:
        import fla.ops.simple_gla  # noqa: F401
        with_fla = True
    except Exception as err:  # noqa: BLE001 - report any import failure and go on without fla
        print(f"fla not compared: {type(err).__name__}: {err}")
        with_fla = False
    b, t, h, d = 8, 16384, 32, 128
    lines = [f"GPU {torch.cuda.get_device_name()}, B{b} H{h} D{d} T{t} bf16, forward + backward",
             "", "| method | ms |", "|---|---|"]
    for name, fn in _cases(b, t, h, d, torch.bfloat16, "cuda", with_fla).items():
        lines.append(f"| {name} | {_time(fn, repeats, torch.cuda.synchronize) * 1e3:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--naive-max", type=int, default=8192, help="skip the naive form above this T")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cpu", action="store_true")
    args = parser.parse_args()
    if not args.no_cpu:
        print(f"CPU, {torch.get_num_threads()} threads, B1 H4 D64 fp32, forward + backward (median of {args.repeats})")
        print(cpu_table(args.lengths, args.naive_max, args.repeats))
    if torch.cuda.is_available():
        print(gpu_table(args.repeats))


if __name__ == "__main__":
    main()
