"""Llama: parallel == KV-cached decoding, sdpa == naive kernel, logits == transformers'
LlamaForCausalLM, exact parameter counts of published shapes, and the dimension checks."""

import subprocess
import sys

import pytest
import torch
import transformers

from rizzrun.attention.naive import NaiveAttention
from rizzrun.models.hf_llama import from_hf_state_dict, to_hf_state_dict
from rizzrun.models.llama import Llama
from rizzrun.models.llama_sizes import LLAMA_SIZES, llama_dim_errors, resolve_llama_dims

V = 61
# Small shapes; a non-default rope_theta and norm_eps so a dropped setting shows in the logits.
SMALL = dict(d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=24,
             rope_theta=500.0, norm_eps=1e-6)


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    # init_std 0.1 makes the attention far from uniform, so RoPE and masks matter to the logits.
    return Llama(V, **{**SMALL, "init_std": 0.1, **overrides}).eval()


def _ids(B=2, T=11, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- decoding with the KV cache ------------------------------------------------------------

@pytest.mark.parametrize("chunks", [[11], [1] * 11, [4, 1, 3, 1, 2], [5, 6]],
                         ids=["prefill", "token-by-token", "mixed", "chunked"])
def test_cached_steps_match_parallel(chunks):
    model, ids = _model(), _ids()
    with torch.no_grad():
        full = model(ids)
        cache = model.init_cache(batch_size=2, max_len=16)
        buffers = [(state.k.data_ptr(), state.v.data_ptr()) for state in cache.layers]
        pieces, start = [], 0
        for n in chunks:
            pieces.append(model.step(ids[:, start:start + n], cache))
            start += n
    assert cache.pos == 11  # written in place: the layers' KV buffers are the ones allocated
    assert [(state.k.data_ptr(), state.v.data_ptr()) for state in cache.layers] == buffers
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_matches_unpadded_rows():
    """A row left-padded by 3 gives the logits of the same row unpadded, in parallel and cached."""
    model, ids = _model(), _ids(B=1, T=8)
    pad = torch.zeros(1, 3, dtype=torch.long)
    batch = torch.cat([torch.cat([pad, ids], 1), _ids(B=1, T=11, seed=5)])  # (2, 11)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        want = model(ids)[0]
        got = model(batch, key_padding_mask=mask)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got[0, 3:], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], model(batch[1:])[0], atol=1e-5, rtol=1e-5)

        cache = model.init_cache(2)
        prefill = model.step(batch[:, :7], cache, key_padding_mask=mask[:, :7])
        steps = [model.step(batch[:, t:t + 1], cache) for t in range(7, 11)]
    torch.testing.assert_close(torch.cat([prefill, *steps], 1), got, atol=1e-5, rtol=1e-5)


def test_cache_overflow_and_bad_batch_raise():
    model = _model()
    cache = model.init_cache(batch_size=2, max_len=8)
    with torch.no_grad():
        model.step(_ids(T=6), cache)
        with pytest.raises(ValueError, match=r"decoding cache overflow.*Tnew=3 > max_len=8; allowed Tnew <= 2"):
            model.step(_ids(T=3), cache)
        assert cache.pos == 6  # a refused step leaves the cache as it was
        model.step(_ids(T=2), cache)
        with pytest.raises(ValueError, match="overflow"):
            model.step(_ids(T=1), cache)
        with pytest.raises(ValueError, match="batch_size=2"):
            model.step(_ids(B=3, T=1), model.init_cache(batch_size=2))
    with pytest.raises(ValueError, match=r"max_len=25 must be an integer in \[1, max_seq_len=24\]"):
        model.init_cache(1, max_len=25)


def test_cache_reset_reuses_memory():
    model, ids = _model(), _ids()
    cache = model.init_cache(2, max_len=11)
    with torch.no_grad():
        first = model.step(ids, cache)
        cache.reset()
        again = model.step(ids, cache)
    torch.testing.assert_close(again, first, atol=0, rtol=0)


# ---- kernels ------------------------------------------------------------------------------

def test_sdpa_model_matches_naive_model():
    sdpa = _model()
    naive = Llama(V, **SMALL, attention=NaiveAttention).eval()
    naive.load_state_dict(sdpa.state_dict())
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(naive(ids), sdpa(ids), atol=1e-5, rtol=1e-5)


def test_attention_factory_is_called_per_layer():
    calls = []

    def factory(**kwargs):
        calls.append(kwargs)
        return NaiveAttention(**kwargs)

    Llama(V, **SMALL, attention=factory)
    assert calls == [dict(d_model=32, n_head=4, n_kv_head=2, head_dim=8, layer_idx=i, n_layer=2) for i in range(2)]


# ---- transformers parity -------------------------------------------------------------------

