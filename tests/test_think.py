"""ThinK (Xu et al., arXiv 2407.21018): the mixer contract at ratio 0 (all of it) and with pruning
(what still holds), ratio 0 == SDPA bit for bit, thin-cache decoding == an fp64 reference with the
pruned channels of the old prompt keys zeroed (kept channels re-derived from the official
mean-of-squares score), the score identity, left padding, thin buffers and the memory saving,
config rules. Spec: methods/attention/think.md."""

from functools import partial

import pytest
import torch

import mixer_checks as mc
from rizzrun.attention.mixer import Positions
from rizzrun.attention.naive import NaiveAttention, naive_attention
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.attention.softmax import KVState
from rizzrun.attention.ssmax import SSMaxAttention
from rizzrun.attention.think import KeyPruning, ThinKAttention, ThinKState, channel_scores, kept_channels
from rizzrun.config import ConfigError, load
from rizzrun.models.llama import rope_tables

# TINY: head_dim 8, so ratio 0.5 keeps 4 channels; 13-token prompts leave 10 thin keys.
PRUNED = partial(ThinKAttention, ratio=0.5, obs_window=4, recent_size=3)


@pytest.mark.parametrize("check", mc.ALL_CHECKS, ids=lambda c: c.__name__)
def test_no_pruning_keeps_the_whole_mixer_contract(check):
    check(mc.tiny_llama(partial(ThinKAttention, ratio=0.0, obs_window=4, recent_size=3)))


@pytest.mark.parametrize("check", [mc.check_causal, mc.check_reset_reuses_memory, mc.check_trains],
                         ids=lambda c: c.__name__)
def test_pruning_keeps_what_still_holds(check):
    check(mc.tiny_llama(PRUNED))


def test_ratio_zero_is_sdpa_exactly():
    think = mc.tiny_llama(partial(ThinKAttention, ratio=0.0, obs_window=4, recent_size=3))
    sdpa = mc.tiny_llama(SDPAttention)
    sdpa.load_state_dict(think.state_dict())
    tokens = mc.ids()
    with torch.no_grad():
        torch.testing.assert_close(think(tokens), sdpa(tokens), atol=0, rtol=0)
        for chunks in mc.CHUNKS.values():
            got, cache = mc.decode_in_chunks(think, tokens, chunks)
            want, sdpa_cache = mc.decode_in_chunks(sdpa, tokens, chunks)
            torch.testing.assert_close(got, want, atol=0, rtol=0)
            assert cache.nbytes() == sdpa_cache.nbytes()
    # a ratio too small to prune one channel (floor(0.1 * 8) = 0) is no pruning too
    assert ThinKAttention(32, 4, 2, 8, ratio=0.1).keep == 8


def test_score_identity_and_the_mean_of_squares_ranking():
    g = torch.Generator().manual_seed(0)
    spread = torch.rand(2, 16, generator=g, dtype=torch.float64) * 3  # uneven channel magnitudes
    q = torch.randn(1, 1, 6, 16, generator=g, dtype=torch.float64) * spread[0]
    k = torch.randn(1, 1, 20, 16, generator=g, dtype=torch.float64) * spread[1]
    score = channel_scores(q, k)[0, 0]
    frob = torch.stack([torch.linalg.matrix_norm(torch.outer(q[0, 0, :, j], k[0, 0, :, j])) for j in range(16)])
    torch.testing.assert_close(score, frob, atol=1e-12, rtol=1e-12)
    official = q[0, 0].square().mean(0) * k[0, 0].square().mean(0)  # official "efficient" form
    assert torch.equal(score.argsort(descending=True), official.argsort(descending=True))
    assert torch.equal(kept_channels(score, 10), kept_channels(official, 10))
    assert kept_channels(torch.tensor([1.0, 3.0, 3.0, 0.5, 2.0]), 3).tolist() == [1, 2, 4]  # sorted
    assert kept_channels(torch.tensor([2.0, 1.0, 2.0, 2.0]), 2).tolist() == [0, 2]  # ties: lower index


def test_gqa_reduction_stacks_the_groups_queries():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 5, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, 9, 8, generator=g, dtype=torch.float64)
    per_head = channel_scores(q, k.repeat_interleave(2, 1))  # (2, 4, 8): one KV head per query head
    want = per_head.square().view(2, 2, 2, 8).sum(2).sqrt()  # root of the sum of squared head scores
    torch.testing.assert_close(channel_scores(q, k), want, atol=1e-12, rtol=1e-12)


