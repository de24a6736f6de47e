import math
import subprocess
import sys
import textwrap

import pytest

from harness.methods import RewardMethod, as_reward_func, available_methods, create_method
from harness.types import user_chat

PLUGIN_MODULE = textwrap.dedent(
    '''
    from harness.methods import reward_method

    class Shouty:
        name = "shouty"

        def fit(self, ctx):
            pass

        def score(self, prompts, responses):
            return [float(sum(ch.isupper() for ch in r)) for r in responses]

    @reward_method("shouty", kind="control")
    def shouty():
        """Counts capital letters (a throwaway plug-in)."""
        return Shouty()

    def not_a_method():
        return object()
    '''
)


def write_plugin(root):
    """A throwaway installed distribution: a module plus dist-info with entry points, on a path we control."""
    (root / "toy_plugin.py").write_text(PLUGIN_MODULE)
    info = root / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[harness.reward_methods]\n"
        "shouty = toy_plugin:shouty\n"
        "hollow = toy_plugin:not_a_method\n"
        "broken = toy_plugin_missing:factory\n"
    )


def run_python(code, root):
    env_path = f"{root}"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={"PYTHONPATH": env_path}
    )


def test_builtin_controls_are_listed_with_their_package():
    methods = {m.name: m for m in available_methods()}
    assert methods["length"].kind == "control" and methods["length"].package == "reward-harness"
    assert methods["random"].kind == "control"


def test_third_party_plugin_is_listed_and_usable(tmp_path):
    write_plugin(tmp_path)
    listing = subprocess.run(
        [sys.executable, "-m", "harness.cli", "methods"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[2:]}
    assert rows["shouty"][1:3] == ["control", "toy-plugin"]
    assert rows["broken"][1] == "unloadable"  # a broken plug-in is shown, not fatal
    assert "length" in rows and "random" in rows
    used = run_python(
        "from harness.methods import create_method\n"
        "m = create_method('shouty')\n"
        "print(m.score([[{'role': 'user', 'content': 'q'}]], ['ABc']), m.spec)",
        tmp_path,
    )
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "[2.0] {'name': 'shouty', 'kwargs': {}}"
    hollow = run_python("from harness.methods import create_method\ncreate_method('hollow')", tmp_path)
    assert "reward method 'hollow' (toy_plugin:not_a_method) returned object" in hollow.stderr


def test_unknown_method_lists_installed_ones():
    with pytest.raises(KeyError, match="unknown reward method 'nope'.*length"):
        create_method("nope")


def test_controls_score_as_documented():
    prompts = [user_chat("q")] * 3
    length = create_method("length")
    assert length.score(prompts, ["one two", "", "a b c"]) == [2.0, 0.0, 3.0]
    rnd = create_method("random", seed=1)
    scores = rnd.score(prompts, ["x", "y", "x"])
    assert scores[0] == scores[2] != scores[1]
    assert all(0 <= s < 1 for s in scores)
    assert create_method("random", seed=2).score(prompts[:1], ["x"]) != scores[:1]
    assert isinstance(rnd, RewardMethod)


def test_trl_adapter_accepts_both_prompt_formats_and_maps_nan_to_none():
    class Partial:
        name = "partial"

        def fit(self, ctx):
            pass

        def score(self, prompts, responses):
            return [math.nan if not r else float(len(prompts[0])) for r in responses]

    func = as_reward_func(Partial())
    assert func.__name__ == "partial"
    assert func(prompts=["plain", "plain"], completions=["a", ""], completion_ids=None) == [1.0, None]
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    completion = [{"role": "assistant", "content": "x"}]
    assert func(prompts=[chat], completions=[completion]) == [2.0]
