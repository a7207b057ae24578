"""What the repro scripts share to run rizzrun as a user would (`python -m rizzrun.cli`): progress on
stderr, one run or pipeline into a folder of its own (a completed one reused, a stopped one resumed), and
the finished `sft_tiny` runs `make repro-preference` leaves for the methods that start from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFERENCE = ROOT / "outputs" / "repro" / "preference"  # repro-preference's runs (sft_tiny-s0, -s1, -s2)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def status(folder: Path) -> str | None:
    """summary.json's status of the run in `folder` (None: no run there yet)."""
    done = Path(folder) / "summary.json"
    return json.loads(done.read_text()).get("status") if done.exists() else None


def run_into(args: list[str], folder: Path, common: list[str]) -> Path:
    """`rizzrun ARGS COMMON` into `folder`: reused when completed, resumed when it stopped, else started."""
    state = status(folder)
    if state != "completed":
        where = [f"resume={folder}"] if state is not None else [f"hydra.run.dir={folder}"]
        cmd = [sys.executable, "-m", "rizzrun.cli", *args, *common, *where]
        log("$ rizzrun", " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


def finished_sft(seed: int) -> Path | None:
    """repro-preference's completed sft_tiny run of `seed`, if there is one."""
    folder = PREFERENCE / f"sft_tiny-s{seed}"
    return folder if status(folder) == "completed" else None
