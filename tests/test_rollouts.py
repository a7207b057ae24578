"""rizzrun.rollouts (issue 16) and the `prompts` batch kind (rizzrun.data.prompts, ArithmeticPrompts),
against docs/contracts.md "Batch kinds" (prompts) and "Rollouts":

- completion_logps == each row run alone without padding (prompt ++ completion, plain forward,
  log_softmax(logits / T), gather), on rizzrun's Llama and RWKV, values and gradients;
- sample_rollout == decoder.generate on each prompt alone (greedy), on a model whose next token is
  fixed by hand (EOS where we put it) and on a tiny Llama (left padding);
- score_rollout == RewardSet on texts written by hand; rollout_metrics == statistics by hand
  (and where it departs from TRL 1.16's `_generate_and_score_completions`);
- repeat_blocks == an independent simulation of mu optimizer steps per block of micro-batches;
- PromptData / ArithmeticPrompts: EOS first, left padding, row ids, exact resume, columns, rewards,
  the same problems as ArithmeticSFT.
"""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
import torch
from torch import nn

from rizzrun.data.arithmetic import ArithmeticPrompts, ArithmeticSFT, is_held_out
from rizzrun.data.prompts import PromptData
from rizzrun.decoders.greedy import Greedy
from rizzrun.decoders.sample import Sample
from rizzrun.models.llama import Llama
from rizzrun.models.rwkv import RWKV
from rizzrun.rewards.combine import RewardSet
from rizzrun.rewards.verifiable import leading_integer_match
from rizzrun.rollouts import (completion_logps, completion_texts, repeat_blocks, rollout_metrics, sample_rollout,
                              score_rollout)
from rizzrun.rollouts.schedule import is_generation_step
from rizzrun.tokenizers.byte import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

V = 23
EOS = 22


# ---- models ---------------------------------------------------------------------------------------

def tiny_llama(seed: int = 0) -> Llama:
    """Large weights: logits far apart (no greedy near-ties for rounding to flip), padding visible."""
    torch.manual_seed(seed)
    return Llama(V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=32, rope_theta=500.0,
                 init_std=0.3).eval()


def tiny_rwkv(seed: int = 0) -> RWKV:
    """Noise on every parameter (the code init zeroes the output projections)."""
    torch.manual_seed(seed)
    model = RWKV(V, d_model=16, n_layer=2, max_seq_len=64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


MODELS = {"llama": tiny_llama, "rwkv": tiny_rwkv}


class Chain(nn.Module):
    """A model whose next token is fixed by hand: logits depend only on the token just read,
    10 for NEXT[token], 0 elsewhere. Has the interface ModelStepper calls (init_cache, step) and
    records the train/eval mode of every call."""

    V, EOS = 8, 7
    # 1 -> 2 -> 3 -> EOS; 4 -> 5 -> 6 -> 4 (never EOS); 0 (pad) -> 1; EOS -> 1
    NEXT = {0: 1, 1: 2, 2: 3, 3: 7, 4: 5, 5: 6, 6: 4, 7: 1}

    def __init__(self):
        super().__init__()
        table = torch.zeros(self.V, self.V)
        for a, b in self.NEXT.items():
            table[a, b] = 10.0
        self.table = nn.Parameter(table)
        self.modes: list[bool] = []

    def forward(self, input_ids, key_padding_mask=None):
        self.modes.append(self.training)
        return self.table[input_ids]

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None, **state_options):
        return {}

    def step(self, input_ids, cache, key_padding_mask=None, return_hidden=False):
        self.modes.append(self.training)
        return self.table[input_ids]


# ---- helpers ----------------------------------------------------------------------------------------

def prompts_batch(prompts: list[list[int]], rows=None) -> dict:
    """A `prompts` batch built by hand: left-padded with 0."""
    P = max(map(len, prompts))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (P - len(p)) + [True] * len(p) for p in prompts])
    row = torch.tensor(list(range(len(prompts))) if rows is None else rows)
    return {"prompt_ids": ids, "prompt_mask": mask, "row": row}


def hand_rollout(prompts: list[list[int]], completions: list[list[int]], temperature: float = 1.0) -> dict:
    """A rollout built by hand: left-padded prompts ++ right-padded completions (pad 0)."""
    P, C = max(map(len, prompts)), max(map(len, completions))
    ids, mask, cmask = [], [], []
    for p, c in zip(prompts, completions):
        ids.append([0] * (P - len(p)) + p + c + [0] * (C - len(c)))
        mask.append([False] * (P - len(p)) + [True] * (len(p) + len(c)) + [False] * (C - len(c)))
        cmask.append([True] * len(c) + [False] * (C - len(c)))
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
            "completion_mask": torch.tensor(cmask), "temperature": torch.tensor(temperature)}


