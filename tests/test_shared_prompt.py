"""A group's shared prompt run once in training (`rizzrun.rollouts.logps.completion_logps`): the prompt
through `Llama.step` on a fresh cache, the cache repeated G times, the completions per row. The
independent reference is the plain forward over every copy (share_prompts=False): the log-probs,
entropies and every parameter's gradient must agree, for every token mixer that claims it can
(`trains_through_state`); a mixer whose state does not give the parallel gradients must not claim it.
"""

from __future__ import annotations

import pytest
import torch

from rizzrun.attention.sdpa import SDPAttention
from rizzrun.models.llama import Llama
from rizzrun.models.rwkv import RWKV
from rizzrun.objectives.grpo import GRPO
from rizzrun.rollouts import completion_logps, sample_rollout
from rizzrun.rollouts.logps import prompt_group_size
from test_prefill import MIXERS  # every token mixer option, small shapes

pytestmark = pytest.mark.usefixtures("one_thread")

V, G, EOS = 37, 3, 2
PROMPTS = [[5, 9, 11, 4, 20, 7], [8, 3], [30, 12, 6, 17]]  # left-padded to 6: rows 1 and 2 padded

SHARING = {"sdpa", "naive", "ssmax"}  # the mixers whose decoding state trains like the parallel forward


def llama(attention=SDPAttention, seed=0) -> Llama:
    torch.manual_seed(seed)
    return Llama(V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=32, attention=attention,
                 init_std=0.2)


def rollout(C: int = 5, seed: int = 1, prompts=PROMPTS) -> dict:
    """A rollout of len(prompts) left-padded prompts x G random completions (no EOS: every position
    real), the layout sample_rollout makes."""
    g = torch.Generator().manual_seed(seed)
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        mask[i, P - len(p):] = True
    completion = torch.randint(3, V, (len(prompts) * G, C), generator=g)
    completion_mask = torch.ones_like(completion, dtype=torch.bool)
    completion_mask[1, 3:] = False  # one row ended early (its positions after the end still computed)
    return {"input_ids": torch.cat([ids.repeat_interleave(G, 0), completion], 1),
            "attention_mask": torch.cat([mask.repeat_interleave(G, 0), completion_mask], 1),
            "completion_mask": completion_mask,
            "group": torch.arange(len(prompts)).repeat_interleave(G)}


def logps_and_grads(model, batch: dict, share: bool, **kwargs):
    model.zero_grad(set_to_none=True)
    logps, entropy = completion_logps(model, batch, with_entropy=True, share_prompts=share, **kwargs)
    weights = torch.linspace(-1.0, 2.0, logps.numel()).view_as(logps)
    (logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), entropy, grads


def assert_same(model, batch: dict, **kwargs) -> None:
    shared, ent_s, grads_s = logps_and_grads(model, batch, True, **kwargs)
    plain, ent_p, grads_p = logps_and_grads(model, batch, False, **kwargs)
    torch.testing.assert_close(shared, plain, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ent_s, ent_p, atol=2e-6, rtol=1e-5)
    assert grads_s.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_s[name], grads_p[name], atol=1e-5, rtol=1e-4, msg=name)


def spy_steps(model) -> list[tuple[int, int]]:
    """Record (rows, tokens) of every model.step call; the plain forward raises if called."""
    calls, step = [], model.step

    def recording(ids, cache, *args, **kwargs):
        calls.append(tuple(ids.shape))
        return step(ids, cache, *args, **kwargs)

    def no_forward(*args, **kwargs):
        raise AssertionError("the plain forward over every copy ran")

    model.step = recording
    model.forward = no_forward
    return calls


@pytest.mark.parametrize("name", sorted(MIXERS) + ["rwkv"])
def test_every_mixer_that_claims_it_trains_like_the_plain_forward(name):
    model = RWKV(V, d_model=32, n_layer=2, max_seq_len=32) if name == "rwkv" else llama(MIXERS[name])
    claims = bool(getattr(model, "trains_through_cache", lambda: False)())
    assert claims == (name in SHARING)
    if claims:
        assert_same(model, rollout())


