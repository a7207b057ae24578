"""The token-mixer contract (rizzrun.attention), checked the same way for every mixer.

A mixer factory goes into a tiny Llama; each check compares two formulations the contract says
are equal: parallel forward == cached decoding (prefill, token by token, mixed chunks), a
left-padded row == the same row unpadded, outputs before t unchanged when token t changes, a
reset cache reuses its memory and gives the same logits. Imported by tests/test_mixers.py and
the method tests (not collected itself).
"""

from __future__ import annotations

import torch

from rizzrun.models.llama import Llama

V = 61
TINY = dict(d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=40, init_std=0.2)
CHUNKS = {"prefill": [13], "token-by-token": [1] * 13, "mixed": [4, 1, 3, 1, 4], "chunked": [6, 7]}


def tiny_llama(factory, seed: int = 0, **dims) -> Llama:
    torch.manual_seed(seed)
    return Llama(V, **{**TINY, **dims}, attention=factory).eval()


def ids(B: int = 2, T: int = 13, seed: int = 1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def decode_in_chunks(model, tokens, chunks, mask=None):
    cache = model.init_cache(tokens.shape[0], max_len=sum(chunks))
    out, start = [], 0
    for n in chunks:
        part = None if mask is None or start else mask[:, :n]
        out.append(model.step(tokens[:, start:start + n], cache, key_padding_mask=part))
        start += n
    return torch.cat(out, 1), cache


@torch.no_grad()
def check_decode_matches_parallel(model, atol=1e-5):
    tokens = ids()
    full = model(tokens)
    for name, chunks in CHUNKS.items():
        got, cache = decode_in_chunks(model, tokens, chunks)
        assert cache.pos == tokens.shape[1]
        torch.testing.assert_close(got, full, atol=atol, rtol=atol, msg=lambda m: f"{name}: {m}")


@torch.no_grad()
def check_left_padding(model, atol=1e-5, pads=3):
    """Row 0 left-padded by `pads` gives the unpadded row's logits, in parallel and decoding."""
    real = ids(B=1, T=10)
    batch = torch.cat([torch.cat([torch.zeros(1, pads, dtype=torch.long), real], 1), ids(B=1, T=10 + pads, seed=5)])
    mask = torch.ones(batch.shape, dtype=torch.bool)
    mask[0, :pads] = False
    want = model(real)[0]
    got = model(batch, key_padding_mask=mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0, pads:], want, atol=atol, rtol=atol)
    torch.testing.assert_close(got[1], model(batch[1:])[0], atol=atol, rtol=atol)
    decoded, _ = decode_in_chunks(model, batch, [7] + [1] * (batch.shape[1] - 7), mask=mask)
    torch.testing.assert_close(decoded[0, pads:], want, atol=atol, rtol=atol)


@torch.no_grad()
def check_causal(model):
    tokens = ids()
    changed = tokens.clone()
    t = 7
    changed[:, t] = (changed[:, t] + 1) % V
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(b[:, :t], a[:, :t], atol=0, rtol=0)
    assert (b[:, t:] - a[:, t:]).abs().max() > 1e-4


@torch.no_grad()
def check_reset_reuses_memory(model):
    tokens = ids()
    cache = model.init_cache(2, max_len=tokens.shape[1])
    first = model.step(tokens, cache)
    size = cache.nbytes()
    cache.reset()
    again = model.step(tokens, cache)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    assert cache.nbytes() == size


def check_trains(model):
    """One backward: every parameter gets a finite gradient, and at least one is non-zero."""
    model.train()
    tokens = ids()
    loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().max() > 0 for p in model.parameters())
    model.eval()


ALL_CHECKS = (check_decode_matches_parallel, check_left_padding, check_causal, check_reset_reuses_memory, check_trains)
