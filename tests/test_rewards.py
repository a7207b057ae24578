"""Reward functions and their weighted sum (issue 16, part 1): TRL's reward-function signature,
TRL's combination rule (nansum of weighted columns, unscorable rows NaN) and metric names, checked
against TRL's own `nanstd` and a hand-written reference of GRPOTrainer's combination."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from rizzrun.rewards import RewardSet, exact_match, format_match, leading_integer_match, nanstd

NAN = math.nan


def test_exact_match_by_hand():
    got = exact_match(["p"] * 4, [" 85", "85\n", "8 5", "anything"], answer=["85", 85, "85", None])
    assert got == [1.0, 1.0, 0.0, None]


def test_leading_integer_match_ignores_what_follows_as_the_task_verify_does():
    from rizzrun.data.arithmetic import verify

    prompts = ["37+48="] * 6
    completions = ["85", " 85 Sure!", "86", "Sure! 85", "", "-85"]
    got = leading_integer_match(prompts, completions, answer=[85] * 6)
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # the arithmetic task's own checker agrees on every non-negative case
    assert [float(verify(p, c)) for p, c in zip(prompts[:5], completions[:5])] == got[:5]
    assert leading_integer_match(["x"], ["-3"], answer=[-3]) == [1.0]


def test_format_match():
    assert format_match(["p"] * 4, ["85", " 85 ", "85 Sure!", ""], pattern=r"\d+") == [1.0, 1.0, 0.0, 0.0]
    assert format_match(["p"], [" 85 "], pattern=r"\d+", strip=False) == [0.0]
    with pytest.raises(ValueError, match=r"pattern='\(' is not a regular expression"):
        format_match(["p"], ["x"], pattern="(")


def test_answer_column_required_and_one_per_completion():
    with pytest.raises(ValueError, match="exact_match needs the data's `answer` column"):
        exact_match(["p"], ["x"])
    with pytest.raises(ValueError, match="2 answers for 1 completions"):
        leading_integer_match(["p"], ["1"], answer=[1, 2])


def test_nanstd_equals_trl():
    from trl.trainer.utils import nanstd as trl_nanstd

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randn(9, generator=g)
        x[torch.rand(9, generator=g) < 0.3] = NAN
        if int((~torch.isnan(x)).sum()) < 2:
            continue
        torch.testing.assert_close(nanstd(x), trl_nanstd(x))
    rows = torch.tensor([[1.0, NAN, 3.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(nanstd(rows, dim=1), torch.tensor([math.sqrt(2.0), 0.0]))


def _trl_combination(per_function: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """GRPOTrainer (TRL 1.x) `sum_then_normalize`: weighted nansum, rows with every reward NaN -> NaN."""
    rewards = (per_function * weights.unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(per_function).all(dim=1)] = NAN
    return rewards


def test_weighted_sum_as_trl_with_none_rows():
    def correct(prompts, completions, answer, **kw):
        return [None if a is None else float(c == a) for c, a in zip(completions, answer)]

    def length(prompts, completions, **kw):
        return [None if c == "" else -0.1 * len(c) for c in completions]

    rewards = RewardSet({"correct": correct, "length": length}, weights={"correct": 2.0, "length": 0.5})
    completions = ["12", "13", "", "7"]
    scores = rewards(["q"] * 4, completions, answer=["12", "12", None, "7"])
    expected_columns = torch.tensor([[1.0, -0.2], [0.0, -0.2], [NAN, NAN], [1.0, -0.1]])
    torch.testing.assert_close(scores.per_function, expected_columns, equal_nan=True)
    torch.testing.assert_close(scores.total, _trl_combination(expected_columns, torch.tensor([2.0, 0.5])),
                               equal_nan=True)
    # by hand: 2*1 - 0.1, 2*0 - 0.1, unscorable, 2*1 - 0.05
    torch.testing.assert_close(scores.total, torch.tensor([1.9, -0.1, NAN, 1.95]), equal_nan=True)
    m = RewardSet.metrics(scores)
    assert set(m) == {"rewards/correct/mean", "rewards/correct/std", "rewards/length/mean", "rewards/length/std",
                      "reward"}
    assert m["rewards/correct/mean"] == pytest.approx(2 / 3)
    assert m["rewards/correct/std"] == pytest.approx(math.sqrt(1 / 3))  # [1, 0, 1]: unbiased
    assert m["reward"] == pytest.approx((1.9 - 0.1 + 1.95) / 3)


def test_names_from_functions_and_partials_and_defaults():
    rs = RewardSet([partial(format_match, pattern=r"\d+"), leading_integer_match])
    assert rs.names == ("format_match", "leading_integer_match")
    assert rs.weights.tolist() == [1.0, 1.0]
    scores = rs(["1+1="] * 2, ["2", "2 ok"], answer=[2, 2])
    assert scores.total.tolist() == [2.0, 1.0]


@pytest.mark.parametrize("build,match", [
    (lambda: RewardSet([]), "at least one reward function"),
    (lambda: RewardSet([exact_match, exact_match]), "named twice: exact_match"),
    (lambda: RewardSet({"a": exact_match}, weights=[1.0, 2.0]), "2 weights for 1 reward functions"),
    (lambda: RewardSet({"a": exact_match}, weights={"b": 1.0}), "weights for unknown rewards: b"),
    (lambda: RewardSet({"a": exact_match}, weights={"a": float("inf")}), "weight of reward 'a' is inf"),
    (lambda: RewardSet({"a": 3}), "reward 'a' is 3, not a function"),
])
def test_bad_sets(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_function_outputs_are_named():
    short = RewardSet({"short": lambda prompts, completions, **kw: [1.0]})
    with pytest.raises(ValueError, match="reward 'short' returned 1 values for 2 completions"):
        short(["p", "p"], ["a", "b"])
    nan = RewardSet({"nan": lambda prompts, completions, **kw: [0.0, NAN]})
    with pytest.raises(ValueError, match="reward 'nan' returned nan for completion 1"):
        nan(["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        RewardSet([exact_match])(["p", "p"], ["a", "b"], answer=["a"])
