"""Checkpoint folders on disk, torch-free: their digests, whether one is intact, which one to
load, pruning, and the clean-up after a crashed write. `rizzrun.runner.checkpoint` writes and
loads them; the CLI checks a run's checkpoint here before it imports torch.

A checkpoint folder's `meta.json` records, beside the step, the size and SHA-256 of each file:

    {"step": 60, "data_position": 60, "format": 2,
     "files": {"model.safetensors": {"bytes": 364312, "sha256": "9f2c..."},
               "state.pt":          {"bytes": 754278, "sha256": "41be..."}}}

A folder is intact when both files are there with those sizes and digests. A folder written
before digests existed (no "format"/"files") is accepted with a warning after the checks its
files allow without a digest: the safetensors header must account for the file's exact size
(a truncated file fails) and every member of state.pt's zip archive must match its CRC-32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import zipfile
from pathlib import Path

from rizzrun.errors import InputError
from rizzrun.layout import (
    CHECKPOINT_OLD_PREFIX,
    CHECKPOINT_TMP_PREFIX,
    CHECKPOINTS,
    LATEST_NAME,
    LATEST_TMP_GLOB,
    META,
    STATE,
    WEIGHTS,
    checkpoints_dir,
    step_of,
)

FORMAT = 2  # meta.json "format": 2 = sizes and SHA-256 digests under "files"
DIGESTED = (WEIGHTS, STATE)
_CHUNK = 1 << 20

log = logging.getLogger("rizzrun")

# Folders already verified in this process, keyed by their path, with the (size, mtime, inode) of
# each file at the time: pruning after every save would otherwise re-hash every kept checkpoint.
_verified: dict[Path, tuple[tuple, list[str]]] = {}


def file_digest(path: Path) -> dict:
    """{"bytes": size, "sha256": hex} of a file, read in 1 MiB chunks; the file is fsynced first,
    so the digest is of what is on disk."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha.hexdigest()}


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX: the directory itself is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_checkpoint(folder: Path) -> list[str]:
    """The problems of one checkpoint folder, each naming the file: missing, truncated or resized
    (size differs from meta.json's), corrupted (SHA-256 differs), meta.json unreadable. [] when
    it is intact. Results are remembered for files whose size, mtime and inode are unchanged."""
    folder = Path(folder)
    key = _signature(folder)
    cached = _verified.get(folder)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    problems = _verify(folder)
    _verified[folder] = (key, problems)
    return list(problems)


def remember_intact(folder: Path) -> None:
    """Record a folder just written (its digests computed from its files) as intact."""
    _verified[Path(folder)] = (_signature(Path(folder)), [])


def _signature(folder: Path) -> tuple:
    out = []
    for name in (META, *DIGESTED):
        try:
            st = (folder / name).stat()
            out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((name, None))
    return tuple(out)


def _verify(folder: Path) -> list[str]:
    if not folder.is_dir():
        return [f"{folder}: no such checkpoint folder"]
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return [f"{folder / META}: missing"]
    except (OSError, ValueError) as e:
        return [f"{folder / META}: unreadable ({e})"]
    files = meta.get("files")
    if files is None:
        return _verify_undigested(folder)
    if not isinstance(files, dict) or not all(isinstance(files.get(n), dict) for n in DIGESTED):
        return [f"{folder / META}: unreadable ('files' does not list {' and '.join(DIGESTED)})"]
    problems = []
    for name in DIGESTED:
        path, want = folder / name, files[name]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        size = path.stat().st_size
        if size != want.get("bytes"):
            how = "truncated" if isinstance(want.get("bytes"), int) and size < want["bytes"] else "size mismatch"
            problems.append(f"{path}: {how} ({size} bytes, meta.json records {want.get('bytes')})")
        elif file_digest(path)["sha256"] != want.get("sha256"):
            problems.append(f"{path}: digest mismatch (corrupted: its SHA-256 differs from meta.json's)")
    return problems


