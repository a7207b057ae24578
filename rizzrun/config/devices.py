"""Whether this machine has a GPU, found without importing torch (the validator runs before it).

`trainer.accelerator=gpu` trains on CUDA (NVIDIA, or AMD through ROCm) or on Apple's MPS. The
check looks for what those need, and nothing else:
- NVIDIA: a GPU listed in /proc/driver/nvidia/gpus/ or a /dev/nvidiaN device file (what the
  driver creates; `nvidia-smi` on the PATH alone proves nothing, it ships without a GPU too);
- AMD ROCm: /dev/kfd, the compute device file;
- Apple silicon (MPS): macOS on arm64;
and CUDA_VISIBLE_DEVICES set to '' or '-1' hides every CUDA GPU, as torch reads it.
It can only err towards "there is one" (a driver whose device files exist while CUDA cannot
start), never refuse a GPU that torch would see.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def gpu_found(root: Path = Path("/"), environ=None, system: str | None = None, machine: str | None = None) -> str | None:
    """What shows a GPU ('/dev/nvidia0', 'Apple MPS', ...), or None when there is none.
    `root`, `environ`, `system`, `machine` replace the real ones in tests."""
    environ = os.environ if environ is None else environ
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    if system == "Darwin":
        return "Apple MPS (macOS on arm64)" if machine == "arm64" else None
    if environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    gpus = root / "proc/driver/nvidia/gpus"
    if gpus.is_dir() and any(gpus.iterdir()):
        return str(gpus)
    dev = root / "dev"
    if dev.is_dir():
        for entry in sorted(dev.iterdir()):
            if re.fullmatch(r"nvidia\d+", entry.name):
                return str(entry)
        if (dev / "kfd").exists():
            return str(dev / "kfd")
    return None


NO_GPU_LOOKED_AT = "/proc/driver/nvidia/gpus, /dev/nvidiaN, /dev/kfd; MPS needs macOS on arm64"


def accelerator_problems(trainer, launcher: str | None = None) -> list[str]:
    """`trainer.accelerator=gpu` on a machine without one, for a job launched here (`launcher`
    None or 'basic', Hydra's local launcher); a job sent elsewhere (submitit, ...) is not checked."""
    if not isinstance(trainer, dict) or trainer.get("accelerator") != "gpu" or launcher not in (None, "basic"):
        return []
    if gpu_found() is not None:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = (f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU" if visible in ("", "-1") and platform.system() != "Darwin"
           else f"this machine has no GPU (looked for {NO_GPU_LOOKED_AT})")
    return [f"trainer.accelerator=gpu: {why}; train on the CPU with trainer=cpu"]
