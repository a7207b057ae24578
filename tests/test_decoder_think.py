"""ThinK as a decoder (Xu et al., arXiv 2407.21018; spec methods/attention/think.md): the thin key
cache through `decoder=think` on any model whose mixers keep a plain softmax cache. Checked:
ratio 0 == Greedy / Sample bit for bit (tokens and every step's logits); decoding == an
independent fp64 recomputation from scratch whose old prompt keys have their pruned channels
zeroed (kept channels re-derived from the official mean-of-squares score; equivalences 2 and 3);
SDPA, naive and ThinKAttention models; left padding; key-cache bytes; the chi-squared sampling
statistics (equivalence 7); mixers that cannot prune are named."""

from functools import partial

import pytest
import torch

import mixer_checks as mc
from rizzrun.attention.fam import FAMAttention
from rizzrun.attention.hybrid import hybrid
from rizzrun.attention.lightning import LightningAttention
from rizzrun.attention.naive import NaiveAttention, naive_attention
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.attention.selective import SelectiveAttention
from rizzrun.attention.softmax import KVState
from rizzrun.attention.ssmax import SSMaxAttention
from rizzrun.attention.think import KeyPruning, ThinKAttention, ThinKState
from rizzrun.decoders import Greedy, Sample, ThinK
from rizzrun.models.rwkv import RWKV
from sampling_checks import chi2_pvalue

# TINY: 2 layers, 4 heads of dim 8, 2 KV heads; ratio 0.5 keeps 4 channels.
PRUNE = dict(ratio=0.5, obs_window=4, recent_size=3)


def traced(decoder, model, prompt, **kw):
    """(output ids, the scores (B, n, V) each step's choice saw)."""
    seen, choose = [], decoder.choose
    decoder.choose = lambda scores, gen: (seen.append(scores.clone()), choose(scores, gen))[1]
    try:
        out = decoder.generate(model, prompt, **kw)
    finally:
        del decoder.choose
    return out, torch.stack(seen, 1)


def prompts(lengths=(13, 10, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, mc.V, (n,), generator=g).tolist() for n in lengths]


class ZeroedKeys(NaiveAttention):
    """Reference (fp64, recomputed from scratch, no cache): queries at positions >= P see the keys
    of positions < P - recent_size with their pruned channels zeroed; earlier queries see all keys.
    Kept channels per (row, KV head): the official mean-of-squares score over the real
    observation queries of the group's heads and the real prompt keys, written as loops."""

    prompt_len = None
    pruning = KeyPruning()

    def forward(self, x, positions, state=None):
        assert state is None and positions.start == 0
        B, T, _ = x.shape
        P, pr, D, Hkv = self.prompt_len, self.pruning, self.head_dim, self.n_kv_head
        group = self.n_head // Hkv
        q, k, v = self.project(x, positions)
        mask = positions.key_padding_mask
        mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
        keep, n_thin, W = pr.keep(D), P - pr.recent_size, min(pr.obs_window, P)
        zeroed = k.clone()
        for b in range(B):
            real = mask[b].tolist()
            for h in range(Hkv):
                qs = torch.stack([q[b, hq, t] for hq in range(h * group, (h + 1) * group) for t in range(P - W, P)
                                  if real[t]])
                ks = torch.stack([k[b, h, t] for t in range(P) if real[t]])
                score = [(qs[:, j].square().mean() * ks[:, j].square().mean()).item() for j in range(D)]
                kept = sorted(sorted(range(D), key=lambda j: (-score[j], j))[:keep])
                for j in set(range(D)) - set(kept):
                    zeroed[b, h, :max(n_thin, 0), j] = 0.0
        o = torch.cat([naive_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P], mask[:, :P]),
                       naive_attention(q[:, :, P:], zeroed, v, mask)], 2)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))


def reference_logits(model, out, mask, P, pruning):
    """Logits (B, n, V) of positions P-1 .. T-2 of `out` by the ZeroedKeys recomputation."""
    ref = mc.tiny_llama(ZeroedKeys).double()
    ref.load_state_dict(model.state_dict())
    for block in ref.blocks:
        block.attn.prompt_len, block.attn.pruning = P, pruning
    with torch.no_grad():
        return ref(out, key_padding_mask=mask)[:, P - 1:-1]


@pytest.mark.parametrize("attention", [SDPAttention, NaiveAttention])
def test_ratio_zero_is_greedy_and_sample_bit_for_bit(attention):
    model = mc.tiny_llama(attention)
    batch = prompts()
    for plain, kw in [(Greedy(max_new_tokens=8), {}),
                      (Sample(max_new_tokens=8, temperature=0.9, top_k=20, seed=3),
                       dict(do_sample=True, temperature=0.9, top_k=20, seed=3))]:
        want, want_scores = traced(plain, model, batch)
        # ratio 0; a ratio pruning no channel of 8 (floor(0.1 * 8) = 0); a prompt within recent_size
        for think in (ThinK(0.0, max_new_tokens=8, **kw), ThinK(0.1, max_new_tokens=8, **kw),
                      ThinK(0.5, 4, 13, max_new_tokens=8, **kw)):
            got, scores = traced(think, model, batch)
            assert torch.equal(got, want) and torch.equal(scores, want_scores)
    state = ThinK(0.5, 4, 13).stepper(model, 1, 20, None).cache.layers[0]
    assert isinstance(state, ThinKState)  # the last case did run through the thin cache's code
    assert isinstance(ThinK(0.0).stepper(model, 1, 20, None).cache.layers[0], KVState)