def alone_logps(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log p(completion | prompt) token by token, the row run alone with no padding at all."""
    seq = torch.tensor([prompt + completion])
    logits = model(seq)[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def check_rollout_invariants(r: dict, batch: dict, G: int, eos: int) -> None:
    """What every rollout satisfies (contracts "Rollouts"), checked position by position."""
    B, P = batch["prompt_ids"].shape
    N, C = r["completion_mask"].shape
    assert N == B * G and r["input_ids"].shape == (N, P + C) and r["attention_mask"].shape == (N, P + C)
    assert r["input_ids"].dtype == torch.long and r["attention_mask"].dtype == torch.bool
    assert r["group"].tolist() == [b for b in range(B) for _ in range(G)]
    assert r["row"].tolist() == [int(x) for x in batch["row"] for _ in range(G)]
    for n in range(N):
        b = n // G
        assert r["input_ids"][n, :P].tolist() == batch["prompt_ids"][b].tolist()
        assert r["attention_mask"][n, :P].tolist() == batch["prompt_mask"][b].tolist()
        assert r["attention_mask"][n, P:].tolist() == r["completion_mask"][n].tolist()
        comp = r["input_ids"][n, P:].tolist()
        first = comp.index(eos) if eos in comp else None
        want = C if first is None else first + 1
        assert r["completion_mask"][n].tolist() == [True] * want + [False] * (C - want)
        assert comp[want:] == [0] * (C - want)
        assert bool(r["truncated"][n]) == (first is None)


# ---- 1. completion_logps ----------------------------------------------------------------------------

PROMPTS_UNEQUAL = [[5, 6, 7], [1, 2, 3, 4, 5], [9, 8]]
COMPLETIONS_UNEQUAL = [[3, 4, EOS], [7], [2, 11, 2, 13]]  # EOS early, EOS first, no EOS (truncated)
PROMPTS_EQUAL = [[5, 6, 7], [1, 2, 3]]
COMPLETIONS_EQUAL = [[3, 4, EOS], [7, 8]]


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("case", ["left-padded", "unpadded"])
def test_completion_logps_equal_each_row_alone(arch, case):
    model = MODELS[arch]()
    prompts, completions = ((PROMPTS_UNEQUAL, COMPLETIONS_UNEQUAL) if case == "left-padded"
                            else (PROMPTS_EQUAL, COMPLETIONS_EQUAL))
    rollout = hand_rollout(prompts, completions)
    with torch.no_grad():
        got = completion_logps(model, rollout)
        assert got.dtype == torch.float32 and got.shape == rollout["completion_mask"].shape
        for i, (p, c) in enumerate(zip(prompts, completions)):
            torch.testing.assert_close(got[i, :len(c)], alone_logps(model, p, c), atol=2e-5, rtol=1e-5)
            assert got[i, len(c):].tolist() == [0.0] * (got.shape[1] - len(c))  # exactly 0 off the mask
            assert bool((got[i, :len(c)] < 0).all())


@pytest.mark.parametrize("arch", list(MODELS))
def test_completion_logps_temperature(arch):
    model = MODELS[arch]()
    rollout = hand_rollout(PROMPTS_UNEQUAL, COMPLETIONS_UNEQUAL, temperature=0.5)
    with torch.no_grad():
        default = completion_logps(model, rollout)  # the rollout's own temperature
        given = completion_logps(model, rollout, temperature=1.7)  # an explicit one wins
        plain = completion_logps(model, {**rollout, "temperature": torch.tensor(1.0)})
        for i, (p, c) in enumerate(zip(PROMPTS_UNEQUAL, COMPLETIONS_UNEQUAL)):
            torch.testing.assert_close(default[i, :len(c)], alone_logps(model, p, c, 0.5), atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(given[i, :len(c)], alone_logps(model, p, c, 1.7), atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(plain[i, :len(c)], alone_logps(model, p, c, 1.0), atol=2e-5, rtol=1e-5)
        assert not torch.allclose(default, plain)
        for bad in (0.0, -1.0):
            with pytest.raises(ValueError, match="temperature"):
                completion_logps(model, rollout, temperature=bad)


@pytest.mark.parametrize("arch", list(MODELS))
def test_completion_logps_gradients_equal_each_row_alone(arch):
    model = MODELS[arch]()
    params = [p for p in model.parameters() if p.requires_grad]
    rollout = hand_rollout(PROMPTS_UNEQUAL, COMPLETIONS_UNEQUAL, temperature=0.8)
    w = torch.randn(rollout["completion_mask"].shape, generator=torch.Generator().manual_seed(3))
    got = completion_logps(model, rollout)
    assert got.requires_grad
    grads = torch.autograd.grad((got * w).sum(), params)
    ref = sum((alone_logps(model, p, c, 0.8) * w[i, :len(c)]).sum()
              for i, (p, c) in enumerate(zip(PROMPTS_UNEQUAL, COMPLETIONS_UNEQUAL)))
    want = torch.autograd.grad(ref, params)
    for g, r in zip(grads, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, atol=2e-5, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in grads)


def test_completion_logps_needs_a_prompt():
    r = hand_rollout([[1]], [[2]])
    with pytest.raises(ValueError, match="no prompt"):
        completion_logps(tiny_llama(), {**r, "input_ids": r["input_ids"][:, 1:]})


# ---- 2. sample_rollout ------------------------------------------------------------------------------

# Chain prompts and their completions by hand (NEXT of the last prompt token, and on).
CHAIN_PROMPTS = [[4, 1], [2], [6, 3], [5]]
CHAIN_EXPECTED = {  # max_new_tokens -> (completions, truncated)
    5: ([[2, 3, 7], [3, 7], [7], [6, 4, 5, 6, 4]], [False, False, False, True]),
    3: ([[2, 3, 7], [3, 7], [7], [6, 4, 5]], [False, False, False, True]),  # EOS at the last token: not truncated
    2: ([[2, 3], [3, 7], [7], [6, 4]], [True, False, False, True]),
}


@pytest.mark.parametrize("max_new", [5, 3, 2])
@pytest.mark.parametrize("G", [1, 3])
def test_sample_rollout_by_hand(max_new, G):
    model = Chain()
    batch = prompts_batch(CHAIN_PROMPTS, rows=[10, 3, 7, 0])
    r = sample_rollout(model, Greedy(max_new_tokens=max_new), batch, num_generations=G, eos_id=Chain.EOS)
    check_rollout_invariants(r, batch, G, Chain.EOS)
    completions, truncated = CHAIN_EXPECTED[max_new]
    C = max_new
    assert r["completion_mask"].shape == (len(CHAIN_PROMPTS) * G, C)
    P = batch["prompt_ids"].shape[1]
    for n in range(len(CHAIN_PROMPTS) * G):
        want = completions[n // G]
        assert r["input_ids"][n].tolist() == batch["prompt_ids"][n // G].tolist() + want + [0] * (C - len(want))
        assert r["attention_mask"][n].tolist() == (batch["prompt_mask"][n // G].tolist()
                                                   + [True] * len(want) + [False] * (C - len(want)))
        assert r["completion_mask"][n].sum() == len(want)
        assert bool(r["truncated"][n]) == truncated[n // G]
        assert r["input_ids"][n, P:].tolist()[:len(want)] == want
    assert r["row"].tolist() == [x for x in [10, 3, 7, 0] for _ in range(G)]
    assert r["group"].tolist() == [b for b in range(4) for _ in range(G)]
    assert r["temperature"].dtype == torch.float32 and float(r["temperature"]) == 1.0
    assert r["completion_mask"].dtype == torch.bool and r["truncated"].dtype == torch.bool


def test_sample_rollout_stops_when_every_row_ended():
    """Without the never-ending prompt, C is the longest completion (3), not max_new_tokens."""
    batch = prompts_batch(CHAIN_PROMPTS[:3])
    r = sample_rollout(Chain(), Greedy(max_new_tokens=6), batch, num_generations=2, eos_id=Chain.EOS)
    check_rollout_invariants(r, batch, 2, Chain.EOS)
    assert r["completion_mask"].shape == (6, 3)
    assert r["completion_mask"].sum(dim=1).tolist() == [3, 3, 2, 2, 1, 1]
    assert not bool(r["truncated"].any())


@pytest.mark.parametrize("training", [True, False])
def test_sample_rollout_generates_in_eval_mode_and_restores_the_mode(training):
    model = Chain().train(training)
    sample_rollout(model, Greedy(max_new_tokens=4), prompts_batch(CHAIN_PROMPTS), 2, eos_id=Chain.EOS)
    assert model.training is training
    assert model.modes and not any(model.modes)  # every forward of the decoder ran in eval mode


class FixedDecoder:
    """Any decoder: returns fixed tokens after the prompt, with junk after EOS (not pad-filled), and
    records what it was given."""

    do_sample, temperature = True, 0.3

    def __init__(self, tokens):
        self.tokens, self.calls = torch.tensor(tokens), []

    def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
                 pad_token_id=None):
        self.calls.append(dict(ids=prompt_ids.clone(), mask=attention_mask.clone(), eos=eos_token_id,
                               pad=pad_token_id))
        return torch.cat([prompt_ids, self.tokens], dim=1)


def test_sample_rollout_any_decoder_masks_after_the_first_eos():
    batch = prompts_batch([[4, 1, 1], [2]])
    # rows: EOS at 1 then junk (incl. a second EOS); no EOS; EOS first; EOS last
    dec = FixedDecoder([[3, 7, 5, 7], [5, 5, 5, 5], [7, 3, 3, 3], [1, 2, 3, 7]])
    r = sample_rollout(Chain(), dec, batch, num_generations=2, eos_id=7)
    check_rollout_invariants(r, batch, 2, 7)
    P = 3
    assert r["input_ids"][:, P:].tolist() == [[3, 7, 0, 0], [5, 5, 5, 5], [7, 0, 0, 0], [1, 2, 3, 7]]
    assert r["completion_mask"].sum(1).tolist() == [2, 4, 1, 4]
    assert r["truncated"].tolist() == [False, True, False, False]
    assert float(r["temperature"]) == pytest.approx(0.3)  # the decoder's temperature
    (call,) = dec.calls
    assert call["ids"].tolist() == batch["prompt_ids"].repeat_interleave(2, 0).tolist()
    assert call["mask"].tolist() == batch["prompt_mask"].long().repeat_interleave(2, 0).tolist()
    assert call["eos"] == 7 and call["pad"] == 0


def test_sample_rollout_no_new_tokens():
    batch = prompts_batch(CHAIN_PROMPTS)
    r = sample_rollout(Chain(), Greedy(max_new_tokens=0), batch, num_generations=2, eos_id=Chain.EOS)
    assert r["completion_mask"].shape == (8, 1) and not bool(r["completion_mask"].any())
    assert bool(r["truncated"].all())
    assert r["input_ids"][:, -1].tolist() == [0] * 8


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_sample_rollout_num_generations_checked(bad):
    with pytest.raises(ValueError, match="num_generations"):
        sample_rollout(Chain(), Greedy(max_new_tokens=2), prompts_batch(CHAIN_PROMPTS), bad, eos_id=Chain.EOS)


LLAMA_PROMPTS = [[3, 9, 14, 2, 5], [17, 4], [8, 1, 20]]


def greedy_alone(model, prompt, eos, max_new):
    out = Greedy(max_new_tokens=max_new).generate(model, torch.tensor([prompt]), eos_token_id=eos, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_sample_rollout_greedy_equals_each_prompt_alone_llama():
    model = tiny_llama(seed=1)
    max_new = 7
    # EOS := the 3rd token prompt 0 generates on its own, so some rows end early and others may not.
    eos = greedy_alone(model, LLAMA_PROMPTS[0], None, max_new)[2]
    alone = [greedy_alone(model, p, eos, max_new) for p in LLAMA_PROMPTS]
    assert len({len(a) for a in alone}) > 1, "the test needs completions of unequal lengths"
    batch = prompts_batch(LLAMA_PROMPTS)
    model.train()
    r = sample_rollout(model, Greedy(max_new_tokens=max_new), batch, num_generations=2, eos_id=eos)
    assert model.training
    check_rollout_invariants(r, batch, 2, eos)
    P = batch["prompt_ids"].shape[1]
    C = r["completion_mask"].shape[1]
    assert C == max(map(len, alone))
    for n in range(6):
        want = alone[n // 2]
        assert r["input_ids"][n, P:].tolist() == want + [0] * (C - len(want))
        assert bool(r["truncated"][n]) == (eos not in want)
    # and the rollout scores as it was generated: greedy tokens are each position's argmax
    with torch.no_grad():
        lp = completion_logps(model.eval(), r)
    assert bool((lp <= 0).all()) and bool((lp[~r["completion_mask"]] == 0).all())


def test_sample_rollout_sampling_is_reproducible_with_a_seed():
    model, batch = tiny_llama(seed=2), prompts_batch(LLAMA_PROMPTS)
    runs = [sample_rollout(model, Sample(max_new_tokens=6, temperature=1.5, seed=s), batch, 3, eos_id=EOS)
            for s in (5, 5, 6)]
    for key in ("input_ids", "attention_mask", "completion_mask", "truncated", "group", "row", "temperature"):
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert not torch.equal(runs[0]["input_ids"], runs[2]["input_ids"])
    assert float(runs[0]["temperature"]) == 1.5
    for r in runs:
        check_rollout_invariants(r, batch, 3, EOS)
    # the G completions of a prompt are separate draws
    comp = runs[0]["input_ids"][:, batch["prompt_ids"].shape[1]:]
    assert any(not torch.equal(comp[3 * b], comp[3 * b + g]) for b in range(3) for g in (1, 2))


# ---- 3. score_rollout / completion_texts -------------------------------------------------------

TOK = ByteTokenizer()
BIG = 300  # an id past the tokenizer (a vocabulary padded past it)


def byte_rollout():
    """2 prompts x G=2; completions written by hand, with EOS, padding and an id >= vocab_size."""
    E = TOK.eos_id
    comps = [
        list(b"3") + [E],                              # "3"
        list(b"3") + [BIG] + list(b" ok") + [E],       # "3 ok" (the id past the vocabulary dropped)
        list(b"10"),                                   # "10" truncated, padded after
        list(b"x9") + [E],                             # "x9"
    ]
    P = 5
    C = max(map(len, comps))
    ids = torch.zeros(4, P + C, dtype=torch.long)
    cmask = torch.zeros(4, C, dtype=torch.bool)
    prompts = [[E] + list(b"1+2="), [E] + list(b"5+5=")]
    for n, c in enumerate(comps):
        ids[n, :P] = torch.tensor(prompts[n // 2])
        ids[n, P:P + len(c)] = torch.tensor(c)
        cmask[n, :len(c)] = True
    r = {"input_ids": ids, "attention_mask": torch.cat([torch.ones(4, P, dtype=torch.bool), cmask], 1),
         "completion_mask": cmask, "truncated": torch.tensor([False, False, True, False]),
         "group": torch.tensor([0, 0, 1, 1]), "row": torch.tensor([4, 4, 9, 9]), "temperature": torch.tensor(1.0)}
    return r, ["1+2=", "5+5="], ["3", "3 ok", "10", "x9"]


def test_completion_texts_drop_eos_padding_and_ids_past_the_vocabulary():
    r, _, texts = byte_rollout()
    assert completion_texts(r, TOK) == texts
    # positions off the mask are never read, whatever they hold
    junk = r["input_ids"].clone()
    junk[2, -1] = ord("Z")
    junk[0, -1] = ord("Z")
    assert completion_texts({**r, "input_ids": junk}, TOK) == texts


def test_score_rollout_equals_reward_set_on_hand_texts():
    r, prompts, texts = byte_rollout()
    seen = {}

    def short(prompts, completions, answer=None, note=None, **_):
        seen.update(prompts=list(prompts), completions=list(completions), answer=list(answer), note=list(note))
        return [None if c.startswith("x") else 1.0 / len(c) for c in completions]

    fns = {"correct": leading_integer_match, "short": short}
    weights = {"correct": 1.0, "short": 0.5}
    columns = {"answer": [3, 10], "note": ["a", "b"]}
    out_texts, out = score_rollout(r, TOK, RewardSet(fns, weights), prompts, columns)
    assert out is r and out_texts == texts
    assert seen == {"prompts": ["1+2=", "1+2=", "5+5=", "5+5="], "completions": texts,
                    "answer": [3, 3, 10, 10], "note": ["a", "a", "b", "b"]}
    # RewardSet called by hand on the hand-written texts, and the numbers by hand
    want = RewardSet(fns, weights)(["1+2=", "1+2=", "5+5=", "5+5="], texts, answer=[3, 3, 10, 10],
                                   note=["a", "a", "b", "b"])
    torch.testing.assert_close(r["rewards"], want.total, equal_nan=True)
    torch.testing.assert_close(r["reward_per_function"], want.per_function, equal_nan=True)
    hand = torch.tensor([[1.0, 1.0], [1.0, 0.25], [1.0, 0.5], [0.0, math.nan]])
    torch.testing.assert_close(r["reward_per_function"], hand, equal_nan=True)
    torch.testing.assert_close(r["rewards"], torch.tensor([1.5, 1.125, 1.25, 0.0]))
    assert r["rewards"].dtype == torch.float32 and r["reward_per_function"].shape == (4, 2)


def test_score_rollout_checks_counts():
    r, prompts, _ = byte_rollout()
    rewards = RewardSet([leading_integer_match])
    with pytest.raises(ValueError, match="prompts"):
        score_rollout(r, TOK, rewards, prompts[:1] * 3, {"answer": [3, 3, 3]})  # 3 prompts, 4 rows
    with pytest.raises(ValueError, match="prompts"):
        score_rollout(r, TOK, rewards, [], {"answer": []})
    with pytest.raises(ValueError, match="prompts"):  # 4 prompts for 2 prompts x 2 completions
        score_rollout(r, TOK, rewards, prompts * 2, {"answer": [3, 10, 3, 10]})
    with pytest.raises(ValueError, match="answer"):
        score_rollout(r, TOK, rewards, prompts, {"answer": [3, 10, 3]})
    assert "rewards" not in r
    # a rollout without `group`: row n belongs to prompt n // G, G = N / B
    del r["group"]
    score_rollout(r, TOK, rewards, prompts, {"answer": [3, 10]})
    assert r["rewards"].tolist() == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="prompts"):
        score_rollout(r, TOK, rewards, prompts[:1] * 3, {"answer": [3, 3, 3]})


# ---- 4. rollout_metrics ---------------------------------------------------------------------------

def metrics_rollout():
    """3 groups of G=3: group 0 with a NaN (std of [1, 0]), group 1 all equal (std 0), group 2 with one
    scorable completion (std undefined)."""
    nan = math.nan
    rewards = torch.tensor([1.0, nan, 0.0, 2.0, 2.0, 2.0, nan, 3.0, nan])
    per_fn = torch.tensor([[1.0, 0.0], [nan, nan], [0.0, 0.5], [1.0, 2.0], [1.0, nan], [2.0, 0.0],
                           [nan, nan], [3.0, 1.0], [nan, nan]])
    lengths = [3, 1, 4, 2, 2, 4, 1, 3, 4]
    C = 4
    cmask = torch.tensor([[True] * k + [False] * (C - k) for k in lengths])
    truncated = torch.tensor([False, False, True, False, False, True, False, False, True])
    return {"rewards": rewards, "reward_per_function": per_fn, "completion_mask": cmask, "truncated": truncated}


def test_rollout_metrics_by_hand():
    r = metrics_rollout()
    m = rollout_metrics(r, ["a", "b"], num_generations=3)
    scored = [1.0, 0.0, 2.0, 2.0, 2.0, 3.0]
    want = {
        "reward": statistics.mean(scored),
        "reward_std": statistics.stdev(scored),                        # TRL 1.16: the batch's std
        "frac_reward_zero_std": 1 / 3,                                 # group 1; group 2 has one score
        "rewards/a/mean": statistics.mean([1, 0, 1, 1, 2, 3]),
        "rewards/a/std": statistics.stdev([1, 0, 1, 1, 2, 3]),
        "rewards/b/mean": statistics.mean([0, 0.5, 2, 0, 1]),
        "rewards/b/std": statistics.stdev([0, 0.5, 2, 0, 1]),
        "completions/mean_length": 24 / 9,
        "completions/min_length": 1.0,
        "completions/max_length": 4.0,
        "completions/clipped_ratio": 3 / 9,
        "completions/mean_terminated_length": statistics.mean([3, 1, 2, 2, 1, 3]),
    }
    assert set(m) == set(want)
    for k, v in want.items():
        assert float(m[k]) == pytest.approx(v, rel=1e-6), k
        assert m[k].dtype == torch.float32


def trl_reward_std_and_zero_frac(rewards: torch.Tensor, G: int) -> tuple[float, float]:
    """TRL 1.16 GRPOTrainer._generate_and_score_completions (sum_then_normalize, scale_rewards='group'):
    reward_std = nanstd(rewards) over the whole batch; is_std_zero = isclose(group std repeated per row, 0)."""
    from trl.trainer.utils import nanstd

    std = nanstd(rewards.view(-1, G), dim=1) if G > 1 else torch.zeros(rewards.numel() // G)
    std = std.repeat_interleave(G, dim=0)
    return float(nanstd(rewards)), float(torch.isclose(std, torch.zeros_like(std)).float().mean())


def test_rollout_metrics_against_trl_definitions():
    """reward_std and frac_reward_zero_std are TRL 1.16's: the batch's std, and groups whose std is
    defined (two scored rewards at least) and zero."""
    r = metrics_rollout()
    m = rollout_metrics(r, ["a", "b"], num_generations=3)
    trl_std, trl_zero = trl_reward_std_and_zero_frac(r["rewards"], 3)
    assert trl_std == pytest.approx(statistics.stdev([1, 0, 2, 2, 2, 3]))
    assert float(m["reward_std"]) == pytest.approx(trl_std)
    assert trl_zero == pytest.approx(1 / 3) and float(m["frac_reward_zero_std"]) == pytest.approx(trl_zero)
    rewards = torch.tensor([1.0, math.nan, 0.0, 2.0, 2.0, 2.0, 0.5, 0.5, 1.5, 4.0, 4.0, 4.0])
    r2 = {"rewards": rewards, "reward_per_function": rewards[:, None],
          "completion_mask": torch.ones(12, 2, dtype=torch.bool), "truncated": torch.zeros(12, dtype=torch.bool)}
    m2 = rollout_metrics(r2, ["a"], num_generations=3)
    trl_std2, trl_zero2 = trl_reward_std_and_zero_frac(rewards, 3)
    assert float(m2["frac_reward_zero_std"]) == pytest.approx(trl_zero2) == pytest.approx(0.5)
    assert float(m2["reward_std"]) == pytest.approx(trl_std2)


def test_frac_reward_zero_std_is_exact_for_equal_float_rewards():
    """8 equal rewards of 0.7 (a weight of 0.7 on a 0/1 reward) have a float32 std of ~6e-8, not 0:
    the group still has no spread. Failed before the fix (frac 0.0; TRL 1.16's isclose(std, 0), atol
    1e-8, misses it too), while 8 equal rewards of 0.1 (std ~8e-9) passed TRL's tolerance."""
    from trl.trainer.utils import nanstd as trl_nanstd

    for value in (0.7, 0.1, 1 / 3):
        rewards = torch.cat([torch.full((8,), value), torch.tensor([0.0, 1.0] * 4)])
        assert float(trl_nanstd(rewards[:8])) > 0  # the float artefact is real
        r = {"rewards": rewards, "reward_per_function": rewards[:, None],
             "completion_mask": torch.ones(16, 1, dtype=torch.bool), "truncated": torch.zeros(16, dtype=torch.bool)}
        m = rollout_metrics(r, ["a"], num_generations=8)
        assert float(m["frac_reward_zero_std"]) == 0.5, value
    # all NaN in a group: its std is undefined, not zero (TRL)
    r["rewards"] = torch.tensor([math.nan] * 8 + [0.0, 1.0] * 4)
    assert float(rollout_metrics(r, ["a"], num_generations=8)["frac_reward_zero_std"]) == 0.0


def test_rollout_metrics_edge_cases():
    # G = 1: every group std is 0 (TRL's zeros when num_generations == 1), reward_std still the batch's;
    # all truncated: terminated length 0
    r = {"rewards": torch.tensor([1.0, 0.0]), "reward_per_function": torch.tensor([[1.0], [0.0]]),
         "completion_mask": torch.tensor([[True, True], [True, True]]), "truncated": torch.tensor([True, True])}
    m = rollout_metrics(r, ["a"], num_generations=1)
    assert float(m["reward_std"]) == pytest.approx(statistics.stdev([1.0, 0.0]))
    assert float(m["frac_reward_zero_std"]) == 1.0
    assert float(m["completions/mean_terminated_length"]) == 0.0 and float(m["completions/clipped_ratio"]) == 1.0
    # every reward NaN: the means are reported as 0, never NaN
    r["rewards"] = torch.tensor([math.nan, math.nan])
    r["reward_per_function"] = torch.tensor([[math.nan], [math.nan]])
    m = rollout_metrics(r, ["a"], num_generations=2)
    assert all(math.isfinite(float(v)) for v in m.values())


# ---- 5. repeat_blocks ------------------------------------------------------------------------------

def simulated(A: int, mu: int, n_steps: int) -> list[int]:
    """The data batch of every micro-batch when each optimizer step takes A micro-batches and every
    block of A data batches is trained on for mu steps in a row."""
    out = []
    for step in range(n_steps):
        block = step // mu
        out.extend(block * A + a for a in range(A))
    return out


class Counting:
    """batches(start=i): the data stream i, i+1, ...; records every start it was asked for."""

    def __init__(self):
        self.starts = []

    def __call__(self, start=0):
        self.starts.append(start)
        return itertools.count(start)


@pytest.mark.parametrize("A,mu", [(1, 1), (1, 3), (2, 2), (3, 2), (2, 4), (4, 1)])
def test_repeat_blocks_maps_micro_batches_to_data_batches(A, mu):
    full = simulated(A, mu, 4 * mu + 2)
    for start in range(0, 3 * A * mu + 2):  # block starts and every position inside a block (a resume)
        got = list(itertools.islice(repeat_blocks(Counting(), start, A, mu), len(full) - start))
        assert got == full[start:], (A, mu, start)
        assert got == [(m // (A * mu)) * A + m % A for m in range(start, len(full))]


def test_repeat_blocks_once_is_the_stream_itself():
    calls = Counting()
    gen = repeat_blocks(calls, 7, 3, 1)
    assert list(itertools.islice(gen, 5)) == [7, 8, 9, 10, 11] and calls.starts == [7]


def test_repeat_blocks_on_prompt_data_across_epochs():
    data = ArithmeticPrompts(n_train=7, n_val=0, digits=2, batch_size=3, seed=1)
    data.setup(TOK)
    stream = list(itertools.islice(data.train_batches(), 12))
    A, mu = 2, 3
    for start in (0, 4, 7):
        got = list(itertools.islice(repeat_blocks(data.train_batches, start, A, mu), 18 - start))
        for m, batch in zip(range(start, 18), got):
            assert torch.equal(batch["row"], stream[(m // (A * mu)) * A + m % A]["row"])


@pytest.mark.parametrize("key,bad", [("accumulate", 0), ("accumulate", -2), ("accumulate", 1.5), ("accumulate", True),
                                     ("iterations", 0), ("iterations", True), ("iterations", "2"),
                                     ("start", -1), ("start", 2.5), ("start", True)])
@pytest.mark.parametrize("iterations", [1, 2])
def test_repeat_blocks_bad_values(key, bad, iterations):
    kw = {"start": 0, "accumulate": 2, "iterations": iterations, key: bad}
    calls = Counting()
    with pytest.raises(ValueError, match=key):
        next(repeat_blocks(calls, **kw))
    assert calls.starts == []  # refused before the data stream is asked for anything


def test_is_generation_step():
    assert [is_generation_step(s, 3) for s in range(7)] == [True, False, False, True, False, False, True]
    assert all(is_generation_step(s, 1) for s in range(4))


# ---- 6. PromptData / ArithmeticPrompts -------------------------------------------------------------

def decode_row(batch, i):
    ids = batch["prompt_ids"][i][batch["prompt_mask"][i]].tolist()
    return ids


def test_arithmetic_prompts_batches():
    data = ArithmeticPrompts(n_train=7, n_val=3, digits=2, batch_size=3, seed=4)
    data.setup(TOK)
    assert data.batch_kind == "prompts"
    train, val = data.prompts("train"), data.prompts("val")
    assert len(train) == 7 and len(val) == 3
    assert list(data.split_rows("train")) == list(range(7)) and list(data.split_rows("val")) == [7, 8, 9]
    per_epoch = 7 // 3
    stream = list(itertools.islice(data.train_batches(), 4 * per_epoch + 1))
    for i, batch in enumerate(stream):
        assert batch["prompt_ids"].dtype == torch.long and batch["prompt_mask"].dtype == torch.bool
        assert batch["prompt_ids"].shape == (3, 7)  # EOS + "ab+cd="
        rows = batch["row"].tolist()
        assert all(0 <= x < 7 for x in rows) and len(set(rows)) == 3
        for j, x in enumerate(rows):
            assert decode_row(batch, j) == [TOK.eos_id] + list(train[x].encode())
        # resume: start=i is the i-th batch of the uninterrupted stream (epoch boundaries included)
        resumed = next(data.train_batches(start=i))
        assert all(torch.equal(resumed[k], batch[k]) for k in batch)
    for e in range(4):  # each epoch: distinct rows, a new order
        epoch_rows = [x for b in stream[e * per_epoch:(e + 1) * per_epoch] for x in b["row"].tolist()]
        assert len(set(epoch_rows)) == per_epoch * 3
    assert len({tuple(b["row"].tolist()) for b in stream}) > per_epoch
    (vb,) = list(data.val_batches())
    assert vb["row"].tolist() == [7, 8, 9]
    assert [bytes(decode_row(vb, j)[1:]).decode() for j in range(3)] == val
    with pytest.raises(ValueError, match="start"):
        next(data.train_batches(start=-1))


def test_arithmetic_prompts_columns_and_default_rewards():
    data = ArithmeticPrompts(n_train=5, n_val=2, digits=2, batch_size=2, seed=0)
    data.setup(TOK)
    rows = [6, 0, 3]
    prompts, columns = data.columns(rows)
    assert set(columns) == {"answer"}
    every = data.prompts("train") + data.prompts("val")
    assert prompts == [every[r] for r in rows]
    for p, a in zip(prompts, columns["answer"]):
        x, y = p[:-1].split("+")
        assert a == int(x) + int(y)
    with pytest.raises(IndexError):
        data.columns([7])
    (name, (fn, weight)), = data.default_rewards().items()
    assert name == "correct" and weight == 1.0
    a = columns["answer"][0]
    assert fn(prompts=[prompts[0]] * 4, completions=[str(a), f"{a} Sure!", str(a + 1), "no"],
              answer=[a] * 4) == [1.0, 1.0, 0.0, 0.0]
    # end to end: a batch's rows -> columns -> score_rollout with the data's own rewards
    batch = next(data.train_batches())
    b_prompts, b_cols = data.columns(batch["row"].tolist())
    E = TOK.eos_id
    comps = [list(str(b_cols["answer"][0]).encode()) + [E], list(str(b_cols["answer"][0] + 1).encode()) + [E],
             list(str(b_cols["answer"][1]).encode()), list(b"?") + [E]]
    P = batch["prompt_ids"].shape[1]
    C = max(map(len, comps))
    r = {"input_ids": torch.zeros(4, P + C, dtype=torch.long), "completion_mask": torch.zeros(4, C, dtype=torch.bool),
         "group": torch.tensor([0, 0, 1, 1])}
    for n, c in enumerate(comps):
        r["input_ids"][n, :P] = batch["prompt_ids"][n // 2]
        r["input_ids"][n, P:P + len(c)] = torch.tensor(c)
        r["completion_mask"][n, :len(c)] = True
    rewards = RewardSet({k: f for k, (f, _) in data.default_rewards().items()})
    score_rollout(r, TOK, rewards, b_prompts, b_cols)
    assert r["rewards"].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_arithmetic_prompts_same_problems_as_sft():
    opts = dict(n_train=9, n_val=4, digits=1, val_fraction=0.2, problem_seed=3)
    prompts = ArithmeticPrompts(**opts, batch_size=4)
    prompts.setup(TOK)
    sft = ArithmeticSFT(**opts)
    for split in ("train", "val"):
        assert prompts.prompts(split) == sft.prompts(split)
    for p in prompts.prompts("train"):
        assert not is_held_out(*map(int, p[:-1].split("+")), 0.2)
    for p in prompts.prompts("val"):
        assert is_held_out(*map(int, p[:-1].split("+")), 0.2)
    assert prompts.fingerprint != ArithmeticPrompts(**{**opts, "problem_seed": 4}).fingerprint


class HandPrompts(PromptData):
    """Prompts of unequal lengths with a column some rows lack."""

    fingerprint = "hand"

    def _rows(self):
        return {"train": [{"prompt": "ab", "answer": 1}, {"prompt": "hello", "answer": 2, "tag": "x"},
                          {"prompt": "", "answer": 3}, {"prompt": "xyz"}],
                "val": [{"prompt": "long prompt", "answer": 9}]}


def test_prompt_data_left_padding_rows_and_columns():
    data = HandPrompts(batch_size=8, seed=0)
    data.setup(TOK)
    # "" would encode to [EOS] alone (the document start): no prompt, dropped and counted
    assert data.stats["train"]["prompts"] == 3 and data.stats["train"]["dropped"] == {"empty_prompt": 1}
    assert data.prompt_token_ids("train") == [[TOK.eos_id] + list(s.encode()) for s in ("ab", "hello", "xyz")]
    batch = next(data.train_batches())
    assert batch["prompt_ids"].shape == (3, 6)
    for j, x in enumerate(batch["row"].tolist()):
        ids, mask = batch["prompt_ids"][j].tolist(), batch["prompt_mask"][j].tolist()
        want = data.prompt_token_ids("train")[x]
        pad = 6 - len(want)
        assert ids == [0] * pad + want and mask == [False] * pad + [True] * len(want)
    (vb,) = list(data.val_batches())
    assert vb["row"].tolist() == [3]
    assert vb["prompt_ids"][0].tolist() == [TOK.eos_id] + list(b"long prompt")
    prompts, columns = data.columns([3, 1, 2])
    assert prompts == ["long prompt", "hello", "xyz"]
    assert columns == {"answer": [9, 2, None], "tag": [None, "x", None]}
    truncated = HandPrompts(batch_size=2, max_prompt_length=3)
    truncated.setup(TOK)
    assert truncated.prompt_token_ids("train")[1] == list(b"llo") and truncated.stats["train"]["truncated"] == 2


# ---- per-row random streams (partition-invariant rollouts) ------------------------------------------

def test_row_streams_draw_the_warped_distribution():
    """Each row's own stream (RowStreams, inverse CDF) samples softmax(warp(scores)): chi-square
    against the top-k/temperature-warped probabilities; an excluded (zero-probability) id never drawn."""
    from rizzrun.decoders.base import RowStreams
    from sampling_checks import chi2_pvalue

    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0, 3.0, -2.0, 1.5]])
    dec = Sample(temperature=0.7, top_k=5)
    draws = 6000
    ids = dec.choose(scores.expand(draws, -1).contiguous(), RowStreams(range(draws)))
    counts = torch.bincount(ids, minlength=scores.shape[1])
    probs = torch.softmax(dec.warp(scores)[0], dim=-1)
    assert bool((counts[probs == 0] == 0).all()) and int((probs == 0).sum()) == 3
    assert chi2_pvalue(counts, probs) > 1e-3
    with pytest.raises(ValueError, match="row_seeds has 2 seeds for 3 rows"):
        dec.choose(scores.expand(3, -1).contiguous(), RowStreams([1, 2]))


def test_rollouts_with_row_seeds_do_not_depend_on_how_the_batch_is_cut():
    """With a seed per completion, 4 prompts in one batch give the completions of the same prompts cut
    into batches of 1 and 3 (as micro-batches or processes would cut them); a batch seed does not."""
    model = tiny_llama(seed=3)
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    seeds = list(range(100, 100 + 4 * 3))
    dec = Sample(max_new_tokens=6, temperature=1.3, seed=0)
    whole = sample_rollout(model, dec, prompts_batch(prompts), 3, eos_id=EOS, row_seeds=seeds)
    first = sample_rollout(model, dec, prompts_batch(prompts[:1]), 3, eos_id=EOS, row_seeds=seeds[:3])
    rest = sample_rollout(model, dec, prompts_batch(prompts[1:]), 3, eos_id=EOS, row_seeds=seeds[3:])
    C = whole["completion_mask"].shape[1]
    parts = [first, rest]
    for lo, part in zip((0, 3), parts):
        c = part["completion_mask"].shape[1]
        n = part["completion_mask"].shape[0]
        assert torch.equal(whole["input_ids"][lo:lo + n, 3:3 + c], part["input_ids"][:, 3:])
        assert not whole["completion_mask"][lo:lo + n, c:].any()
    assert dec.row_seeds is None  # set for the call only
    batch_seeded = [sample_rollout(model, dec, prompts_batch(p), 3, eos_id=EOS) for p in (prompts, prompts[1:])]
    assert not torch.equal(batch_seeded[0]["input_ids"][3:, 3:3 + batch_seeded[1]["completion_mask"].shape[1]],
                           batch_seeded[1]["input_ids"][:, 3:])
    assert C >= 1
    with pytest.raises(ValueError, match="row_seeds has 5 seeds for 12 completions"):
        sample_rollout(model, dec, prompts_batch(prompts), 3, eos_id=EOS, row_seeds=seeds[:5])