@pytest.mark.parametrize("name", ["selective", "fam"])
def test_mixers_whose_state_trains_differently_do_not_claim_it(name, monkeypatch):
    """Why the flag is opt-in: selective attention's and FAM's decoding states give the parallel
    forward's log-probs but other gradients (FAM's leave some parameters without any), which a
    claimed flag would silently train on."""
    cls = MIXERS[name].func
    monkeypatch.setattr(cls, "trains_through_state", True)
    model = llama(MIXERS[name])
    shared, _, grads_s = logps_and_grads(model, rollout(), True)
    plain, _, grads_p = logps_and_grads(model, rollout(), False)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    missing = torch.tensor(0.0)  # a parameter the state path gave no gradient at all
    assert max(float((grads_s.get(n, missing) - grads_p[n]).abs().max()) for n in grads_p) > 1e-3


def test_the_prompt_runs_once_per_group():
    model = llama()
    calls = spy_steps(model)
    completion_logps(model, rollout(C=5))
    assert calls == [(3, 6), (3 * G, 4)]  # 3 prompts of 6 positions, then 9 rows x the first 4 completion tokens


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_temperature_and_entropy_agree(temperature):
    assert_same(llama(), rollout(), temperature=temperature)


def test_one_completion_token_needs_only_the_prompt():
    model = llama()
    assert_same(model, rollout(C=1))
    calls = spy_steps(model)
    completion_logps(model, rollout(C=1))
    assert calls == [(3, 6)]


def test_unpadded_prompts_agree():
    assert_same(llama(), rollout(prompts=[[5, 9, 11], [8, 3, 4]]))


def test_group_size_is_found_only_where_prompts_really_repeat():
    batch = rollout()
    assert prompt_group_size(batch) == G
    assert prompt_group_size({k: v for k, v in batch.items() if k != "group"}) == 1
    one_each = dict(batch, group=torch.arange(batch["group"].numel()))
    assert prompt_group_size(one_each) == 1
    differs = dict(batch, input_ids=batch["input_ids"].clone())
    differs["input_ids"][4, 5] = 33  # one copy of prompt 1 differs: no sharing, not a wrong one
    assert prompt_group_size(differs) == 1
    padded_differently = dict(batch, attention_mask=batch["attention_mask"].clone())
    padded_differently["attention_mask"][3, 3] = True
    assert prompt_group_size(padded_differently) == 1
    model = llama()
    calls = spy_steps(model)
    with pytest.raises(AssertionError, match="plain forward"):
        completion_logps(model, differs)
    assert calls == []


def test_a_sampled_rollout_is_shared_and_grpo_trains_the_same():
    """End to end: sample_rollout's rollout is found to share its prompts, and GRPO's loss and
    gradients (reference and policy log-probs both through the shared path) equal the plain forward's."""
    model = llama().eval()
    from rizzrun.decoders import Sample

    P = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in PROMPTS], dtype=torch.bool)
    batch = sample_rollout(model, Sample(max_new_tokens=5, seed=3), {"prompt_ids": ids, "prompt_mask": mask,
                                                                     "row": torch.arange(3)}, G, EOS)
    assert prompt_group_size(batch) == G
    batch["rewards"] = torch.linspace(0, 1, 3 * G)
    reference = llama(seed=1)
    objective = GRPO(num_generations=G, beta=0.1, max_completion_length=5)
    model.train()

    def loss_and_grads(share: bool):
        if not share:  # the same model, seen as one that cannot train through its cache
            model.trains_through_cache = lambda: False
            reference.trains_through_cache = lambda: False
        try:
            prepared = objective.prepare(model, batch, reference)
            model.zero_grad(set_to_none=True)
            loss, _ = objective(model, prepared)
            loss.backward()
            return prepared["ref_logps"], loss.detach(), [p.grad.clone() for p in model.parameters()]
        finally:
            vars(model).pop("trains_through_cache", None)
            vars(reference).pop("trains_through_cache", None)

    ref_s, loss_s, grads_s = loss_and_grads(True)
    ref_p, loss_p, grads_p = loss_and_grads(False)
    torch.testing.assert_close(ref_s, ref_p, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(loss_s, loss_p, atol=1e-7, rtol=1e-5)
    for a, b in zip(grads_s, grads_p):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
