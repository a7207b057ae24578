"""Config rules of `rizzrun.objectives.diversity.DiversityRegression`, with no torch import (see
rizzrun.config.specs). d_model may be null: the runner sets it from the model."""

from __future__ import annotations

RANGES = {
    "DiversityRegression": {"d_model": ((">=", 1),), "hidden": ((">=", 1),)},
}
