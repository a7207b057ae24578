"""Merging models by weight arithmetic (`rizzrun merge`): WARP's SLERP of task vectors and LITI
(arXiv:2406.16768, stages 2 and 3), linear merging, and ParamΔ (arXiv:2504.21023).

`rizzrun.merge.weights` holds the pure functions on state dicts (`dict[str, Tensor]`);
`rizzrun.merge.command` loads run folders / Hugging Face Llama folders, checks them, and writes
the merged model as a run folder that `rizzrun eval`, `rizzrun generate` and
`model.from_pretrained=OUT` accept.

Imported lazily: importing this package does not import torch.
"""

import importlib

_EXPORTS = {
    "check_compatible": "rizzrun.merge.weights",
    "task_vector": "rizzrun.merge.weights",
    "linear": "rizzrun.merge.weights",
    "slerp": "rizzrun.merge.weights",
    "slerp_coefficients": "rizzrun.merge.weights",
    "slerp_many": "rizzrun.merge.weights",
    "liti": "rizzrun.merge.weights",
    "paramdelta": "rizzrun.merge.weights",
    "merge": "rizzrun.merge.command",
    "METHODS": "rizzrun.merge.command",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