def _hf_model(cfg, attn_implementation):
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    return transformers.LlamaForCausalLM._from_config(
        hf_cfg, attn_implementation=attn_implementation, dtype=torch.float32).eval()


@pytest.mark.parametrize("tied,n_kv_head,impl", [
    (True, 2, "eager"), (False, 2, "eager"), (False, 4, "eager"), (True, 1, "sdpa")],
    ids=["tied-gqa", "untied-gqa", "untied-mha", "tied-mqa-hf-sdpa"])
def test_logits_match_transformers(tied, n_kv_head, impl):
    model = _model(tie_embeddings=tied, n_kv_head=n_kv_head)
    hf = _hf_model(model.config, impl)
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    ids = _ids(T=model.config.max_seq_len)
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert theirs.std() > 0.3  # logits far from zero, so 1e-5 is a tight bound
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_hf_state_dict_round_trip(tied):
    hf = _hf_model(_model(tie_embeddings=tied).config, "eager")
    hf_sd = hf.state_dict()
    model = from_hf_state_dict(Llama(V, **SMALL, tie_embeddings=tied), hf_sd)
    back = to_hf_state_dict(model)
    assert back.keys() == hf_sd.keys()
    for name, t in hf_sd.items():
        assert torch.equal(back[name], t), name
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=0)

    # and rizzrun -> transformers names -> a fresh rizzrun model: identical tensors
    fresh = from_hf_state_dict(Llama(V, **SMALL, tie_embeddings=tied, init_std=0.5), back)
    for name, t in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t), name


def test_hf_state_dict_errors():
    tied = _model(tie_embeddings=True)
    sd = to_hf_state_dict(tied)
    del sd["lm_head.weight"]  # tied checkpoints often store the shared matrix once
    from_hf_state_dict(tied, sd)
    assert tied.lm_head.weight is tied.embed.weight

    untied = _model(tie_embeddings=False)
    sd = to_hf_state_dict(untied)
    del sd["lm_head.weight"]
    sd["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    with pytest.raises(ValueError, match=r"unknown keys \['model.layers.0.self_attn.q_proj.bias'\], "
                                         r"missing keys \['lm_head.weight'\]"):
        from_hf_state_dict(untied, sd)


def test_state_dict_names():
    names = list(_model(n_layer=1, tie_embeddings=False).state_dict())
    assert names == ["embed.weight", "blocks.0.attn_norm.weight", "blocks.0.attn.q.weight",
                     "blocks.0.attn.k.weight", "blocks.0.attn.v.weight", "blocks.0.attn.out.weight",
                     "blocks.0.mlp_norm.weight", "blocks.0.mlp.gate.weight", "blocks.0.mlp.up.weight",
                     "blocks.0.mlp.down.weight", "norm.weight", "lm_head.weight"]


# ---- sizes, init, meta device --------------------------------------------------------------

@pytest.mark.parametrize("size,vocab,expected", [("1b", 32000, 1_100_048_384),
                                                 ("7b", 32000, 6_738_415_616)])
def test_published_parameter_counts(size, vocab, expected):
    """TinyLlama-1.1B and Llama-2-7B, as their model cards count them."""
    with torch.device("meta"):
        model = Llama(vocab, size=size)
    assert model.num_params() == expected


def test_tiny_size_and_tied_count():
    model = Llama(259)
    assert 1_000_000 < model.num_params() < 3_000_000
    by_hand = sum(p.numel() for name, p in model.named_parameters(remove_duplicate=False))
    assert model.num_params() == by_hand - 259 * 192  # the tied matrix once, not twice


def test_meta_device_then_materialise():
    with torch.device("meta"):
        model = Llama(V, **SMALL)
    assert model.rope_cos.is_meta and "rope_cos" not in model.state_dict()
    model.to_empty(device="cpu")
    if model.config.tie_embeddings:
        assert model.lm_head.weight is model.embed.weight
    model.reset_buffers()
    model.reset_parameters()
    reference = Llama(V, **SMALL)
    torch.testing.assert_close(model.rope_cos, reference.rope_cos, atol=0, rtol=0)
    torch.testing.assert_close(model.rope_sin, reference.rope_sin, atol=0, rtol=0)
    assert torch.isfinite(model(_ids())).all()


