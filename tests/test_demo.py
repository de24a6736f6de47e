from harness.demo import SOURCES, run_demo
from harness.store import ResultLog


def test_demo_scores_every_source_and_resumes(tmp_path, capsys):
    table = run_demo(n_items=2, methods=["length", "random"], runs_root=str(tmp_path), model="tiny-random")
    assert [row[0] for row in table] == ["length", "random"]
    assert all(row[-1].endswith("/2") for row in table)  # "ideal ranked first" out of 2 prompts
    (run_dir,) = tmp_path.iterdir()
    records = ResultLog(run_dir / "items.jsonl").records()
    assert len(records) == 2 * len(SOURCES) * 2  # prompts x sources x methods
    assert "per-item scores" in capsys.readouterr().out
    # A second run finds every item finished and writes nothing new.
    run_demo(n_items=2, methods=["length", "random"], runs_root=str(tmp_path), model="tiny-random")
    assert len(ResultLog(run_dir / "items.jsonl").records()) == len(records)