def reference_decode(mixer, x, mask, P):
    """fp64: the mixer's q, k, v at every position; kept channels of each (row, KV head) from the
    mean-of-squares score over the real observation queries of all the group's heads and the
    real prompt keys; queries < P attend to the unpruned keys, later ones to keys whose pruned
    channels are zeroed at the first P - recent_size positions. Returns (out (B, T, C), kept)."""
    m = ThinKAttention(32, 4, 2, 8, ratio=mixer.ratio, obs_window=mixer.obs_window, recent_size=mixer.recent_size)
    m.load_state_dict(mixer.state_dict())
    m = m.double()
    B, T, _ = x.shape
    cos, sin = rope_tables(T, 8, 10000.0)
    q, k, v = m.project(x.double(), Positions(0, cos.double(), sin.double()))
    W, n_thin = min(mixer.obs_window, P), P - mixer.recent_size
    k_zeroed = k.clone()
    kept = torch.zeros(B, 2, mixer.keep, dtype=torch.long)
    for b in range(B):
        real = mask[b].tolist()
        for h in range(2):
            qs = torch.cat([q[b, hq, t:t + 1] for hq in (2 * h, 2 * h + 1) for t in range(P - W, P) if real[t]])
            ks = torch.stack([k[b, h, t] for t in range(P) if real[t]])
            score = [(qs[:, j].square().mean() * ks[:, j].square().mean()).item() for j in range(8)]
            keep = sorted(sorted(range(8), key=lambda j: (-score[j], j))[:mixer.keep])
            kept[b, h] = torch.tensor(keep)
            for j in set(range(8)) - set(keep):
                k_zeroed[b, h, :n_thin, j] = 0.0
    o = torch.cat([naive_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P], mask[:, :P]),
                   naive_attention(q[:, :, P:], k_zeroed, v, mask)], 2)
    return m.out(o.transpose(1, 2).reshape(B, T, -1)), kept, q, k, v


def test_thin_cache_decoding_equals_zeroed_channels_reference():
    torch.manual_seed(0)
    mixer = ThinKAttention(32, 4, 2, 8, ratio=0.5, obs_window=7, recent_size=3)
    mixer.reset_parameters(0.3, 0.3)
    B, T, P = 2, 15, 9
    x = torch.randn(B, T, 32)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, :3] = False  # row 0: 3 left pads, in the thin part and the observation window
    x[0, :3] *= 30.0  # loud pads: scoring them would change the kept channels
    cos, sin = rope_tables(T, 8, 10000.0)
    want, kept, q, k, v = reference_decode(mixer, x, mask, P)
    for chunks in ([P, 1, 1, 1, 1, 1, 1], [P, 2, 4]):
        state = mixer.init_state(B, T)
        outs, start = [], 0
        with torch.no_grad():
            for n in chunks:
                pos = Positions(start, cos[start:start + n], sin[start:start + n], mask[:, :start + n])
                outs.append(mixer(x[:, start:start + n], pos, state))
                start += n
        torch.testing.assert_close(torch.cat(outs, 1).double(), want, atol=1e-5, rtol=1e-5)
        assert torch.equal(state.kept, kept)
        assert state.k_thin.shape == (B, 2, P - 3, 4) and state.k_full.shape == (B, 2, T - (P - 3), 8)
        thin = k[:, :, :P - 3].gather(3, kept[:, :, None].expand(-1, -1, P - 3, -1))
        torch.testing.assert_close(state.k_thin.double(), thin, atol=1e-5, rtol=1e-5)
        # recent + generated keys: full width
        torch.testing.assert_close(state.k_full.double(), k[:, :, P - 3:], atol=1e-5, rtol=1e-5)
    unpruned = naive_attention(q[:, :, P:], k, v, mask)  # pruning must matter, or the test proves nothing
    assert (want[:, P:] - mixer.double().out(unpruned.transpose(1, 2).reshape(B, T - P, -1))).abs().max() > 1e-3


