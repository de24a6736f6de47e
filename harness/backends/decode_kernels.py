"""CPU decode-step pieces for `HFBackend`: packed and skinny matmuls, a growing KV cache, GQA decode attention.

Each piece is plugged into an unmodified transformers model through its own extension points (module forward,
`Cache` layers, `AttentionInterface`), and each only changes floating-point summation order, never the maths.
`DecodeOptions` names a combination and `decode_mode` switches a model to it for the duration of a generation.
Measured effects are in `reports/bench/decode.json` (`harness bench decode`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.models.llama.modeling_llama import LlamaMLP

DECODE_ATTENTION = "harness_gqa_decode"
ATTENTION_KINDS = ("stock", "gqa")
CACHE_KINDS = ("dynamic", "prealloc")
LINEAR_KINDS = ("stock", "onednn", "skinny")
STEP_KINDS = ("model", "fused")

# Above this many rows MKL's own `linear` path is as fast (measured 1.0-1.1x at 128-1024 rows), so prefill and
# scoring keep the stock kernel.
SKINNY_MAX_ROWS = 64


def skinny_linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`nn.Linear` forward that computes `(W @ x.T).T` for inputs with few rows.

    MKL's `x @ W.T` is poorly tuned for 8-16 rows; `W @ x.T` picks another kernel. The result is a transposed
    view, which the following element-wise ops and matmuls consume without copies.
    """
    rows = x.numel() // x.shape[-1]
    if rows > SKINNY_MAX_ROWS:
        return nn.functional.linear(x, module.weight, module.bias)
    out = torch.mm(module.weight, x.reshape(rows, x.shape[-1]).t()).t()
    if module.bias is not None:
        out = out + module.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's prepacked linear ops (CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinears:
    """oneDNN-blocked copies of a model's `nn.Linear` weights, for the decode steps.

    oneDNN's linear over a weight reordered into its blocked layout runs 1.6x as fast as MKL's `x @ W.T` on the
    plain layout at 2-16 rows (and about as fast at 1 row). A Llama MLP's gate and up projections are packed as
    one matrix, so they take one call. The copies cost one more weights' worth of memory (540 MB for
    smollm2-135m). Each is made on first use and remade when one of its weights has changed since (tensor version
    counter or storage), so optimiser steps and `load_state_dict` are seen; writes through `.data` are not.
    """

    def __init__(self, rows_hint: int = 16) -> None:
        self.rows_hint = rows_hint
        self._packs: dict[nn.Module, tuple[tuple[tuple[int, int], ...], torch.Tensor]] = {}

    def weight(self, owner: nn.Module, *weights: torch.Tensor) -> torch.Tensor:
        """The packed (row-concatenated) `weights` of `owner`, packing again if any of them is new or changed."""
        stamp = tuple((w._version, w.data_ptr()) for w in weights)
        entry = self._packs.get(owner)
        if entry is None or entry[0] != stamp:
            plain = torch.cat(weights) if len(weights) > 1 else weights[0]
            entry = self._packs[owner] = (
                stamp,
                torch.ops.mkldnn._reorder_linear_weight(plain.detach(), self.rows_hint),
            )
        return entry[1]

    def forward(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """`nn.Linear` forward through the packed weight."""
        return torch.ops.mkldnn._linear_pointwise(
            x, self.weight(module, module.weight), module.bias, "none", [None], ""
        )

    def fused_forward(self, owner: nn.Module, linears: Sequence[nn.Linear], x: torch.Tensor) -> torch.Tensor:
        """The outputs of several linears on the same input, concatenated, from one packed matmul."""
        biases = [m.bias for m in linears]
        bias = None if biases[0] is None else torch.cat(biases)
        weight = self.weight(owner, *(m.weight for m in linears))
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")

    def mlp_forward(self, mlp: LlamaMLP, x: torch.Tensor) -> torch.Tensor:
        """`LlamaMLP` forward with the gate and up projections as one packed matmul."""
        fused = self.fused_forward(mlp, (mlp.gate_proj, mlp.up_proj), x)
        gate, up = fused.split([mlp.gate_proj.out_features, mlp.up_proj.out_features], dim=-1)
        return self.forward(mlp.down_proj, mlp.act_fn(gate) * up)

    @contextmanager
    def active(self, model: nn.Module) -> Iterator[None]:
        """Route `model`'s linears (and Llama MLPs) through the packed weights inside the block."""
        # Only LlamaMLP's forward is known to be down(act(gate(x)) * up(x)); other MLPs keep theirs.
        mlps = [m for m in model.modules() if isinstance(m, LlamaMLP) and type(m).forward is LlamaMLP.forward]
        with routed_linears(model, self.forward), routed_forwards(mlps, self.mlp_forward):
            yield


@contextmanager
def routed_forwards(
    modules: list[nn.Module], forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Route each module's forward through `forward(module, x)` inside the block, then restore the class's."""
    for m in modules:
        m.forward = functools.partial(forward, m)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def routed_linears(
    model: nn.Module, forward: Callable[[nn.Linear, torch.Tensor], torch.Tensor]
) -> ContextManager[None]:
    """Route every plain `nn.Linear` of `model` through `forward(module, x)` inside the block."""
    return routed_forwards([m for m in model.modules() if type(m) is nn.Linear], forward)


def gqa_decode_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention for one query token per row as two batched matmuls over the key/value heads.

    The query heads that share a key/value head are folded into the matmul's row dimension, so keys and values
    are read once and never repeated, and none of SDPA's per-call set-up runs. Anything else (prefill, dropout,
    additive masks) goes to transformers' SDPA path.
    """
    batch, heads, q_len, dim = query.shape
    if q_len != 1 or dropout > 0 or (attention_mask is not None and attention_mask.dtype != torch.bool):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    kv_heads = key.shape[1]
    # Head h uses key/value head h // groups (transformers' `repeat_kv` order), hence this reshape.
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2))
    scores.mul_(dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:  # bool, (batch, 1, 1, kv_len), True = attend
        scores.masked_fill_(~attention_mask, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), value)
    return out.reshape(batch, 1, heads, dim), None