def test_rope_tables_are_the_rotation_angles():
    """Position p, pair j turns by p * theta^(-2j/D): checked against fp64 angles."""
    model = _model()
    D, theta = 8, 500.0
    p = torch.arange(24, dtype=torch.float64)[:, None]
    angles = p * theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    torch.testing.assert_close(model.rope_cos.double(), angles.cos().repeat(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.rope_sin.double(), angles.sin().repeat(1, 2), atol=1e-6, rtol=0)


def test_init_statistics():
    torch.manual_seed(0)
    model = Llama(512, d_model=256, n_layer=8, n_head=4, n_kv_head=4, d_ff=512, init_std=0.02)
    scaled = 0.02 / (2 * 8) ** 0.5
    block = model.blocks[3]
    for weight, std in [(model.embed.weight, 0.02), (block.attn.q.weight, 0.02),
                        (block.mlp.up.weight, 0.02), (block.attn.out.weight, scaled),
                        (block.mlp.down.weight, scaled)]:
        assert abs(weight.std().item() / std - 1) < 0.05
        assert abs(weight.mean().item()) < 0.1 * std
    assert all((n.weight == 1).all() for n in (block.attn_norm, block.mlp_norm, model.norm))


# ---- dimension checks ----------------------------------------------------------------------

def test_bad_dims_raise_naming_key_and_allowed_values():
    with pytest.raises(ValueError, match=r"n_head=5 must divide d_model=192; "
                                         r"allowed n_head: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96"):
        Llama(259, n_head=5)
    with pytest.raises(ValueError, match=r"size='huge' is not a Llama size; allowed: tiny, small, 1b, 7b"):
        Llama(259, size="huge")
    with pytest.raises(ValueError, match=r"vocab_size=0 must be a positive integer"):
        Llama(0)
    with pytest.raises(ValueError, match=r"T=25 tokens but max_seq_len=24; allowed T <= 24"):
        _model()(_ids(T=25))
    with pytest.raises(ValueError, match=r"unknown Llama dimension\(s\) n_heads; allowed: d_model"):
        resolve_llama_dims("tiny", n_heads=4)


def test_resolve_llama_dims():
    assert resolve_llama_dims("tiny") == LLAMA_SIZES["tiny"]
    dims = resolve_llama_dims("7b", n_layer=2, d_model=None)  # None takes the preset
    assert dims == {**LLAMA_SIZES["7b"], "n_layer": 2}
    assert LLAMA_SIZES["tiny"]["n_layer"] == 4  # presets are not mutated


def test_llama_dim_errors():
    assert llama_dim_errors({"size": "tiny"}) == []
    assert llama_dim_errors(resolve_llama_dims("1b")) == []
    # a whole model config node, extra keys and all
    assert llama_dim_errors({"_target_": "x", "size": "small", "vocab_size": 259, "n_head": None}) == []
    assert llama_dim_errors({"size": "tiny", "n_head": 64}) == [
        "head_dim = d_model/n_head = 192/64 = 3 must be even for RoPE; "
        "allowed n_head: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96"]
    assert llama_dim_errors({"size": "tiny", "n_kv_head": 4}, seq_len=300) == [
        "n_kv_head=4 must divide n_head=6; allowed n_kv_head: 1, 2, 3, 6",
        "seq_len=300 exceeds max_seq_len=256; allowed seq_len <= 256 (or raise max_seq_len)"]
    assert llama_dim_errors({"size": "tiny"}, seq_len=256) == []
    assert llama_dim_errors({"size": "tiny", "d_model": -8, "norm_eps": 0, "tie_embeddings": "yes"}) == [
        "d_model=-8 must be a positive integer", "norm_eps=0 must be a positive number",
        "tie_embeddings='yes' must be true or false"]
    assert llama_dim_errors({"size": "7B"}) == ["size='7B' is not a Llama size; allowed: tiny, small, 1b, 7b"]
    assert "missing" in llama_dim_errors({"d_model": 64})[0]


def test_llama_sizes_imports_no_torch():
    code = "import rizzrun.models.llama_sizes, rizzrun.models, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_file_imports_nothing_from_interop():
    """Interop depends on the model, never the reverse (issue 11): importing the model loads no
    Hugging Face code, and the RoPE-scaling checks it shares with config.json reading need no torch."""
    code = ("import sys, rizzrun.models.rope_scaling; assert 'torch' not in sys.modules\n"
            "import rizzrun.models.llama\n"
            "print(sorted(m for m in sys.modules if m.startswith(('rizzrun.models.hf', 'transformers', 'safetensors'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_meta_model_loads_weights_without_a_copy():
    """The loading path of `hf_llama.load_llama`: built on meta, RoPE tables on the real device,
    weights assigned (the model's parameters are the given tensors, not copies)."""
    reference = _model(tie_embeddings=False)
    with torch.device("meta"):
        model = Llama(V, **{**SMALL, "init_std": 0.1, "tie_embeddings": False})
    model.reset_buffers("cpu")
    state = {k: t.clone() for k, t in reference.state_dict().items()}
    model.load_state_dict(state, assign=True)
    assert model.embed.weight.data_ptr() == state["embed.weight"].data_ptr()
    torch.testing.assert_close(model.rope_cos, reference.rope_cos, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(_ids()), reference(_ids()), atol=0, rtol=0)
