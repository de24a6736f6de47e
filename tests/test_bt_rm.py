import math
from pathlib import Path

import pytest

from harness.methods import FitContext, create_method
from harness.types import PreferenceItem, user_chat


def toy_items(n=6):
    return [
        PreferenceItem(
            id=f"t{i}",
            prompt=tuple(user_chat(f"Question {i}: is water wet?")),
            chosen=(f"Yes, water is wet. Reason {i}.",),
            rejected=(f"Bananas {i}", f"No idea {i}"),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bt")
    method = create_method("bt_rm", base="tiny-random", preset="test")
    method.fit(FitContext(workdir=workdir, seed=0, train_items=toy_items()))
    return method, workdir


def test_fit_saves_a_model_with_its_training_log(trained):
    method, workdir = trained
    saved = list((workdir / "bt_rm").iterdir())
    assert len(saved) == 1 and saved[0] == Path(method.checkpoint)
    assert (saved[0] / "bt_rm.json").is_file() and (saved[0] / "config.json").is_file()


def test_refit_with_same_data_reuses_the_stored_model(trained):
    method, workdir = trained
    stamp = (workdir / "bt_rm").stat().st_mtime_ns
    again = create_method("bt_rm", base="tiny-random", preset="test")
    again.fit(FitContext(workdir=workdir, seed=0, train_items=toy_items()))
    assert again.checkpoint == method.checkpoint
    assert (workdir / "bt_rm").stat().st_mtime_ns == stamp


def test_scores_are_finite_deterministic_and_batch_independent(trained):
    method, _ = trained
    prompts = [user_chat("is water wet?")] * 3
    responses = ["Yes it is.", "Bananas", "A much longer answer " * 20]
    batched = method.score(prompts, responses, batch_size=3)
    single = [method.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert all(math.isfinite(s) for s in batched)
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(batched)) == 3


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="call fit\\(\\) first"):
        create_method("bt_rm", base="tiny-random", preset="test").score([user_chat("q")], ["a"])
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        create_method("bt_rm", preset="huge")
