"""The number a finished job is judged by: its return value, or the value at a dotted key of it."""

import math
from collections.abc import Mapping
from typing import Any


def objective_value(job_return: Any, key: str) -> tuple[float | None, str]:
    """(the objective of a Hydra JobReturn, or None; why it is None). A failed job, a result
    without `key`, None, a non-number and a NaN/inf all give None: the trial failed."""
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.FAILED:
        error = job_return._return_value  # reading .return_value would re-raise it
        return None, f"the job raised {type(error).__name__}: {error}"
    return objective_of(job_return.return_value, key)


def objective_of(result: Any, key: str) -> tuple[float | None, str]:
    """(the objective of a job's result, or None; why it is None)."""
    value = result
    if isinstance(result, Mapping):
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                keys = (", ".join(sorted(map(str, value))) or "no keys") if isinstance(value, Mapping) \
                    else f"a {type(value).__name__}"
                return None, f"its result has no '{key}' (at '{part}': {keys})"
            value = value[part]
    if value is None:
        return None, "it returned no result (a failed job)" if result is None else f"its '{key}' is null"
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        return None, f"its result is a {type(value).__name__}, not a number"
    number = float(value)
    if not math.isfinite(number):
        return None, f"its objective is {number}"
    return number, ""