def _verify_undigested(folder: Path) -> list[str]:
    """A folder from before digests: what its files can show without one (see module docstring)."""
    problems = []
    for name, check in ((WEIGHTS, _safetensors_extent_problem), (STATE, _zip_crc_problem)):
        path = folder / name
        problem = f"{path}: missing" if not path.is_file() else check(path)
        if problem:
            problems.append(problem)
    if not problems:
        log.warning("%s: written before rizzrun recorded digests in meta.json; checked its sizes and "
                    "state.pt's CRCs only, a flipped weight would go unnoticed", folder)
    return problems


def _safetensors_extent_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if 8 + n > size:
                raise ValueError
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, struct.error):
        return f"{path}: unreadable (not a safetensors file, or its header is cut off)"
    if 8 + n + end != size:
        how = "truncated" if size < 8 + n + end else "size mismatch"
        return f"{path}: {how} ({size} bytes, its header needs {8 + n + end})"
    return None


def _zip_crc_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 - a damaged archive fails in many ways (BadZipFile, EOFError, ...)
        return f"{path}: unreadable or truncated ({type(e).__name__}: {e})"
    return f"{path}: corrupted (member {bad} fails its CRC-32)" if bad else None


# --- choosing a checkpoint ----------------------------------------------------------------------

def step_folders(directory: Path) -> list[Path]:
    """The `step-N` folders of a checkpoints/ folder, newest (highest step number) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: (step_of(p), p.name), reverse=True)


def named_by_latest(directory: Path) -> tuple[Path | None, list[str]]:
    """The folder `checkpoints/latest` names (it may not exist) and the problem with the pointer
    itself, if any (missing, unreadable, not naming a step-N folder)."""
    pointer = Path(directory) / LATEST_NAME
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None, [f"{pointer}: missing"]
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{pointer}: unreadable ({e})"]
    if step_of(name) is None or Path(name).name != name:
        return None, [f"{pointer}: names {name!r}, not a step-NNNNNN folder"]
    return Path(directory) / name, []


def latest_valid_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The checkpoint a resume loads: the folder `checkpoints/latest` names when it is intact,
    else the intact folder with the highest step number; None when there is none. Also returns
    every problem found on the way, each naming the file (for the log: what was skipped and why).
    A run with no checkpoints/ folder, or an empty one, gives (None, [])."""
    directory = checkpoints_dir(run_dir)
    folders = step_folders(directory)
    named, problems = named_by_latest(directory)
    if named is None and not folders and not (directory / LATEST_NAME).exists():
        return None, []
    if named is not None:
        found = verify_checkpoint(named)
        if not found:
            return named, problems
        problems += found
    for folder in folders:
        if folder == named:
            continue
        found = verify_checkpoint(folder)
        if not found:
            return folder, problems
        problems += found
    return None, problems


def prepare_checkpoints(run_dir: Path, resume: str | None) -> Path | None:
    """What the runner calls when it starts in `run_dir` (holding the run lock): clean up after a
    crashed checkpoint write (`remove_partial_writes`), then, when resuming (`resume`: the user's
    value, e.g. "true" or a path; None for a fresh run), pick the checkpoint to continue from
    (`latest_valid_checkpoint`). Every clean-up action and every damaged checkpoint skipped is
    logged as a warning naming the file. Raises InputError when there is nothing to resume from."""
    for line in remove_partial_writes(checkpoints_dir(run_dir)):
        log.warning("%s", line)
    if resume is None:
        return None
    folder, problems = latest_valid_checkpoint(run_dir)
    for problem in problems:
        log.warning("checkpoint skipped: %s", problem)
    if folder is None and not problems:
        raise InputError(f"resume={resume}: {checkpoints_dir(run_dir) / LATEST_NAME} does not exist; resume needs "
                         "a run folder that saved a checkpoint (trainer.checkpoint_every)")
    if folder is None:
        raise InputError(f"resume={resume}: no intact checkpoint in {checkpoints_dir(run_dir)} ({problems[0]}"
                         f"{f'; {len(problems) - 1} more' if len(problems) > 1 else ''}); start afresh with "
                         "resume=false in a new folder")
    if problems:
        log.warning("resuming from %s instead", folder)
    return folder