@pytest.mark.parametrize("attention", [SDPAttention, NaiveAttention])
def test_decoding_equals_zeroed_channels_recomputation(attention):
    """fp64 model: every step's logits == the from-scratch reference (1e-6 after the fp32 cast the
    loop makes), on a left-padded batch; pruning must change them (else this proves nothing)."""
    model = mc.tiny_llama(attention).double()
    batch = prompts()
    pruning = KeyPruning(**PRUNE)
    out, scores = traced(ThinK(**PRUNE, max_new_tokens=8), model, batch)
    mask = torch.tensor([[0] * (13 - len(p)) + [1] * (len(p) + 8) for p in batch], dtype=torch.bool)
    want = reference_logits(model, out, mask, 13, pruning)
    torch.testing.assert_close(scores, want.float(), atol=1e-6, rtol=1e-6)
    assert torch.equal(out[:, 13:], want.argmax(-1))
    unpruned = model(out, key_padding_mask=mask)[:, 12:-1]
    assert (unpruned[:, 1:] - want[:, 1:]).abs().max() > 1e-2


def test_fp32_decoding_matches_the_reference():
    model = mc.tiny_llama(SDPAttention)
    batch = prompts((13, 13))
    out, scores = traced(ThinK(**PRUNE, max_new_tokens=10), model, torch.tensor(batch))
    ref_model = model.double()
    want = reference_logits(ref_model, out, torch.ones(out.shape, dtype=torch.bool), 13, KeyPruning(**PRUNE))
    torch.testing.assert_close(scores.double(), want, atol=1e-5, rtol=1e-5)


def test_a_think_model_decodes_with_its_own_or_the_decoders_settings():
    think = mc.tiny_llama(partial(ThinKAttention, **PRUNE))
    sdpa = mc.tiny_llama(SDPAttention)
    sdpa.load_state_dict(think.state_dict())
    batch = prompts()
    runs = [((Greedy(max_new_tokens=8), think), (ThinK(**PRUNE, max_new_tokens=8), sdpa)),
            ((ThinK(0.25, 6, 2, max_new_tokens=8), think), (ThinK(0.25, 6, 2, max_new_tokens=8), sdpa)),
            ((ThinK(0.0, max_new_tokens=8), think), (Greedy(max_new_tokens=8), sdpa))]
    for (d1, m1), (d2, m2) in runs:
        a, sa = traced(d1, m1, batch)
        b, sb = traced(d2, m2, batch)
        assert torch.equal(a, b) and torch.equal(sa, sb)
    _, pruned = traced(ThinK(**PRUNE, max_new_tokens=8), sdpa, batch)
    _, other = traced(ThinK(0.25, 6, 2, max_new_tokens=8), sdpa, batch)
    assert not torch.equal(pruned, other)  # the decoder's settings replaced the model's


def test_left_padded_rows_decode_as_each_row_alone_with_its_padding():
    """Post-RoPE scores depend on absolute positions (module docstring of rizzrun.attention.think),
    so a padded row equals that row decoded alone with the same padding, whatever the pads hold."""
    model = mc.tiny_llama(SDPAttention)
    batch = prompts()
    out, scores = traced(ThinK(**PRUNE, max_new_tokens=8), model, batch, pad_token_id=0)
    for b, p in enumerate(batch):
        pads = 13 - len(p)
        for pad_id in (0, 17):
            ids = torch.tensor([[pad_id] * pads + p])
            mask = torch.tensor([[0] * pads + [1] * len(p)])
            alone, alone_scores = traced(ThinK(**PRUNE, max_new_tokens=8), model, ids, attention_mask=mask)
            assert torch.equal(alone[0, 13:], out[b, 13:])
            torch.testing.assert_close(alone_scores[0], scores[b], atol=1e-5, rtol=1e-5)


def test_key_cache_bytes_shrink_by_the_pruned_channels():
    model = mc.tiny_llama(SDPAttention)
    ids = torch.tensor(prompts((13, 13)))
    caches = {}
    for name, decoder in (("plain", Greedy(max_new_tokens=3)), ("thin", ThinK(**PRUNE, max_new_tokens=3))):
        class Kept(type(decoder)):
            def stepper(self, *a):
                s = super().stepper(*a)
                caches[name] = s.cache
                return s
        kept = Kept.__new__(Kept)
        kept.__dict__.update(decoder.__dict__)
        kept.generate(model, ids)
    plain, thin = caches["plain"], caches["thin"]
    layers, B, Hkv, D, keep, n_thin, max_len = 2, 2, 2, 8, 4, 13 - 3, 16
    assert all(s.k_thin.shape == (B, Hkv, n_thin, keep) and s.k_full.shape == (B, Hkv, max_len - n_thin, D)
               for s in thin.layers)
    saved = layers * B * Hkv * n_thin * (D - keep) * 4  # fp32 channels not stored
    assert plain.nbytes() - thin.nbytes() == saved - layers * B * Hkv * keep * 8  # kept indices (long)
    assert sum(s.key_nbytes() for s in thin.layers) == sum(s.k.nbytes for s in plain.layers) - saved


