"""Every token mixer keeps the contract of rizzrun.attention (tests/mixer_checks.py), alone and in
hybrid stacks; the hybrid layer pattern is MiniMax-01's (arXiv 2501.08313)."""

from functools import partial

import pytest
import torch

import mixer_checks as mc  # tests/ is on sys.path (pytest prepends the test folder)
from rizzrun.attention.fam import FAMAttention
from rizzrun.attention.hybrid import hybrid, softmax_layers
from rizzrun.attention.lightning import LightningAttention
from rizzrun.attention.naive import NaiveAttention
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.attention.selective import SelectiveAttention
from rizzrun.attention.ssmax import SSMaxAttention

MIXERS = {
    "sdpa": SDPAttention,
    "naive": NaiveAttention,
    "hybrid-sdpa-naive": partial(hybrid, softmax_every=2, softmax=SDPAttention, other=NaiveAttention),
    # chunk_size 4 < T: the tiled form's inter-block state is exercised in the parallel forward.
    "lightning": partial(LightningAttention, chunk_size=4),
    "lightning-fla-decay": partial(LightningAttention, chunk_size=5, decay_schedule="fla_literal", gate=False),
    "hybrid-lightning": partial(hybrid, softmax_every=2, softmax=SDPAttention,
                                other=partial(LightningAttention, chunk_size=4)),
    # The methods' own settings are covered in their tests (test_ssmax, test_selective, test_fam);
    # here each stands in a hybrid stack beside lightning, with mixed decoding states.
    "hybrid-ssmax-lightning": partial(hybrid, softmax_every=2, softmax=SSMaxAttention,
                                      other=partial(LightningAttention, chunk_size=4)),
    "hybrid-selective-fam": partial(hybrid, softmax_every=2, softmax=partial(SelectiveAttention, budget=5),
                                    other=partial(FAMAttention, block_size=4, memory_blocks=1, fam_len=2)),
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


def test_lightning_mixer_is_the_gated_layer_over_the_naive_formula():
    """The mixer == SiLU projections -> O = (Q K^T ⊙ D) V with D_ij = lambda^(i-j) (the paper's
    left-product form, written here in fp64) -> RMSNorm -> sigmoid gate -> out, for the decays of
    the official schedule."""
    from rizzrun.attention.mixer import Positions
    from rizzrun.kernels.lightning import lightning_decay

    torch.manual_seed(0)
    mixer = LightningAttention(d_model=16, n_head=2, n_kv_head=2, head_dim=8, layer_idx=1, n_layer=4, chunk_size=3)
    mixer.reset_parameters(0.3, 0.3)
    x = torch.randn(2, 7, 16)
    T, D = 7, 8
    got = mixer(x, Positions(0, torch.ones(T, D), torch.zeros(T, D)))

    lam = torch.tensor(lightning_decay(2, 1, 4), dtype=torch.float64).exp()
    assert torch.allclose(mixer.log_decay.double().exp(), lam)
    q, k, v = (torch.nn.functional.silu(p(x)).double().view(2, T, 2, D) for p in (mixer.q, mixer.k, mixer.v))
    i = torch.arange(T)
    decay = lam[:, None, None] ** (i[:, None] - i[None, :]).clamp(min=0) * (i[:, None] >= i[None, :])  # (H, T, T)
    o = torch.einsum("bihd,bjhd,hij,bjhe->bihe", q, k, decay, v).reshape(2, T, 16)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * mixer.norm.weight.double()
    want = mixer.out(((o * torch.sigmoid(mixer.gate(x).double())).float()))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_recurrent_states_do_not_grow_with_context():
    """A lightning layer's decoding state is H x D x D whatever max_len; a softmax layer's grows."""
    model = mc.tiny_llama(partial(hybrid, softmax_every=2, softmax=SDPAttention, other=LightningAttention))
    small, large = model.init_cache(1, max_len=8), model.init_cache(1, max_len=32)
    lightning = [i for i, b in enumerate(model.blocks) if isinstance(b.attn, LightningAttention)]
    assert lightning == [0]
    assert small.layers[0].nbytes() == large.layers[0].nbytes() == 4 * 8 * 8 * 4  # H * D * D fp32
    assert large.layers[1].nbytes() == 4 * small.layers[1].nbytes()