AttentionInterface.register(DECODE_ATTENTION, gqa_decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


@contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[None]:
    """Switch the model's attention implementation inside the block only (scoring keeps the model's own)."""
    config = model.config
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


class GrowingLayer(DynamicLayer):
    """A dynamic KV-cache layer backed by a buffer allocated once: appending writes in place.

    `DynamicLayer` concatenates at every step, copying the whole cache (at batch 16 and 200 tokens about
    150 MB per step for this model); a `StaticLayer` avoids the copy but attends over its full capacity.
    This one returns views of the filled part, so it has neither cost.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the buffers from the first states' batch size, heads, dtype and device."""
        batch, heads, _, _ = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.key_buffer = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self.value_buffer = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new states in place and return views of everything cached so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} tokens)")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Number of cached positions."""
        return self.length

    def reset(self) -> None:
        """Forget the cached positions (the buffers are kept)."""
        self.length = 0
        self.keys = self.values = None

    def crop(self, tokens_to_remove: int) -> None:
        """Not supported: the decode loop never rewinds."""
        raise NotImplementedError("GrowingLayer cannot be cropped")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows in `indices`, copying just the filled part of the buffers."""
        if not self.is_initialized:
            return
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            new = old.new_empty(len(indices), *old.shape[1:])
            new[:, :, : self.length] = old[indices, :, : self.length]
            setattr(self, name, new)
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]


def make_cache(kind: str, model: nn.Module, capacity: int) -> Cache:
    """Build an empty KV cache of `kind` (`dynamic` or `prealloc`) holding up to `capacity` tokens."""
    if kind == "prealloc":
        return Cache(layers=[GrowingLayer(capacity) for _ in range(model.config.num_hidden_layers)])
    if kind == "dynamic":
        return DynamicCache(config=model.config)
    raise ValueError(f"unknown cache kind {kind!r}; expected one of {', '.join(CACHE_KINDS)}")


@dataclass(frozen=True)
class DecodeOptions:
    """How `HFBackend` runs its decode steps: attention kernel, KV-cache kind, linear kernel and step function.

    `step="fused"` runs stock Llama models through `llama_step.fused_llama_step` (packed fused matmuls and GQA
    attention in one function, so it needs `attn="gqa"` and `linear="onednn"`); other models take the model's
    forward. Every choice gives the same maths; they differ in speed, and `onednn` in memory (a copy of the weights).
    """

    attn: str = "stock"
    cache: str = "dynamic"
    linear: str = "stock"
    step: str = "model"

    def __post_init__(self) -> None:
        for field, kinds in (
            ("attn", ATTENTION_KINDS),
            ("cache", CACHE_KINDS),
            ("linear", LINEAR_KINDS),
            ("step", STEP_KINDS),
        ):
            if getattr(self, field) not in kinds:
                raise ValueError(f"decode option {field}={getattr(self, field)!r} is unknown; expected one of {kinds}")
        if self.step == "fused" and (self.attn, self.linear) != ("gqa", "onednn"):
            raise ValueError("decode option step='fused' is built from attn='gqa' and linear='onednn'; set both")

    @classmethod
    def for_device(cls, device: str, **chosen: str | None) -> DecodeOptions:
        """The defaults for `device` (fastest measured on CPU, stock elsewhere), overridden by non-None `chosen`."""
        defaults = cls()
        if device == "cpu":
            defaults = CPU_DEFAULTS if onednn_available() else cls(CPU_DEFAULTS.attn, CPU_DEFAULTS.cache)
        given = {k: v for k, v in chosen.items() if v is not None}
        merged = {**defaults.__dict__, **given}
        if "step" not in given and (merged["attn"], merged["linear"]) != ("gqa", "onednn"):
            merged["step"] = "model"  # the fused step is built from those two; another choice implies the model's
        options = cls(**merged)
        if device != "cpu" and options.linear == "onednn":
            raise ValueError(f"decode option linear='onednn' is a CPU kernel; on {device} use linear='stock'")
        return options


# Fastest combination measured by `harness bench decode` on the 2-core CPU (reports/bench/decode.json).
CPU_DEFAULTS = DecodeOptions(attn="gqa", cache="prealloc", linear="onednn", step="fused")


@contextmanager
def decode_mode(model: nn.Module, options: DecodeOptions, packs: PackedLinears | None) -> Iterator[None]:
    """Switch `model` to the attention and linear kernels of `options` inside the block only."""
    with ExitStack() as stack:
        if options.attn == "gqa":
            stack.enter_context(attention_implementation(model, DECODE_ATTENTION))
        if options.linear == "onednn":
            if packs is None:
                raise RuntimeError("linear='onednn' needs a CPU torch build with oneDNN; use linear='stock'")
            stack.enter_context(packs.active(model))
        elif options.linear == "skinny":
            stack.enter_context(routed_linears(model, skinny_linear))
        yield
