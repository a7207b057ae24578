"""A tiny `transformers` Llama and the rizzrun Llama holding the same weights, for token-for-token
comparisons of decoding (test_generation_parity.py, test_decode_fast.py)."""

from __future__ import annotations

import torch
import transformers

from rizzrun.models.hf_llama import from_hf_state_dict
from rizzrun.models.llama import Llama


def llama_dims(max_len: int) -> dict:
    """The rizzrun Llama dimensions of the twins (2 layers, d_model 32, GQA 4/2 heads)."""
    return dict(d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64, max_seq_len=max_len, rope_theta=10000.0,
                norm_eps=1e-5, tie_embeddings=False)


def hf_and_rizzrun_llamas(vocab: int, max_len: int, seed: int = 0):
    """(transformers LlamaForCausalLM in eval mode, eager attention; rizzrun Llama) with the same
    weights. No special ids in the HF config: generate must use exactly the ones a test passes.
    Large weights: logits far apart, so greedy has no near-ties that fp32 rounding differences
    between two implementations could flip; and varied continuations."""
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3) if p.ndim == 2 else p.normal_(1.0, 0.1)
    return hf, from_hf_state_dict(Llama(vocab, **llama_dims(max_len)), hf.state_dict())
