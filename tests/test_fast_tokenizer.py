"""FAST action tokenizer (arXiv 2501.09747): DCT against the cosine formulas, the round-trip
bound, flatten order, malformed-stream counting, compression, persistence, the normaliser; and
data=actions (FAST-quantized chunks, the run's BPE as FAST's BPE half) through the runner."""

import math

import numpy as np
import pytest
import torch

from rizzrun.data.actions import (
    ActionChunks,
    chunk_trajectory,
    load_run_actions,
    min_jerk,
    next_chunk_rollout,
    reach_trajectories,
)
from rizzrun.errors import InputError
from rizzrun.tokenizers.fast import (
    FASTTokenizer,
    QuantileNormalizer,
    dct,
    dct_matrix,
    flatten_coefficients,
    idct,
    unflatten_coefficients,
)

F64 = torch.float64


def _direct_dct2(x):
    """DCT-II, orthonormal, by the textbook sum (independent of the matrix form)."""
    n = len(x)
    out = []
    for k in range(n):
        s = sum(x[t] * math.cos(math.pi * (2 * t + 1) * k / (2 * n)) for t in range(n))
        out.append(s * (math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)))
    return out


def _direct_dct3(c):
    """DCT-III, orthonormal: x[t] = c0/sqrt(n) + sqrt(2/n) sum_{k>=1} c_k cos(pi (2t+1) k / 2n)."""
    n = len(c)
    return [c[0] / math.sqrt(n) + math.sqrt(2 / n) * sum(c[k] * math.cos(math.pi * (2 * t + 1) * k / (2 * n))
                                                        for k in range(1, n)) for t in range(n)]


