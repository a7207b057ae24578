"""Checkpoints as folders: `model.safetensors` (the policy model's own parameter names) +
`state.pt` (optimizer, scheduler, loop counters, RNG, data position) + `meta.json` (the step,
the data position, and the size and SHA-256 of both files; see `checkpoint_files`).

Written atomically and durably: everything goes to a hidden temp folder whose files and
directory entry are fsynced, the folder is renamed into place and the rename fsynced, and only
then is `checkpoints/latest` (a one-line text file) replaced; a crash at any point leaves the
previous checkpoint and `latest` intact, and `latest` never names a half-written folder.

`state.pt` is loaded with `torch.load(weights_only=True)` allowing only the globals the runner's
own state needs (numpy's RNG state array), so a run folder from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors.torch import load_file, save_file

from rizzrun.errors import InputError
from rizzrun.files import write_atomic
from rizzrun.layout import CHECKPOINT_OLD_PREFIX, CHECKPOINT_TMP_PREFIX, LATEST_NAME, META, STATE, WEIGHTS
from rizzrun.runner.checkpoint_files import (  # noqa: F401 - the runner imports these from here
    DIGESTED,
    FORMAT,
    checked_checkpoint,
    file_digest,
    fsync_dir,
    latest_valid_checkpoint,
    prepare_checkpoints,
    prune_checkpoints,
    remember_intact,
    remove_partial_writes,
    verify_checkpoint,
)

MODEL_PREFIX = "model."
LATEST = LATEST_NAME


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Save tensors as safetensors; tied tensors (shared storage) are stored once and named
    as aliases in the file's metadata, since safetensors refuses shared memory."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.device.type != "meta" and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Inverse of `save_weights`: aliases point at the same tensor again."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    tensors = load_file(str(path))
    for alias, name in aliases.items():
        tensors[alias] = tensors[name]
    return tensors


class FolderCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO writing a checkpoint as a folder (see module docstring).

    Lightning hands over one dict; its `state_dict` entries under `model.` (the policy) go to
    safetensors with the prefix removed, so `Llama.load_state_dict(load_weights(...))` works
    without Lightning. Everything else is pickled in `state.pt`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = dict(checkpoint)
        full = state.pop("state_dict")
        weights = {k[len(MODEL_PREFIX):]: v for k, v in full.items() if k.startswith(MODEL_PREFIX)}
        state["extra_state_dict"] = {k: v for k, v in full.items() if not k.startswith(MODEL_PREFIX)}
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{CHECKPOINT_TMP_PREFIX}{path.name}-"))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would become the checkpoint's mode
            save_weights(weights, tmp / WEIGHTS)
            torch.save(state, tmp / STATE)
            meta = {"step": checkpoint.get("global_step"), **checkpoint.get("rizzrun", {}), "format": FORMAT,
                    "files": {name: file_digest(tmp / name) for name in DIGESTED}}  # fsyncs each file
            write_atomic(tmp / META, json.dumps(meta, indent=2) + "\n")
            fsync_dir(tmp)
            if path.exists():  # the same step written again (e.g. final after periodic)
                trash = path.with_name(f"{CHECKPOINT_OLD_PREFIX}{path.name}")
                os.replace(path, trash)
                os.replace(tmp, path)
                shutil.rmtree(trash)
            else:
                os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        remember_intact(path)
        write_atomic(path.parent / LATEST, path.name + "\n")
        fsync_dir(path.parent)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        """Lightning's resume: the folder is verified, and state.pt loaded with weights_only=True
        whatever Lightning asks for (see `load_state`)."""
        path = Path(path)
        problems = verify_checkpoint(path)
        if problems:
            raise InputError(f"{problems[0]}; refusing to resume from {path.name} (latest_valid_checkpoint "
                             "picks an intact one)")
        state = load_state(path / STATE, map_location=map_location or "cpu")
        weights = load_weights(path / WEIGHTS)
        full = {MODEL_PREFIX + k: v for k, v in weights.items()}
        full.update(state.pop("extra_state_dict", {}))
        state["state_dict"] = full
        return state

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def _state_globals() -> list:
    """What the runner's state.pt holds beyond tensors and plain containers: numpy's RNG state,
    ("MT19937", uint32 array, pos, has_gauss, cached_gaussian). An array pickles as
    `_reconstruct(ndarray, ...)` + its dtype; numpy 1.x files name `numpy.core`, 2.x `numpy._core`."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
               (_reconstruct, "numpy.core.multiarray._reconstruct"),
               (_reconstruct, "numpy._core.multiarray._reconstruct")]
    return allowed


def load_state(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) of a state.pt, allowing exactly `_state_globals()`. A file
    that names any other global (a class, a function: what a pickle runs code with) is refused
    before anything in it runs: InputError naming the file and the globals."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_state_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown globals"
        except Exception:  # noqa: BLE001 - naming them is a courtesy; the refusal stands
            names = "globals it cannot name"
        raise InputError(f"{path}: holds {names}, which rizzrun does not load (torch.load weights_only=True "
                         "allows only tensors, containers and numpy's RNG state): refusing to run code from a "
                         "checkpoint; use a checkpoint that rizzrun wrote") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder `checkpoints/latest` points at, or None when the run has no checkpoint.
    Unverified; resume uses `latest_valid_checkpoint`, generate/eval/export `checked_checkpoint`."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{pointer} names {folder.name}, but {folder / WEIGHTS} is missing")
    return folder


def read_meta(checkpoint_dir: Path) -> dict:
    return json.loads((Path(checkpoint_dir) / META).read_text())
