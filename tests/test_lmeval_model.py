"""The `harness` lm-eval model: same greedy replies and IFEval metrics as lm-eval's HFLM, cached, clear refusals."""

import pytest
from test_downstream import wordy_policy  # noqa: F401  (module fixture: tiny-random with varied replies)

from harness.cache import Cache, content_key
from harness.downstream import EvalSettings, evaluate
from harness.lmeval_model import (
    HarnessLM,
    UnsupportedRequestError,
    _bos_prefix,
    as_requests,
    generation_params,
)
from harness.store import Run

GREEDY = {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 16}
PROMPTS = ["Write a poem about the sea.", "List three fruits.", "What is 2+2?", "Explain gravity to a child, please."]


@pytest.fixture(scope="module")
def ours(wordy_policy, tmp_path_factory):  # noqa: F811
    return HarnessLM(str(wordy_policy), device="cpu", batch_size=2, cache=Cache(tmp_path_factory.mktemp("c") / "db"))


@pytest.fixture(scope="module")
def hflm(wordy_policy):  # noqa: F811
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(wordy_policy), device="cpu", dtype="float32", batch_size=2)


@pytest.fixture(scope="module")
def contexts(hflm):
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    chats[1] = [{"role": "system", "content": "Answer briefly."}, *chats[1]]
    return [hflm.apply_chat_template(c) for c in chats]


def test_generation_params_resolve_like_hflm():
    params = generation_params({"until": "\n\n", "max_new_tokens": 7, "temperature": 0.7}, "<|im_end|>", seed=3)
    assert (params.max_new_tokens, params.temperature, params.seed) == (7, 0.7, 3)  # temperature > 0 means sampling
    assert params.stop == ("\n\n", "<|im_end|>")
    assert generation_params({"do_sample": False, "temperature": 0.9}, None).temperature == 0.0
    assert generation_params({"do_sample": True}, None).temperature == 1.0  # HF's generation-config default
    assert generation_params({"until": ["", "<|im_end|>"]}, "<|im_end|>").stop == ("<|im_end|>",)
    assert generation_params({}, None).max_new_tokens == 256  # HFLM.max_gen_toks
    with pytest.raises(UnsupportedRequestError, match="top_k"):
        generation_params({"do_sample": True, "top_k": 5}, None)


def test_chat_template_matches_hflm(ours, hflm, contexts):
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    assert [ours.apply_chat_template(c) for c in chats[:1]] == contexts[:1]
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert ours.apply_chat_template(prefill, False) == hflm.apply_chat_template(prefill, False)
    assert ours.tokenizer_name == hflm.tokenizer_name
    assert ours.chat_template(True) == hflm.chat_template(True)


def test_greedy_replies_equal_hflm(ours, hflm, contexts):
    theirs = hflm.generate_until(as_requests(contexts, GREEDY))
    assert ours.generate_until(as_requests(contexts, GREEDY)) == theirs
    assert len(set(theirs)) == len(theirs) and all(len(r) > 20 for r in theirs), "replies must differ to prove much"
    # Stop strings taken from inside the replies: each reply is cut at its first stop, as HFLM cuts it.
    stops = [theirs[0][10:14], theirs[2][5:8]]
    stopped = {**GREEDY, "until": stops, "max_gen_toks": 20}
    cut = hflm.generate_until(as_requests(contexts, stopped))
    assert ours.generate_until(as_requests(contexts, stopped)) == cut
    assert len(cut[0]) < len(theirs[0]) and len(cut[2]) < len(theirs[2])
    mixed = as_requests(contexts[:2], {"max_new_tokens": 9}) + as_requests(
        contexts[2:], {"until": stops[0], "max_gen_toks": 12}
    )
    assert ours.generate_until(mixed) == hflm.generate_until(mixed)  # two gen-kwargs groups, one call


def test_long_context_keeps_its_last_tokens(wordy_policy, tmp_path):  # noqa: F811
    from lm_eval.models.huggingface import HFLM

    short = HarnessLM(str(wordy_policy), device="cpu", batch_size=2, cache=Cache(tmp_path / "db"), max_length=40)
    hf_short = HFLM(pretrained=str(wordy_policy), device="cpu", dtype="float32", batch_size=2, max_length=40)
    long = [" ".join(PROMPTS * 3), "Tell me a story about a dragon " * 6]
    kwargs = {**GREEDY, "max_gen_toks": 8}
    assert len(short.tokenizer(long[0])["input_ids"]) > 40
    assert short.generate_until(as_requests(long, kwargs)) == hf_short.generate_until(as_requests(long, kwargs))
    with pytest.raises(UnsupportedRequestError, match="max_length=40"):
        short.generate_until(as_requests(long, {"max_gen_toks": 40}))


def test_second_run_reads_the_cache(ours, contexts):
    first = ours.generate_until(as_requests(contexts, GREEDY))
    params = generation_params(GREEDY, ours.tokenizer.eos_token)
    keys = [content_key("generate", model=ours.backend.model_id, chat=c, params=params.to_dict()) for c in contexts]
    assert ours.backend.cache.get_many(keys) == dict(zip(keys, first, strict=True))
    # A replaced cache entry comes back as is: the reply was read, not recomputed.
    ours.backend.cache.put_many({keys[0]: "from the cache"})
    assert ours.generate_until(as_requests(contexts, GREEDY)) == ["from the cache", *first[1:]]


def test_scoring_requests_are_refused_with_the_alternative(ours):
    with pytest.raises(UnsupportedRequestError, match="--backend hf"):
        ours.loglikelihood([])
    with pytest.raises(UnsupportedRequestError, match="--backend hf"):
        ours.loglikelihood_rolling([])


def test_bos_prefix_follows_the_tokenizer(ours):
    import copy

    from tokenizers.processors import TemplateProcessing

    assert _bos_prefix(ours.tokenizer) == ""  # SmolLM2's tokenizer adds no special tokens
    with_bos = copy.deepcopy(ours.tokenizer)
    bos = (with_bos.bos_token, with_bos.bos_token_id)
    with_bos.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    assert _bos_prefix(with_bos) == bos[0]
    with_eos = copy.deepcopy(ours.tokenizer)
    eos = (with_eos.eos_token, with_eos.eos_token_id)
    with_eos.backend_tokenizer.post_processor = TemplateProcessing(single=f"$A {eos[0]}", special_tokens=[eos])
    with pytest.raises(UnsupportedRequestError, match="other than a leading BOS"):
        _bos_prefix(with_eos)


def test_ifeval_items_equal_hflm(wordy_policy, tmp_path):  # noqa: F811
    records = {}
    for backend in ("harness", "hf"):
        settings = EvalSettings(batch_size=2, max_gen_toks=16, device="cpu", backend=backend)
        run = Run(tmp_path, backend, {"backend": backend})
        evaluate(wordy_policy, ["ifeval_local"], 5, run, settings, cache=Cache(tmp_path / "db"))
        records[backend] = [
            {k: r[k] for k in ("doc_id", "prompt", "response", "metrics")} for r in run.results.records()
        ]
    assert records["harness"] == records["hf"]
    assert any(any(r["metrics"]["inst_level_loose_acc"]) for r in records["hf"]), "all-failing items prove little"


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend.*'vllm'"):
        EvalSettings(backend="vllm")