def test_sampling_frequencies_match_the_thin_cache_distribution():
    """Equivalence 7: 4000 rows of one prompt, two sampled tokens at temperature 0.5; the first
    from the prefill's softmax, the second (after the most drawn first token) from the softmax of
    the zeroed-channel reference -- and not from the unpruned model's."""
    model = mc.tiny_llama(SDPAttention, init_std=0.5)
    prompt = prompts((13,))[0]
    rows = 4000
    pruning = KeyPruning(0.75, 4, 2)
    out = ThinK(0.75, 4, 2, max_new_tokens=2, do_sample=True, temperature=0.5, seed=0).generate(
        model, torch.tensor([prompt] * rows))
    first = out[:, 13]
    top = int(torch.bincount(first, minlength=mc.V).argmax())
    chosen = out[first == top]
    ref = reference_logits(model.double(), chosen[:1], torch.ones(1, 15, dtype=torch.bool), 13, pruning)[0]
    with torch.no_grad():
        unpruned = model(chosen[:1])[0, 12:14]
    p_first = torch.softmax(ref[0] / 0.5, -1)
    assert chi2_pvalue(torch.bincount(first, minlength=mc.V), p_first) > 1e-3
    counts = torch.bincount(chosen[:, 14], minlength=mc.V)
    assert chi2_pvalue(counts, torch.softmax(ref[1] / 0.5, -1)) > 1e-3
    assert chi2_pvalue(counts, torch.softmax(unpruned[1] / 0.5, -1)) < 1e-6  # the test can tell


@pytest.mark.parametrize("factory,match", [
    (partial(LightningAttention, chunk_size=4), "layer 0's token mixer LightningAttention does not take"),
    (partial(hybrid, softmax_every=2, softmax=SDPAttention, other=partial(LightningAttention, chunk_size=4)),
     "layer 0's token mixer LightningAttention"),
    (SSMaxAttention, "layer 0's token mixer SSMaxAttention cannot prune its key cache"),
    (partial(SelectiveAttention, budget=5), "layer 0's token mixer SelectiveAttention does not take"),
    (partial(FAMAttention, block_size=4, memory_blocks=1, fam_len=2), "layer 0's token mixer FAMAttention"),
])
def test_mixers_that_cannot_prune_are_named(factory, match):
    with pytest.raises(ValueError, match=match):
        ThinK(max_new_tokens=2).generate(mc.tiny_llama(factory), torch.tensor([prompts((5,))[0]]))


def test_rwkv_and_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="RWKV keeps a fixed-size recurrent state.*key_pruning"):
        ThinK(max_new_tokens=2).generate(RWKV(mc.V, d_model=16, n_layer=2, max_seq_len=32).eval(), [[1, 2, 3]])
    for kw, msg in [({"ratio": 1.0}, r"ratio=1.0 must be in \[0, 1\)"), ({"ratio": -0.1}, r"ratio=-0.1 must be"),
                    ({"obs_window": 0}, "obs_window=0 must be >= 1"), ({"recent_size": -1}, "recent_size=-1 must be"),
                    ({"obs_window": 2.5}, r"obs_window=2.5 must be >= 1 \(an integer\)"),
                    ({"temperature": 0.0}, "temperature=0.0"), ({"do_sample": 1}, "do_sample=1")]:
        with pytest.raises(ValueError, match=msg):
            ThinK(**kw)
    with pytest.raises(ValueError, match="key_pruning=0.4 must be None or a rizzrun.attention.think.KeyPruning"):
        SDPAttention(32, 4, 2, 8).init_state(1, 4, key_pruning=0.4)
    assert ThinK().settings() == dict(max_new_tokens=64, repetition_penalty=1.0, min_new_tokens=0, do_sample=False,
                                      temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, seed=None, ratio=0.4,
                                      obs_window=32, recent_size=32)


def test_the_config_option_builds_the_decoder():
    from rizzrun.config import load
    from rizzrun.runner.build import build_decoder

    node = load(["decoder=think", "decoder.ratio=0.5", "decoder.obs_window=4", "decoder.recent_size=3",
                 "decoder.max_new_tokens=5"]).decoder
    decoder = build_decoder(node)
    assert isinstance(decoder, ThinK) and decoder.key_pruning == KeyPruning(**PRUNE)
    model = mc.tiny_llama(SDPAttention)
    assert torch.equal(decoder.generate(model, prompts()), ThinK(**PRUNE, max_new_tokens=5).generate(model, prompts()))
