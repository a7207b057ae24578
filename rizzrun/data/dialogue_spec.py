"""Config rules of `rizzrun.data.dialogue` (DialogueSFT, DialogueContexts), with no torch import
(see rizzrun.config.specs)."""

from __future__ import annotations

_EXAMPLES = {"n_train": ((">=", 1),), "n_val": ((">=", 0),), "problem_seed": ((">=", 0),),
             "batch_size": ((">=", 1),)}
RANGES = {"DialogueSFT": dict(_EXAMPLES), "DialogueContexts": dict(_EXAMPLES)}
