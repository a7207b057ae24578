"""`make repro-warp` replicates: repro/warp.py from other SFT seeds (`--sft .../sft_tiny-sN --seeds 2N 2N+1
--out outputs/repro/warp-sftN --results FILE`), summarised with the first replicate (docs/results.md's
`warp` section) as the headline numbers of WARP (arXiv 2406.16768) per replicate and mean ± sd:

- SLERP of the two WARP runs vs its members (final checkpoints): reward, KL to SFT, and reward minus the
  fixed-anchor baseline's reward at the same KL (`vs base`: its trajectory, linear between checkpoints);
- LITI (eta 0.1, 0.3, 0.5) of the SLERP: `vs base`, and how many of them lie above the baseline trajectory.

Each replicate's table is read back from the markdown repro/warp.py recorded (the same numbers it printed).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def section(text: str, key: str) -> str:
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    if start not in text:
        raise SystemExit(f"no section {key!r} in the given results")
    return text[text.index(start):text.index(end)]


def points(block: str) -> dict[str, dict[str, float | None]]:
    """{model: {kl, reward, exact, vs}} of a repro/warp.py table."""
    out = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.fullmatch(r"-?\d+\.\d+", cells[1]):
            continue
        out[cells[0]] = {"kl": float(cells[1]), "reward": float(cells[4]), "exact": float(cells[5]),
                         "vs": float(cells[6]) if cells[6] else None}
    return out


def mean_or_none(values: list[float | None]) -> float | None:
    """The mean of the values inside the baseline's KL range (None: none is)."""
    inside = [v for v in values if v is not None]
    return statistics.mean(inside) if inside else None


def summary(p: dict[str, dict]) -> dict[str, float | None]:
    last = max(k.split()[-1] for k in p if k.startswith("warp s"))
    members = [v for k, v in p.items() if k.startswith("warp s") and k.endswith(last)]
    liti = [p[f"liti {e}"] for e in ("0.1", "0.3", "0.5")]
    return {
        "slerp_reward": p["slerp"]["reward"], "members_reward": statistics.mean(m["reward"] for m in members),
        "slerp_kl": p["slerp"]["kl"], "members_kl": statistics.mean(m["kl"] for m in members),
        "slerp_vs": p["slerp"]["vs"], "members_vs": mean_or_none([m["vs"] for m in members]),
        "liti_0.3_vs": p["liti 0.3"]["vs"], "liti_0.5_vs": p["liti 0.5"]["vs"],
        "liti_above": sum(1 for v in liti if v["vs"] is not None and v["vs"] > 0),
        "sft_reward": p["sft"]["reward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("replicates", nargs="+", type=Path, help="results files of the other replicates")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    blocks = [("sft_tiny-s0 (`warp` above)", section(args.results.read_text(), "warp"))]
    blocks += [(path.stem, section(path.read_text(), "warp")) for path in args.replicates]
    rows = [(name, summary(points(block))) for name, block in blocks]
    keys = ["sft_reward", "members_reward", "slerp_reward", "members_kl", "slerp_kl", "members_vs", "slerp_vs",
            "liti_0.3_vs", "liti_0.5_vs", "liti_above"]
    heads = ["SFT reward", "members' reward (final)", "SLERP reward", "members' KL", "SLERP KL",
             "members vs base", "SLERP vs base", "LITI 0.3 vs base", "LITI 0.5 vs base", "LITI above base (of 3)"]
    with record(args.results, "warp-replicates", "## WARP replicates: SLERP and LITI against their members and the "
                "baseline (arXiv 2406.16768)"):
        print(f"""`python repro/warp_replicates.py FILES` over {len(rows)} replicates of `make repro-warp` (each: its own
SFT seed of `sft_tiny`, two WARP runs and a fixed-anchor baseline run of their own seeds; the other replicates:
`python repro/warp.py --sft outputs/repro/preference/sft_tiny-sN --seeds 2N 2N+1 --out outputs/repro/warp-sftN
--results FILE`). KL: nats per completion to the SFT model; `vs base`: reward minus the baseline trajectory's
at the same KL (positive: a better reward-KL trade-off; blank: beyond the baseline's KL range, whose
run ended at a lower KL).

| replicate | {' | '.join(heads)} |
| --- |{' ---: |' * len(heads)}""")
        fmt = lambda v, k: "" if v is None else (f"{v:d}" if k == "liti_above" else f"{v:+.3f}" if "vs" in k else f"{v:.3f}")  # noqa: E731
        for name, s in rows:
            print(f"| {name} | " + " | ".join(fmt(s[k], k) for k in keys) + " |")
        means = []
        for k in keys:
            vals = [s[k] for _, s in rows if s[k] is not None]
            means.append(mean_sd([float(v) for v in vals]) if vals else "")
        print("| mean ± sd | " + " | ".join(means) + " |")
        gains = [s["slerp_reward"] - s["members_reward"] for _, s in rows]
        above = sum(s["liti_above"] for _, s in rows)
        print(f"\nLITI of the SLERP above the baseline trajectory at matched KL: {above} of {3 * len(rows)} points "
              f"(eta 0.1, 0.3, 0.5 in {len(rows)} replicates). SLERP reward minus its members' mean: "
              f"{mean_sd(gains)} (at KL {mean_sd([s['slerp_kl'] - s['members_kl'] for _, s in rows])} "
              "beside theirs).")


if __name__ == "__main__":
    main()
