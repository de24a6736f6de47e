"""Decode kernels against their stock counterparts, the backend's decode options, and the decode benchmark."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers.cache_utils import DynamicLayer

from harness.backends.decode_kernels import (
    CPU_DEFAULTS,
    DecodeOptions,
    GrowingLayer,
    PackedLinears,
    gqa_decode_attention,
    make_cache,
    onednn_available,
    skinny_linear,
)
from harness.backends.hf import HFBackend
from harness.backends.llama_step import fused_llama_step, fused_step_supported
from harness.types import GenerationParams, user_chat

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch build without oneDNN")


class FakeAttention(nn.Module):
    """Just what the attention functions read from transformers' attention module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def reference_attention(query, key, value, mask):
    """Plain SDPA over keys/values repeated per query head (transformers' `repeat_kv` order)."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("batch,heads,kv_heads,length", [(1, 9, 3, 7), (4, 4, 2, 33), (3, 6, 6, 5)])
def test_gqa_decode_attention_matches_sdpa(batch, heads, kv_heads, length):
    gen = torch.Generator().manual_seed(batch * 100 + length)
    query = torch.randn(batch, heads, 1, 16, generator=gen)
    key, value = torch.randn(2, batch, kv_heads, length, 16, generator=gen)
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[0, ..., : length // 2] = False  # left padding in the first row
    module = FakeAttention(heads // kv_heads)
    out, weights = gqa_decode_attention(module, query, key, value, mask, scaling=16**-0.5)
    assert weights is None and out.shape == (batch, 1, heads, 16)
    torch.testing.assert_close(out, reference_attention(query, key, value, mask))
    unmasked, _ = gqa_decode_attention(module, query, key, value, None)  # default scaling is 1/sqrt(dim)
    torch.testing.assert_close(unmasked, reference_attention(query, key, value, None))


def test_gqa_attention_hands_prefill_to_sdpa():
    gen = torch.Generator().manual_seed(0)
    query, key, value = torch.randn(3, 2, 4, 5, 8, generator=gen)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    out, _ = gqa_decode_attention(FakeAttention(1), query, key, value, mask, scaling=8**-0.5)
    torch.testing.assert_close(out, reference_attention(query, key, value, mask))


def test_growing_layer_matches_dynamic_layer_and_writes_in_place():
    gen = torch.Generator().manual_seed(1)
    growing, dynamic = GrowingLayer(capacity=9), DynamicLayer()
    for length in (5, 1, 1, 2):  # a prefill, then single steps, then two at once
        key, value = torch.randn(2, 3, 2, length, 4, generator=gen)
        got, want = growing.update(key, value), dynamic.update(key, value)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert growing.get_seq_length() == dynamic.get_seq_length() == 9
    assert got[0].data_ptr() == growing.key_buffer.data_ptr()  # a view of the buffer, not a copy
    with pytest.raises(RuntimeError, match="capacity 9 exceeded"):
        growing.update(key[..., :1, :], value[..., :1, :])


def test_growing_layer_keeps_selected_rows():
    layer = GrowingLayer(capacity=4)
    key = torch.arange(3 * 2 * 3 * 2, dtype=torch.float32).reshape(3, 2, 3, 2)
    layer.update(key, -key)
    layer.batch_select_indices(torch.tensor([2, 0]))
    torch.testing.assert_close(layer.keys, key[[2, 0]], rtol=0, atol=0)
    torch.testing.assert_close(layer.values, -key[[2, 0]], rtol=0, atol=0)
    step = torch.ones(2, 2, 1, 2)
    keys, _ = layer.update(step, step)
    assert keys.shape == (2, 2, 4, 2) and layer.get_seq_length() == 4


@needs_onednn
def test_packed_linear_matches_linear_and_repacks_changed_weights():
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    packs = PackedLinears(rows_hint=4)
    for shape in ((1, 24), (3, 1, 24), (70, 24)):
        x = torch.randn(shape)
        torch.testing.assert_close(packs.forward(layer, x), layer(x))
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # an optimiser step does the same: in place
    x = torch.randn(5, 24)
    torch.testing.assert_close(packs.forward(layer, x), layer(x))


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_packed_mlp_matches_llama_mlp(bias):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=24, intermediate_size=40, num_attention_heads=4, mlp_bias=bias))
    packs = PackedLinears()
    x = torch.randn(3, 1, 24)
    want = mlp(x)
    with packs.active(mlp):
        assert "forward" in vars(mlp)
        torch.testing.assert_close(mlp(x), want)
    assert "forward" not in vars(mlp) and "forward" not in vars(mlp.down_proj)


def test_skinny_linear_matches_linear():
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    for rows in (1, 16, 100):
        x = torch.randn(rows, 1, 24)
        torch.testing.assert_close(skinny_linear(layer, x), layer(x))


def test_decode_options_defaults_and_errors():
    assert DecodeOptions.for_device("cuda") == DecodeOptions()  # the GPU keeps the stock path
    cpu = DecodeOptions.for_device("cpu")
    assert (cpu.attn, cpu.cache) == (CPU_DEFAULTS.attn, CPU_DEFAULTS.cache)
    assert DecodeOptions.for_device("cpu", cache="dynamic", attn=None).cache == "dynamic"
    # Choosing a kernel the fused step is not built from falls back to the model's step, unless asked for.
    assert DecodeOptions.for_device("cpu", linear="stock").step == "model"
    with pytest.raises(ValueError, match="step='fused' is built from"):
        DecodeOptions.for_device("cpu", linear="stock", step="fused")
    with pytest.raises(ValueError, match="attn='flash'"):
        DecodeOptions(attn="flash")
    with pytest.raises(ValueError, match="linear='onednn' is a CPU kernel"):
        DecodeOptions.for_device("cuda", linear="onednn")


@pytest.fixture(scope="module")
def varied_backend():
    """tiny-random with weights redrawn at a larger scale, so greedy decoding writes varied tokens.

    At its initial scale every logit is nearly equal and the model repeats one token, which would make the
    identity checks below vacuous.
    """
    backend = HFBackend("tiny-random", device="cpu", batch_size=4, progress=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in backend.model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if p.ndim > 1 else 0.1) + (p.ndim == 1))
    return backend


CHATS = [
    user_chat("Tell me a story."),
    user_chat("What is two plus two? Answer with a single number please."),
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    user_chat("Hi"),
    user_chat("Write a list of three fruits and explain why each one is healthy."),
]
VARIANTS = [
    DecodeOptions(attn="gqa"),
    DecodeOptions(cache="prealloc"),
    DecodeOptions(linear="onednn"),
    DecodeOptions(linear="skinny"),
    DecodeOptions(attn="gqa", cache="prealloc", linear="onednn"),
    DecodeOptions(attn="gqa", cache="prealloc", linear="onednn", step="fused"),
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: f"{o.attn}-{o.cache}-{o.linear}-{o.step}")
def test_greedy_outputs_identical_to_stock_path(varied_backend, options):
    if options.linear == "onednn" and varied_backend.packs is None:
        pytest.skip("torch build without oneDNN")
    params = GenerationParams(max_new_tokens=12)
    varied_backend.decode_options = DecodeOptions()
    stock = varied_backend.generate(CHATS, params)
    varied_backend.decode_options = options
    try:
        fast = varied_backend.generate(CHATS, params)
    finally:
        varied_backend.decode_options = DecodeOptions()
    assert len(set(stock)) == len(CHATS) and all(len(set(s)) > 3 for s in stock)  # varied, so the check means something
    assert fast == stock


@needs_onednn
def test_fused_llama_step_logits_match_model_forward(varied_backend):
    model, packs = varied_backend.model, PackedLinears()
    assert fused_step_supported(model)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 1000, (3, 6), generator=gen)
    attend = torch.ones(3, 7, dtype=torch.bool)
    attend[0, :2] = False  # a left-padded row
    positions = (attend.long().cumsum(-1) - 1).clamp(min=0)
    caches = [make_cache("prealloc", model, 7), make_cache("dynamic", model, 7)]
    with torch.inference_mode():
        for cache in caches:
            model(input_ids=ids, attention_mask=attend[:, :6], position_ids=positions[:, :6], past_key_values=cache)
        want = model(
            input_ids=ids[:, -1:], attention_mask=attend, position_ids=positions[:, 6:], past_key_values=caches[1]
        ).logits[:, -1]
        got = fused_llama_step(model, packs, ids[:, -1:], positions[:, 6:], caches[0], attend)
    torch.testing.assert_close(got, want)


def test_fused_step_declines_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    assert not fused_step_supported(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)))


def test_decode_mode_leaves_the_model_stock_afterwards(varied_backend):
    model = varied_backend.model
    varied_backend.decode_options = CPU_DEFAULTS
    before = varied_backend.logprobs(CHATS[:2], ["Yes.", "Four."])
    varied_backend.generate(CHATS[:2], GenerationParams(max_new_tokens=3))
    varied_backend.decode_options = DecodeOptions()
    assert model.config._attn_implementation == "sdpa"
    assert not any("forward" in vars(m) for m in model.modules())  # no routed forward left behind
    assert varied_backend.logprobs(CHATS[:2], ["Yes.", "Four."]) == before


def test_bench_writes_report_with_roofline(tmp_path):
    from harness.bench.decode import main

    out = tmp_path / "decode.json"
    argv = ["--model", "tiny-random", "--batches", "1,2", "--new-tokens", "3", "--repeats", "1", "--threads", "1"]
    assert main([*argv, "--variants", "stock,all", "--bandwidth-mb", "32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"] == torch.__version__
    assert report["roofline"]["bandwidth_gb_s"] > 0 and report["model"]["weight_bytes"] > 0
    cells = {(r["variant"], r["batch"]) for r in report["results"]}
    assert cells == {("stock", 1), ("stock", 2), ("all", 1), ("all", 2)}
    for r in report["results"]:
        assert r["ms_per_step"] > 0 and r["tok_s"] == pytest.approx(1000 * r["batch"] / r["ms_per_step"])
        assert r["roofline_fraction"] == pytest.approx(r["tok_s"] / r["roofline_tok_s"])


def test_bench_rejects_bad_options(tmp_path):
    from harness.bench.decode import main

    with pytest.raises(SystemExit):
        main(["--variants", "stock,turbo", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["--batches", "0", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_roofline_takes_best_bandwidth_and_linear_compute_scaling():
    from harness.bench.decode import add_roofline, roofline

    machine = {
        "bandwidth_gb_s": {
            "threads=1": {"read_gb_s": 10.0, "read_gb_s_cpu": 20.0, "copy_gb_s": 5.0},
            "threads=2": {"read_gb_s": 15.0, "read_gb_s_cpu": None, "copy_gb_s": 5.0},
        },
        "matmul_gflop_s": {"threads=1": {"gflop_s": 40.0, "gflop_s_cpu": 50.0}, "threads=2": {"gflop_s": 60.0}},
    }
    weights = {"weight_bytes": 2_000_000_000, "matmul_macs_per_token": 1_000_000_000}
    roof = roofline(machine, weights)
    assert roof["bandwidth_gb_s"] == 20.0 and roof["bandwidth_ms_per_step"] == pytest.approx(100.0)
    assert roof["peak_gflop_s"] == {1: 50.0, 2: 100.0}
    rows = [
        {"variant": "stock", "threads": 1, "batch": 4, "ms_per_step": 400.0, "cpu_ms_per_step": 300.0},
        {"variant": "all", "threads": 1, "batch": 4, "ms_per_step": 200.0, "cpu_ms_per_step": 180.0},
        {"variant": "all", "threads": 2, "batch": 1, "ms_per_step": 125.0, "cpu_ms_per_step": 240.0},
    ]
    add_roofline(rows, weights, roof)
    fast, two = rows[1], rows[2]
    assert fast["compute_floor_ms"] == pytest.approx(160.0)  # 8 GFLOP at 50 GFLOP/s
    assert fast["floors_fraction"] == pytest.approx(0.8) and fast["roofline_fraction"] == pytest.approx(0.5)
    assert fast["roofline_fraction_cpu"] == pytest.approx(100 / 180) and fast["speedup_vs_stock"] == 2.0
    assert fast["floors_fraction_cpu"] == pytest.approx(160 / 180)
    assert fast["tok_s"] == pytest.approx(20.0) and fast["roofline_tok_s"] == pytest.approx(40.0)
    assert two["roofline_fraction_cpu"] is None and two["floors_fraction_cpu"] is None
    assert two["speedup_vs_stock"] is None
    assert two["floors_fraction"] == pytest.approx(100 / 125)  # bandwidth-bound: 20 ms of compute at 100 GFLOP/s


@pytest.mark.slow
def test_embedded_model_greedy_outputs_identical_to_stock_path():
    backend = HFBackend("smollm2-135m", device="cpu", batch_size=4, progress=False)
    chats = [user_chat(q) for q in ("What is the capital of France?", "Write a haiku about rain.", "Say hi.")]
    params = GenerationParams(max_new_tokens=24)
    fast = backend.generate(chats, params)
    backend.decode_options = DecodeOptions()
    assert backend.generate(chats, params) == fast
    assert "Paris" in fast[0]