def _smooth_chunks(n, horizon, dims, seed=0, amplitude=1.0, noise=0.0):
    """Sums of a few low-frequency cosines (+ optional noise): what 1 s of smooth control looks like."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, horizon, dtype=F64)[:, None]
    out = []
    for _ in range(n):
        a = torch.zeros(horizon, dims, dtype=F64)
        for _ in range(3):
            freq = torch.rand(1, dims, generator=g, dtype=F64) * 3
            phase = torch.rand(1, dims, generator=g, dtype=F64) * 2 * math.pi
            amp = (torch.rand(1, dims, generator=g, dtype=F64) * 2 - 1) * amplitude / 3
            a = a + amp * torch.cos(2 * math.pi * freq * t + phase)
        out.append(a + noise * torch.randn(horizon, dims, generator=g, dtype=F64))
    return out


@pytest.fixture(scope="module")
def fitted():
    chunks = _smooth_chunks(40, 20, 3, seed=1)
    return FASTTokenizer(scale=10, vocab_size=300, normalize=False).fit(chunks), chunks


# -- DCT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_dct_matches_direct_cosine_formulas_fp64(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, dtype=F64, generator=g)
    c = dct(x, dim=0)
    want = torch.tensor([_direct_dct2(x[:, j].tolist()) for j in range(3)], dtype=F64).T
    torch.testing.assert_close(c, want, rtol=0, atol=1e-12)
    want_inv = torch.tensor([_direct_dct3(c[:, j].tolist()) for j in range(3)], dtype=F64).T
    torch.testing.assert_close(idct(c, dim=0), want_inv, rtol=0, atol=1e-12)
    torch.testing.assert_close(idct(c, dim=0), x, rtol=0, atol=1e-12)
    m = dct_matrix(n)
    torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=F64), rtol=0, atol=1e-12)


def test_dct_along_other_dim_and_isometry():
    x = torch.randn(4, 9, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dct(x, dim=1), dct(x.T, dim=0).T, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.norm(dct(x, dim=1)), torch.linalg.norm(x), rtol=1e-13, atol=0)
    torch.testing.assert_close(idct(dct(x, dim=1), dim=1), x, rtol=0, atol=1e-12)


# -- round trips -------------------------------------------------------------------------


def test_no_rounding_is_identity(fitted):
    """gamma -> infinity in float: the unrounded coefficients invert exactly (equivalence 2)."""
    tok, chunks = fitted
    for a in chunks[:5]:
        back = tok.from_integers(flatten_coefficients(tok.coefficients(a)), len(a))
        torch.testing.assert_close(back, a, rtol=0, atol=1e-12)
    # With the normaliser inside, too.
    tok_n = FASTTokenizer(scale=10, vocab_size=300).fit(chunks)
    a = chunks[0] * 5 + 3
    torch.testing.assert_close(tok_n.from_integers(flatten_coefficients(tok_n.coefficients(a)), len(a)), a,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [5, 10, 20])
def test_round_trip_within_bound(scale):
    chunks = _smooth_chunks(30, 16, 2, seed=scale)
    tok = FASTTokenizer(scale=scale, vocab_size=1024, normalize=False).fit(chunks)
    test = _smooth_chunks(10, 16, 2, seed=100 + scale) + chunks[:3]
    bound = math.sqrt(16 * 2) / (2 * scale)
    errors = []
    for a in test:
        q = tok.to_integers(a)
        clamp = torch.linalg.norm((q - q.clamp(tok.min_token, tok.max_token)).to(F64)) / scale
        err = torch.linalg.norm(a - tok.decode(tok.encode(a), len(a)))
        assert err <= bound + clamp + 1e-12
        errors.append(float(err))
    assert max(errors) > 0  # rounding really happened
    assert tok.failures == {}


def test_round_trip_exact_for_multiples_of_one_over_gamma():
    scale = 10
    g = torch.Generator().manual_seed(3)
    chunks = [idct(torch.randint(-15, 16, (12, 3), generator=g).to(F64) / scale, dim=0) for _ in range(20)]
    tok = FASTTokenizer(scale=scale, vocab_size=256, normalize=False).fit(chunks)
    for a in chunks:
        torch.testing.assert_close(tok.decode(tok.encode(a), 12), a, rtol=0, atol=1e-12)


def test_every_value_of_the_range_encodes_even_if_unseen_in_training():
    """Training sees only even integers in -150..150 (2-byte characters included); a chunk using
    every integer of the range (odd ones never seen) still round-trips exactly: no value is
    dropped by the byte-level pre-tokenizer."""
    scale, h, d = 10, 151, 2
    g = torch.Generator().manual_seed(13)
    train = []
    for _ in range(10):
        q = torch.randint(-75, 76, (h, d), generator=g) * 2
        q[0, 0], q[0, 1] = -150, 150
        train.append(idct(q.to(F64) / scale, dim=0))
    tok = FASTTokenizer(scale=scale, vocab_size=512, normalize=False).fit(train)
    assert (tok.min_token, tok.max_token) == (-150, 150)
    every = torch.arange(-150, 152).reshape(h, d)
    every[-1, -1] = 0
    a = idct(every.to(F64) / scale, dim=0)
    torch.testing.assert_close(tok.decode(tok.encode(a), h), a, rtol=0, atol=1e-12)
    assert tok.failures == {}


def test_clamped_coefficients_counted_and_bounded(fitted):
    tok, chunks = fitted
    tok.reset_counters()
    a = chunks[0] * 40  # far outside the fitted range
    q = tok.to_integers(a)
    clamp = torch.linalg.norm((q - q.clamp(tok.min_token, tok.max_token)).to(F64)) / tok.scale
    back = tok.decode(tok.encode(a), len(a))
    assert tok.clamped == int((q != q.clamp(tok.min_token, tok.max_token)).sum()) > 0
    assert torch.linalg.norm(a - back) <= math.sqrt(a.numel()) / (2 * tok.scale) + clamp + 1e-12


def test_ragged_horizons():
    chunks = _smooth_chunks(20, 10, 2, seed=4) + _smooth_chunks(20, 25, 2, seed=5)
    tok = FASTTokenizer(scale=10, vocab_size=512, normalize=False).fit(chunks)
    for a in (chunks[0], chunks[-1]):
        err = torch.linalg.norm(a - tok.decode(tok.encode(a), len(a)))
        assert err <= math.sqrt(a.numel()) / 20 + 1e-12


# -- flatten order -----------------------------------------------------------------------


def test_flatten_order_frequency_major():
    c = torch.tensor([[0, 1], [10, 11], [20, 21]])  # c[k, d]: frequency k, dim d
    assert flatten_coefficients(c).tolist() == [0, 1, 10, 11, 20, 21]
    assert unflatten_coefficients(flatten_coefficients(c), 3, 2).tolist() == c.tolist()


def test_flatten_order_through_the_tokenizer():
    """A chunk whose scaled DCT is a hand-made 3x2 integer matrix: the integer stream and the
    BPE string follow [c00, c01, c10, c11, c20, c21]."""
    scale = 10
    q = torch.tensor([[5, -3], [2, 7], [-1, 0]])
    chunks = [idct(q.to(F64) / scale, dim=0), idct(-q.to(F64) / scale, dim=0)]
    tok = FASTTokenizer(scale=scale, vocab_size=64, normalize=False).fit(chunks)
    assert tok.to_integers(chunks[0]).tolist() == [5, -3, 2, 7, -1, 0]
    assert (tok.min_token, tok.max_token) == (-7, 7)
    assert [ord(ch) for ch in tok.chunk_string(chunks[0])] == [12, 4, 9, 14, 6, 7]


# -- malformed streams -------------------------------------------------------------------


def test_malformed_streams_are_counted_not_zeroed(fitted):
    tok, chunks = fitted
    tok.reset_counters()
    ids = tok.encode(chunks[0])
    assert tok.decode(ids, 20) is not None
    assert tok.decode(ids[:-1], 20) is None  # too few coefficients
    assert tok.decode(ids + ids, 20) is None  # too many
    assert tok.decode(ids + [tok.trained_vocab_size], 20) is None  # unknown id
    assert tok.decode([-1], 20) is None
    assert tok.decode([], 20) is None
    assert tok.failures == {"length": 3, "unknown_id": 2}
    assert tok.decoded == 6 and tok.failure_rate == pytest.approx(5 / 6)
    # The reference's zero chunk, explicit and still counted; or an error.
    zeros = tok.decode(ids[:-1], 20, on_failure="zeros")
    assert torch.equal(zeros, torch.zeros(20, 3, dtype=F64)) and tok.failures["length"] == 4
    with pytest.raises(ValueError, match="malformed token stream \\(length\\)"):
        tok.decode(ids[:-1], 20, on_failure="raise")
    assert tok.failures["length"] == 5
    chunks_out, ok = tok.decode_batch([ids, ids[:-1], ids], 20)
    assert ok.tolist() == [True, False, True] and chunks_out.shape == (3, 20, 3)
    assert torch.equal(chunks_out[1], torch.zeros(20, 3, dtype=F64))


def test_repair_cuts_or_zero_pads_the_highest_frequencies_and_still_counts():
    scale = 10
    q = torch.zeros(8, 2, dtype=torch.int64)
    q[:3] = torch.tensor([[9, -4], [3, 5], [-2, 1]])  # frequencies 3.. are zero
    a = idct(q.to(F64) / scale, dim=0)
    tok = FASTTokenizer(scale=scale, vocab_size=64, normalize=False).fit([a, -a])
    quant = tok.quantizer
    text = quant.to_text(a)
    zero = chr(-tok.min_token)
    # Missing zeros are padded back; extra coefficients (zero or not) are cut off.
    for bad in (text[:7], text[:-1], text + zero * 3, text + chr(0)):
        assert quant.from_text(bad, 8) is None
        torch.testing.assert_close(quant.from_text(bad, 8, on_failure="repair"), a, rtol=0, atol=1e-12)
    assert quant.failures == {"length": 8}
    # The repaired chunk of a stream cut inside the non-zero part is the low-pass guess.
    cut = quant.from_text(text[:4], 8, on_failure="repair")
    want = q.clone()
    want[2:] = 0
    torch.testing.assert_close(cut, idct(want.to(F64) / scale, dim=0), rtol=0, atol=1e-12)
    assert quant.from_text(text[:-1] + chr(500), 8, on_failure="repair") is None  # a bad char is not repaired
    assert quant.failures == {"length": 9, "bad_char": 1}


def test_invalid_utf8_is_a_bad_char_failure():
    """Code points >= 128 are two UTF-8 bytes; a lone byte decodes to U+FFFD, outside the alphabet."""
    chunks = _smooth_chunks(30, 16, 2, seed=7, amplitude=3.0)
    tok = FASTTokenizer(scale=20, vocab_size=1024, normalize=False).fit(chunks)
    assert tok.max_token - tok.min_token >= 128
    lone = [i for i in range(tok.trained_vocab_size) if "\ufffd" in tok._bpe.decode([i])]
    assert lone, "expected byte tokens that are not whole characters"
    good = tok.encode(chunks[0])
    assert tok.decode(good[:-1] + [lone[0]], 16) is None
    assert tok.failures["bad_char"] == 1


# -- compression ---------------------------------------------------------------------------


def test_token_count_monotone_in_scale_and_far_below_binning():
    horizon, dims = 50, 2
    train = _smooth_chunks(60, horizon, dims, seed=8, noise=0.03)
    test = _smooth_chunks(15, horizon, dims, seed=9, noise=0.03)
    means = []
    for scale in (2, 5, 10, 20):
        tok = FASTTokenizer(scale=scale, vocab_size=256, normalize=False).fit(train)
        means.append(sum(len(tok.encode(a)) for a in test) / len(test))
    assert all(a <= b for a, b in zip(means, means[1:])), means
    assert means[2] < horizon * dims / 3, means  # gamma = 10 vs one token per entry


# -- persistence ---------------------------------------------------------------------------


def test_save_load_identical_ids(tmp_path):
    chunks = _smooth_chunks(30, 20, 3, seed=10)
    chunks = [c * 4 + 1 for c in chunks]
    tok = FASTTokenizer(scale=10, vocab_size=400).fit(chunks)
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "fast.json").is_file()
    back = FASTTokenizer.load(tmp_path)
    assert (back.scale, back.min_token, back.max_token, back.dims) == (tok.scale, tok.min_token, tok.max_token, 3)
    test = _smooth_chunks(5, 20, 3, seed=11)
    for a in chunks[:5] + test:
        ids = tok.encode(a)
        assert back.encode(a) == ids
        torch.testing.assert_close(back.decode(ids, 20), tok.decode(ids, 20), rtol=0, atol=0)
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size() == tok.trained_vocab_size
    with pytest.raises(FileNotFoundError, match="fast.json"):
        FASTTokenizer.load(tmp_path / "missing")


# -- normaliser ----------------------------------------------------------------------------


def test_normalizer_maps_quantiles_to_minus_one_and_one():
    g = torch.Generator().manual_seed(12)
    chunks = [torch.randn(30, 4, generator=g, dtype=F64) * torch.tensor([1, 5, 0.1, 20], dtype=F64)
              + torch.tensor([0, -3, 7, 1], dtype=F64) for _ in range(10)]
    norm = QuantileNormalizer().fit(chunks)
    rows = torch.cat(chunks).numpy()
    q01, q99 = np.quantile(rows, 0.01, axis=0), np.quantile(rows, 0.99, axis=0)
    np.testing.assert_allclose(norm.q_low.numpy(), q01, rtol=1e-12)
    np.testing.assert_allclose(norm.q_high.numpy(), q99, rtol=1e-12)
    out = norm.normalize(torch.stack([norm.q_low, norm.q_high]))
    torch.testing.assert_close(out[0], -torch.ones(4, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1], torch.ones(4, dtype=F64), rtol=0, atol=1e-4)  # eps = 1e-6
    x = torch.cat(chunks)
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x, rtol=0, atol=1e-12)
    # No clipping by default (openpi); clip=True clips to [-1, 1].
    assert norm.normalize(x).abs().max() > 1
    clipped = QuantileNormalizer(clip=True).fit(chunks).normalize(x)
    assert clipped.abs().max() == 1


# -- bad input -----------------------------------------------------------------------------


def test_bad_inputs_are_one_line_value_errors(fitted):
    tok, chunks = fitted
    cases = [
        (lambda: tok.encode(torch.zeros(20)), "shape \\(H, D\\)"),
        (lambda: tok.encode(torch.zeros(2, 20, 3)), "shape \\(H, D\\)"),
        (lambda: tok.encode(torch.zeros(20, 2)), "D=2 .* D=3"),
        (lambda: tok.encode(torch.full((20, 3), float("nan"))), "NaN"),
        (lambda: tok.decode([1], 0), "horizon=0"),
        (lambda: tok.decode([1], 20, dims=4), "dims=4"),
        (lambda: tok.decode([1], 20, on_failure="ignore"), "on_failure='ignore'"),
        (lambda: FASTTokenizer(scale=0), "scale=0"),
        (lambda: FASTTokenizer(vocab_size=0), "vocab_size=0"),
        (lambda: FASTTokenizer().fit([]), "no chunks"),
        (lambda: FASTTokenizer().fit([torch.zeros(5, 2), torch.zeros(5, 3)]), "differ in D"),
        (lambda: FASTTokenizer(scale=10, vocab_size=20, normalize=False).fit([c * 5 for c in chunks]),
         "more than vocab_size=20"),
        (lambda: QuantileNormalizer(low=0.9, high=0.1), "low < high"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            fn()
        assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="not fitted"):
        FASTTokenizer().encode(torch.zeros(4, 2))


# -- data=actions: FAST through the runner -------------------------------------------------

def test_min_jerk_profile():
    x0, x1 = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([2.0, -1.0], dtype=F64)
    path = min_jerk(x0, x1, 4)
    # s = 1/4, 1/2, 3/4, 1: 10 s^3 - 15 s^4 + 6 s^5 = 0.103515625, 0.5, 0.896484375, 1 (by hand)
    blend = torch.tensor([0.103515625, 0.5, 0.896484375, 1.0], dtype=F64)[:, None]
    torch.testing.assert_close(path, x0 + (x1 - x0) * blend, rtol=0, atol=1e-15)
    fine = min_jerk(x0, x1, 1000)
    assert (fine[1] - fine[0]).abs().max() < 1e-6 and (fine[-1] - fine[-2]).abs().max() < 1e-6  # rests at both ends


def test_trajectories_are_deterministic_and_split_apart():
    a = reach_trajectories(3, 2, 20, 5, trajectory_seed=1, split="train")
    assert [t.shape for t in a] == [(100, 2)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, reach_trajectories(3, 2, 20, 5, trajectory_seed=1)))
    assert not torch.equal(a[0], reach_trajectories(3, 2, 20, 5, trajectory_seed=1, split="val")[0])
    chunks = chunk_trajectory(a[0][:45], 20)
    assert len(chunks) == 2 and torch.equal(chunks[1], a[0][20:40])


def _actions(tmp_path, **kw):
    from rizzrun.tokenizers.bpe import BPETokenizer

    data = ActionChunks(**{"n_train": 30, "n_val": 4, "dims": 2, "hz": 20, "seconds": 5, "seq_len": 64,
                           "batch_size": 4, "cache_dir": str(tmp_path), **kw})
    tok = BPETokenizer(vocab_size=300, cache_dir=str(tmp_path))
    tok.prepare(data.train_texts, data.fingerprint)
    return data, tok


def test_action_documents_round_trip_through_the_run_tokenizer(tmp_path):
    data, tok = _actions(tmp_path)
    q = data.quantizer
    assert len(data.documents("train")) == 30 * 5 and data.horizon == 20
    bound = math.sqrt(20 * 2) / (2 * q.scale)
    for traj in data.chunks("val"):
        for c in traj:
            ids = data.encode_chunk(tok, c)
            assert len(ids) < 20 * 2  # BPE compresses the 40 coefficients
            back = data.decode_ids(tok, ids + [tok.eos_id, 7, 7])  # what follows EOS is not the chunk's
            ints = q.to_integers(c)
            clamp = torch.linalg.norm((ints - ints.clamp(q.min_token, q.max_token)).to(F64)) / q.scale
            err = torch.linalg.norm(q.normalizer.normalize(c) - q.normalizer.normalize(back))
            assert err <= bound + clamp + 1e-9
    assert q.failures == {}


def test_action_decode_counts_malformed_streams(tmp_path):
    data, tok = _actions(tmp_path)
    q = data.quantizer
    q.reset_counters()
    ids = data.encode_chunk(tok, data.chunks("val")[0][0])
    assert data.decode_ids(tok, ids[:-1]) is None
    assert data.decode_ids(tok, [tok.pad_id, *ids]) is None
    assert data.decode_ids(tok, [*ids, tok.trained_vocab_size]) is None
    assert data.decode_ids(tok, ids + ids) is None
    assert q.failures == {"length": 2, "special_id": 1, "unknown_id": 1} and q.decoded == 4
    assert torch.equal(data.decode_ids(tok, ids[:-1], on_failure="zeros"), torch.zeros(20, 2, dtype=F64))
    with pytest.raises(ValueError, match="on_failure='skip'"):
        data.decode_ids(tok, [tok.pad_id], on_failure="skip")


def test_action_options_are_checked():
    with pytest.raises(InputError, match="data.chunk_seconds=20"):
        ActionChunks(chunk_seconds=20)
    with pytest.raises(InputError, match="data.noise=-1"):
        ActionChunks(noise=-1)
    with pytest.raises(InputError, match="data.scale=1000.0, data.max_range=1024: .* more than vocab_size=1024"):
        ActionChunks(n_train=2, scale=1000.0).quantizer


def test_actions_train_through_the_runner_and_decode_from_the_run(tmp_path, shared_cache):
    from rizzrun.config import compose
    from rizzrun.runner.generate import load_run_model
    from rizzrun.runner.train import run

    cfg = compose(["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
                   "logger=none", f"cache_dir={shared_cache}", "data=actions", "data.n_train=20", "data.n_val=2",
                   "data.seconds=4", "data.seq_len=32", "data.batch_size=4", "tokenizer=bpe",
                   "tokenizer.vocab_size=300", "trainer.max_steps=2", "trainer.val_every=2", "trainer.val_batches=1",
                   "trainer.samples_per_val=0"])
    assert run(cfg, tmp_path / "run")["status"] == "completed"
    data, tok = load_run_actions(tmp_path / "run")
    model, run_tok = load_run_model(tmp_path / "run")
    assert tok.fingerprint == run_tok.fingerprint
    rolled = next_chunk_rollout(model, tok, data, limit=3)
    assert rolled["pairs"] == 3 and 0 <= rolled["failure_rate"] <= 1
    assert sum(rolled["failures"].values()) == round(rolled["failure_rate"] * 3)
    assert rolled["floor_mse"] < 0.05
    with pytest.raises(ValueError, match="load_run_actions reads runs of data=actions"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.yaml").write_text("data:\n  _target_: rizzrun.data.pydoc.PyDocCorpus\n")
        load_run_actions(tmp_path / "other")
