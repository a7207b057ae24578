"""Config rules of `rizzrun.decoders.dynamic_temperature.DynamicTemperature`, with no torch import
(see rizzrun.config.specs): ranges of its own knobs and t_min < t_max."""

from __future__ import annotations

from pathlib import Path

from rizzrun.config.errors import message
from rizzrun.config.specs import readable

RANGES = {
    "DynamicTemperature": {"t_min": ((">", 0),), "t_max": ((">", 0),), "k": ((">", 0),),
                           "score": ((">=", 0), ("<=", 1))},
}


def _number(value) -> bool:
    return readable(value) and isinstance(value, (int, float)) and not isinstance(value, bool)


def check(node: dict, path: str) -> list[str]:
    """t_min < t_max (every mapping interpolates between them); a head given as a path must be a
    folder (a run trained with objective=dds_head; its weights are read at the first generate)."""
    out = []
    t_min, t_max = node.get("t_min", 0.1), node.get("t_max", 1.5)
    if _number(t_min) and _number(t_max) and not t_min < t_max:
        out.append(message(f"{path}.t_min={t_min}", f"must be < {path}.t_max={t_max}",
                           f"e.g. {path}.t_min=0.1 {path}.t_max=1.5"))
    head = node.get("head")
    if readable(head) and isinstance(head, str) and not Path(head).expanduser().is_dir():
        out.append(message(f"{path}.head={head}", "no such folder",
                           "give the folder of a run trained with objective=dds_head, or null (constant score)"))
    return out
