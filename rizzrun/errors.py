"""The error for bad user input found at run time (torch-free).

`ConfigError` (rizzrun.config.errors) is what composition and validation raise before anything
runs. `InputError` is for what only shows once a job reads its inputs: a data file that is
missing or malformed, a path that cannot be written, an option a subcommand rejects, a device
that is not there. The launcher prints it as one line, `error: <message>`, keeps the traceback
in the run folder's `error.txt`, and exits 2; a subcommand prints the line and exits 2.

The message names the key as the user types it (`data.on_bad_row=skip`, `--temperature`), the
value, and what would be valid.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user, found at run time; the message is one line that says the key,
    the value and the fix."""


class RunFolderBusy(InputError):
    """The run folder belongs to another run, or another process is writing into it; nothing
    may be written there (not even error.txt)."""


class RunEnded(Exception):
    """A run that stopped before completing, on purpose or by necessity: `status` says how
    ("stopped", "diverged"), `exit_code` is what the process exits with (128 + signal number for
    a signal, 3 for divergence), and the message is the one line that says what happened and how
    to go on."""

    def __init__(self, message: str, status: str, exit_code: int):
        super().__init__(message)
        self.status, self.exit_code = status, exit_code