def checked_checkpoint(run_dir: Path, name: str | None = None) -> Path:
    """The checkpoint `generate`, `eval` and `export` load: `name` (`--checkpoint`: a step-N folder
    name or a step number) or else the one `checkpoints/latest` names, verified. Raises InputError,
    one line naming the file and what is wrong, and where an intact checkpoint is left; these
    commands never fall back on their own (a resume does: `latest_valid_checkpoint`)."""
    run_dir = Path(run_dir)
    directory = checkpoints_dir(run_dir)
    if name is not None:
        folder = directory / (f"step-{int(name):06d}" if str(name).isdigit() else str(name))
        if step_of(folder) is None or not folder.is_dir() or Path(str(name)).name != str(name):
            have = ", ".join(p.name for p in step_folders(directory)) or "(none)"
            raise InputError(f"--checkpoint {name}: no such checkpoint in {directory}; checkpoints: {have}")
    else:
        folder, pointer_problems = named_by_latest(directory)
        if folder is None and not (directory / LATEST_NAME).exists():
            raise InputError(f"{run_dir}: holds no {CHECKPOINTS}/{LATEST_NAME}: the run saved no checkpoint (yet); "
                             "train longer than trainer.checkpoint_every steps, or pick another run")
        if folder is None:
            have = ", ".join(p.name for p in step_folders(directory)) or "(none)"
            raise InputError(f"{pointer_problems[0]}; pick a checkpoint with --checkpoint; checkpoints: {have}")
    problems = verify_checkpoint(folder)
    if not problems:
        return folder
    more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
    fallback, _ = latest_valid_checkpoint(run_dir)
    if fallback is not None and fallback != folder:
        hint = (f"the newest intact checkpoint is {fallback.name} (rizzrun resume={run_dir} falls back to it); "
                f"pass --checkpoint {fallback.name} to use it here")
    else:
        hint = f"no intact checkpoint is left in {directory}"
    raise InputError(f"{problems[0]}{more}; refusing to load it; {hint}")


# --- pruning and clean-up ------------------------------------------------------------------------

def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """Delete checkpoint folders, keeping the `keep` intact ones with the highest step numbers
    and, always, the one `latest` names (intact or not). Folders that fail verification are
    deleted too, with a warning naming the problem. Returns the folders deleted."""
    if keep < 1:
        raise ValueError(f"keep={keep}: out of range; allowed: >= 1")
    named, _ = named_by_latest(directory)
    kept, removed = 0, []
    for folder in step_folders(directory):
        if folder == named:
            continue
        problems = verify_checkpoint(folder)
        if not problems and kept < keep:
            kept += 1
            continue
        if problems:
            log.warning("removing checkpoint %s: %s", folder.name, "; ".join(problems))
        shutil.rmtree(folder, ignore_errors=True)
        _verified.pop(folder, None)
        removed.append(folder)
    return removed


def remove_partial_writes(directory: Path) -> list[str]:
    """Clean up after a write that a crash interrupted, at the start of the next run in the
    folder: removes the temp folders (`.tmp-step-*`) and the `latest` pointer's temp files
    (`.latest.*.tmp`); an `.old-step-N` (the previous copy of a step being written again) is put
    back when `step-N` is gone, else removed. Returns one line per action, for the log."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.startswith(CHECKPOINT_OLD_PREFIX) and step_of(name[len(CHECKPOINT_OLD_PREFIX):]) is not None:
            target = directory / name[len(CHECKPOINT_OLD_PREFIX):]
            if not target.exists():
                os.replace(path, target)
                done.append(f"restored {target} from {path.name} (a rewrite of it was interrupted)")
                continue
        elif not (name.startswith(CHECKPOINT_TMP_PREFIX) or path.match(LATEST_TMP_GLOB)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        done.append(f"removed {path} (left by an interrupted checkpoint write)")
    if done:
        fsync_dir(directory)
    return done
