"""Shared test setup: offline by default, opt-in markers, and the tiny random model."""

from __future__ import annotations

import os

import pytest

# Nothing in the suite may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run end-to-end checks on the embedded model")
    parser.addoption("--rungpu", action="store_true", help="run checks that need a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, option in (("slow", "--runslow"), ("gpu", "--rungpu")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"needs {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_backend():
    """The tiny random-init model behind the hf backend (built once per cache directory)."""
    from harness.backends.hf import HFBackend

    return HFBackend("tiny-random", device="cpu", progress=False)
