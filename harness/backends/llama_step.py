"""One decode step of a stock transformers Llama in a few fused calls, for `HFBackend` on CPU.

The model's own forward spends a fixed ~6 ms per step (30 layers) in module calls, mask building, keyword
plumbing and separate q/k/v and gate/up matmuls. This step does the same maths with the model's own modules and
weights: q, k and v come from one packed matmul, rotary embedding is applied to q and k together, and attention is
`gqa_decode_attention` on a boolean padding mask made once per step. Logits equal the model forward's (tested).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaRMSNorm,
    rotate_half,
)

from harness.backends.decode_kernels import PackedLinears, gqa_decode_attention


def fused_step_supported(model: torch.nn.Module) -> bool:
    """Whether `model` is a stock transformers Llama, whose decode step `fused_llama_step` reproduces."""
    if type(model) is not LlamaForCausalLM or type(model.model) is not LlamaModel:
        return False
    parts = ((LlamaDecoderLayer, "."), (LlamaAttention, "self_attn"), (LlamaMLP, "mlp"))
    for layer in model.model.layers:
        if any(type(layer if name == "." else getattr(layer, name)) is not cls for cls, name in parts):
            return False
        if type(layer.input_layernorm) is not LlamaRMSNorm or type(layer.post_attention_layernorm) is not LlamaRMSNorm:
            return False
    return True


def fused_llama_step(
    model: LlamaForCausalLM,
    packs: PackedLinears,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Cache,
    attend: torch.Tensor,
) -> torch.Tensor:
    """Logits `(batch, vocab)` for one new token per row; `attend` is the bool padding mask `(batch, kv_len)`."""
    config, body = model.config, model.model
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    batch = input_ids.shape[0]
    x = body.embed_tokens(input_ids)
    cos, sin = (t.unsqueeze(1) for t in body.rotary_emb(x, position_ids))
    mask = attend[:, None, None, :]
    for index, layer in enumerate(body.layers):
        attn = layer.self_attn
        qkv = packs.fused_forward(attn, (attn.q_proj, attn.k_proj, attn.v_proj), layer.input_layernorm(x))
        qkv = qkv.view(batch, heads + 2 * kv_heads, 1, dim)
        qk = qkv[:, : heads + kv_heads]
        qk = qk * cos + rotate_half(qk) * sin
        keys, values = cache.update(qk[:, heads:], qkv[:, heads + kv_heads :], index)
        out, _ = gqa_decode_attention(attn, qk[:, :heads], keys, values, mask, scaling=attn.scaling)
        x = x + packs.forward(attn.o_proj, out.reshape(batch, 1, heads * dim))
        x = x + packs.mlp_forward(layer.mlp, layer.post_attention_layernorm(x))
    return packs.forward(model.lm_head, body.norm(x))[:, -1, :]
