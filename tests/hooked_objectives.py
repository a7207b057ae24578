"""A GRPO whose optional on-policy hooks record what the runner does with them (tests/test_on_policy_runner.py)."""

from __future__ import annotations

import torch

from rizzrun.objectives.grpo import GRPO
from rizzrun.rollouts.sample import sample_rollout


class HookedGRPO(GRPO):
    """`rollout`: the default rollout, made by the hook (counted, and the policy's mode seen);
    `after_step`: counts optimizer steps and keeps a running sum of the policy's first weight
    (the kind of state WARP's EMA anchor is), saved with the objective's state_dict."""

    batch_kind = "prompts"

    def __init__(self, **settings):
        super().__init__(**settings)
        self.rollouts_made, self.after_steps, self.weight_sum = 0, 0, 0.0
        self.modes: list[bool] = []

    def rollout(self, model, decoder, prompts, score, eos_id, **extra):
        self.rollouts_made += 1
        self.modes.append(torch.is_grad_enabled())
        return score(sample_rollout(model, decoder, prompts, self.num_generations, eos_id))

    def after_step(self, model) -> None:
        self.after_steps += 1
        self.weight_sum += float(next(model.parameters()).detach().double().sum())

    def state_dict(self) -> dict:
        return {"after_steps": self.after_steps, "weight_sum": self.weight_sum}

    def load_state_dict(self, state: dict) -> None:
        self.after_steps, self.weight_sum = state.get("after_steps", 0), state.get("weight_sum", 0.0)
