"""rizzrun's own config interpolations (registered once, when `rizzrun.config` is imported).

`${run:NAME}`: the newest run folder named NAME (with a checkpoint) under the config's
`output_root`, as `resume=true` finds it (rizzrun.config.resume.latest_run). A recipe that
starts from another recipe's run says so by name — `model.from_pretrained: ${run:sft_tiny}` —
and the saved config.yaml holds the folder it resolved to. No such run: a one-line error naming
the key, the name and how to make the run.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def _latest_run(name: str, *, _root_, _parent_=None) -> str:
    from rizzrun.config.resume import latest_run

    return str(latest_run(Path(str(_root_.output_root)), str(name), key=f"${{run:{name}}}",
                          fix=f"train it first: rizzrun +recipe={name} (or name a folder instead)"))


def register() -> None:
    if not OmegaConf.has_resolver("run"):
        OmegaConf.register_new_resolver("run", _latest_run)