@torch.no_grad()
def test_pruned_decoding_any_chunking_and_left_padding():
    model = mc.tiny_llama(PRUNED)
    tokens = mc.ids(T=14)
    a, _ = mc.decode_in_chunks(model, tokens, [8] + [1] * 6)
    b, _ = mc.decode_in_chunks(model, tokens, [8, 6])
    c, _ = mc.decode_in_chunks(model, tokens, [8, 2, 4])
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, a, atol=1e-5, rtol=1e-5)
    assert (a[:, 8:] - model(tokens)[:, 8:]).abs().max() > 1e-3  # pruning changed decoding
    # Left padding: what the pads hold changes nothing (they are invisible and unscored). The
    # padded row is not the unpadded row: post-RoPE channel norms depend on absolute positions.
    pads = 3
    row0 = torch.cat([torch.zeros(1, pads, dtype=torch.long), tokens[:1]], 1)
    batch = torch.cat([row0, mc.ids(B=1, T=14 + pads, seed=5)])
    other = batch.clone()
    other[0, :pads] = torch.tensor([7, 30, 55])
    mask = torch.ones(batch.shape, dtype=torch.bool)
    mask[0, :pads] = False
    got, _ = mc.decode_in_chunks(model, batch, [8 + pads] + [1] * 6, mask=mask)
    again, cache = mc.decode_in_chunks(model, other, [8 + pads] + [1] * 6, mask=mask)
    assert torch.isfinite(got).all() and cache.layers[0].k_thin.shape[2] == 8 + pads - 3
    torch.testing.assert_close(again[0, pads:], got[0, pads:], atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_thin_keys_save_memory():
    model = mc.tiny_llama(PRUNED)
    sdpa = mc.tiny_llama(SDPAttention)
    tokens = mc.ids(T=13)
    cache, sdpa_cache = model.init_cache(2, max_len=14), sdpa.init_cache(2, max_len=14)
    model.step(tokens, cache)
    sdpa.step(tokens, sdpa_cache)
    B, Hkv, D, keep, n_thin, layers = 2, 2, 8, 4, 13 - 3, 2
    saved = layers * B * Hkv * n_thin * (D - keep) * 4  # fp32 channels not stored
    mask_bytes = layers * B * Hkv * keep * 8  # kept indices (long)
    assert cache.nbytes() == sdpa_cache.nbytes() - saved + mask_bytes
    key_bytes = sum(s.k_thin.nbytes + s.k_full.nbytes for s in cache.layers)
    assert key_bytes == sum(s.k.nbytes for s in sdpa_cache.layers) * (14 * 8 - 10 * 4) // (14 * 8)  # 36% fewer
    thin = [s.k_thin.clone() for s in cache.layers]
    model.step(tokens[:, :1], cache)  # decoding appends full width and leaves the thin part alone
    assert all(torch.equal(s.k_thin, t) for s, t in zip(cache.layers, thin))
    assert cache.layers[0].k_full.shape == (2, 2, 14 - n_thin, 8) and cache.nbytes() < sdpa_cache.nbytes()


def test_bad_arguments_and_config_values_are_named():
    for kw, msg in [({"ratio": 1.0}, r"ratio=1.0 must be in \[0, 1\)"), ({"obs_window": 0}, "obs_window=0 must be >= 1"),
                    ({"recent_size": -1}, "recent_size=-1 must be >= 0")]:
        with pytest.raises(ValueError, match=msg):
            ThinKAttention(32, 4, 2, 8, **kw)
    for overrides, want in [
        (["attention=think", "attention.ratio=1"], "attention.ratio=1: out of range; allowed: ratio >= 0 and < 1"),
        (["attention=think", "attention.ratio=-0.1"], "attention.ratio=-0.1: out of range; allowed: ratio >= 0 and < 1"),
        (["attention=think", "attention.obs_window=0"], "attention.obs_window=0: out of range; allowed: obs_window >= 1"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(overrides)
        assert info.value.problems == [want]
    cfg = load(["attention=think"]).attention
    assert (cfg.ratio, cfg.obs_window, cfg.recent_size) == (0.4, 32, 32)


def test_query_driven_choice_reconstructs_logits_better_than_key_norm_or_random():
    """Spec test 5: ||Q K^T - Q_C K_C^T||_F of ThinK's channels <= key-norm's and random's, on keys
    whose largest channels the queries ignore (where key-norm pruning goes wrong)."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 16, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 40, 8, generator=g, dtype=torch.float64)
    q[..., :2] *= 0.01  # queries ignore channels 0, 1 ...
    k[..., :2] *= 10.0  # ... where the keys are largest
    logits = q[0, 0] @ k[0, 0].T

    def error(kept):
        return torch.linalg.matrix_norm(logits - q[0, 0, :, kept] @ k[0, 0, :, kept].T).item()

    ours = error(kept_channels(channel_scores(q, k)[0, 0], 4))
    by_key_norm = error(kept_channels(k[0, 0].norm(dim=0), 4))
    randoms = [error(torch.randperm(8, generator=g)[:4].sort().values) for _ in range(20)]
    assert ours < 0.8 * by_key_norm and ours <= min(randoms)


@pytest.mark.parametrize("kernel", [SDPAttention, NaiveAttention])
def test_key_pruning_is_a_state_option_of_the_plain_softmax_mixers(kernel):
    """One thin cache: a plain mixer asked for KeyPruning decodes as ThinKAttention does (bit for
    bit with the SDPA kernel; naive's prefill kernel differs from SDPA's only in rounding)."""
    think = mc.tiny_llama(PRUNED)
    plain = mc.tiny_llama(kernel)
    plain.load_state_dict(think.state_dict())
    tokens = mc.ids(T=14)
    pruning = KeyPruning(ratio=0.5, obs_window=4, recent_size=3)
    with torch.no_grad():
        want, _ = mc.decode_in_chunks(think, tokens, [8] + [1] * 6)
        cache = plain.init_cache(2, max_len=14, key_pruning=pruning)
        got = torch.cat([plain.step(tokens[:, :8], cache)] + [plain.step(tokens[:, t:t + 1], cache)
                                                              for t in range(8, 14)], 1)
    assert all(isinstance(s, ThinKState) and s.n_thin == 8 - 3 for s in cache.layers)
    if kernel is SDPAttention:
        assert torch.equal(got, want)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert isinstance(SDPAttention(32, 4, 2, 8).init_state(1, 4, key_pruning=KeyPruning(ratio=0.0)), KVState)
    with pytest.raises(ValueError, match="layer 3's token mixer SSMaxAttention cannot prune its key cache"):
        SSMaxAttention(32, 4, 2, 8, layer_idx=3).init_state(1, 4, key_pruning=pruning)
