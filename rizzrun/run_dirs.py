"""Run folders that never clobber each other (torch-free).

- `claim(path, unique)`: the folder a fresh run writes into. With `unique` (the default,
  time-stamped name) it is created atomically (`os.mkdir`), and when another run took that
  name in the same second the next free `NAME-1`, `NAME-2`, ... is taken instead. A folder the
  user named (`hydra.run.dir=...`) is used as given, but never one that holds a run.
- `holds_run(path)`: whether a folder has a run's files in it (config, metrics, checkpoints);
  Hydra's own `.hydra/` and log file do not count.
- `RunLock(path)`: an exclusive `flock` on `<run>/run.lock` for as long as a process writes
  into the folder, so two processes (two resumes of one run, or a run and a resume) never
  write into one folder; the OS drops the lock when the process dies, even by SIGKILL.
"""

from __future__ import annotations

import os
from pathlib import Path

from rizzrun import layout
from rizzrun.errors import InputError, RunFolderBusy

RUN_MARKERS = (layout.CONFIG, layout.METRICS, layout.CHECKPOINTS, layout.SUMMARY)


def holds_run(path: Path) -> bool:
    path = Path(path)
    return any((path / marker).exists() for marker in RUN_MARKERS)


def refuse_taken(path: Path, key: str | None = None) -> None:
    """RunFolderBusy when `path` holds a run; `key` is how the user named the folder."""
    if holds_run(path):
        raise RunFolderBusy(f"{f'{key}={path}' if key else path}: the folder holds another run; continue that "
                            f"run with resume={path}, or give a new folder")


def claim(path: Path, unique: bool, key: str = "hydra.run.dir") -> Path:
    """The folder a fresh run may write into (see the module docstring); raises InputError
    for a named folder holding a run, or one that cannot be created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not unique:
            refuse_taken(path, key)
            path.mkdir(exist_ok=True)
            return path
        for n in range(1000):
            candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as e:  # read-only place, a file in the way, no permission, no space
        raise InputError(f"{key}={path}: cannot create the run folder ({e.strerror}: {e.filename}); "
                         "give a writable place, e.g. output_root=/tmp/runs") from None
    raise InputError(f"{key}={path}: 1000 runs of this name started in the same second; give each a name")


class RunLock:
    """`with RunLock(run_dir):` holds `<run>/run.lock`; InputError when another process holds it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / layout.LOCK
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderBusy(f"{self.path.parent}: another rizzrun process (pid {holder}) is writing into this "
                             "run folder; wait for it to end, or start a new run") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
