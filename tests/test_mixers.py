"""Every token mixer keeps the contract of rizzrun.attention (tests/mixer_checks.py), alone and in
hybrid stacks; the hybrid layer pattern is MiniMax-01's (arXiv 2501.08313)."""

from functools import partial

import pytest
import torch

import mixer_checks as mc  # tests/ is on sys.path (pytest prepends the test folder)
from rizzrun.attention.hybrid import hybrid, softmax_layers
from rizzrun.attention.naive import NaiveAttention
from rizzrun.attention.sdpa import SDPAttention

MIXERS = {
    "sdpa": SDPAttention,
    "naive": NaiveAttention,
    "hybrid-sdpa-naive": partial(hybrid, softmax_every=2, softmax=SDPAttention, other=NaiveAttention),
}


@pytest.mark.parametrize("check", mc.ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", MIXERS)
def test_mixer_contract(name, check):
    check(mc.tiny_llama(MIXERS[name]))


def test_hybrid_layer_pattern_is_minimax():
    assert softmax_layers(80, 8) == list(range(7, 80, 8)) and len(softmax_layers(80, 8)) == 10
    assert softmax_layers(4, 1) == [0, 1, 2, 3] and softmax_layers(4, 5) == []
    model = mc.tiny_llama(partial(hybrid, softmax_every=2, softmax=SDPAttention, other=NaiveAttention), n_layer=4)
    assert [type(b.attn).__name__ for b in model.blocks] == ["NaiveAttention", "SDPAttention"] * 2
    with pytest.raises(ValueError, match=r"softmax_every=0 must be an integer >= 1"):
        mc.tiny_llama(partial(hybrid, softmax_every=0, softmax=SDPAttention, other=NaiveAttention))


def test_sdpa_mixer_equals_naive_mixer_with_the_same_weights():
    sdpa, naive = mc.tiny_llama(SDPAttention), mc.tiny_llama(NaiveAttention)
    naive.load_state_dict(sdpa.state_dict())
    tokens = mc.ids()
    with torch.no_grad():
        torch.testing.assert_close(naive(tokens), sdpa(tokens), atol=1e-5, rtol=1e-5)
