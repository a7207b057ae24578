"""Which run folder `resume=` continues. The runner reads `cfg.resume` and its run folder; this
module only picks the folder, so that Hydra writes into it again.

Run folders are `<output_root>/<YYYY-MM-DD>/<HH-MM-SS>-<name>/` (conf/config.yaml, hydra.run.dir)
and a resumable one holds `checkpoints/latest`.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from rizzrun.config.errors import ConfigError, message

LATEST = Path("checkpoints") / "latest"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def resume_folder(cfg: DictConfig) -> Path | None:
    """The run folder to continue, or None for a fresh run (`resume=false`).

    `resume=true`: the newest `<output_root>/<date>/<time>-<name>` holding checkpoints/latest.
    `resume=PATH`: that folder, which must hold checkpoints/latest. Raises ConfigError otherwise.
    """
    resume = cfg.get("resume", False)
    if resume is False or resume is None:
        return None
    if resume is True:
        return latest_run(Path(str(cfg.output_root)).expanduser(), str(cfg.name))
    folder = Path(str(resume)).expanduser()
    if not folder.is_dir():
        raise ConfigError(message(f"resume={resume}", f"no such run folder ({folder.absolute()})",
                                  "give a run folder under output_root, or resume=true for the latest run "
                                  f"named '{cfg.name}'"))
    if not (folder / LATEST).exists():
        raise ConfigError(message(f"resume={resume}", f"{folder} holds no {LATEST}: that run saved no checkpoint",
                                  "resume a run that did (trainer.checkpoint_every sets how often they are saved)"))
    return folder.absolute()


def latest_run(output_root: Path, name: str) -> Path:
    """The newest run folder of `name` under `output_root` that saved a checkpoint."""
    run_name = re.compile(rf"\d{{2}}-\d{{2}}-\d{{2}}-{re.escape(name)}")
    found = []
    if output_root.is_dir():
        for day in output_root.iterdir():
            if not (day.is_dir() and _DAY.fullmatch(day.name)):
                continue
            for run in day.iterdir():
                if run_name.fullmatch(run.name) and (run / LATEST).exists():
                    found.append((day.name, run.name, run))
    if not found:
        raise ConfigError(message(
            "resume=true", f"no run named '{name}' with a checkpoint under {output_root}",
            f"looked for {output_root}/<date>/<time>-{name}/{LATEST.as_posix()}; start afresh with resume=false, "
            f"or give the folder: resume=PATH"))
    return max(found)[2].absolute()


def override_value(path: Path) -> str:
    """`path` as the value of a Hydra override, quoted when it has characters the grammar treats
    specially."""
    text = str(path)
    if re.fullmatch(r"[\w./:~+@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
