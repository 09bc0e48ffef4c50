"""Suite-wide guard: tests write into their ``tmp_path``, never into the checkout. A test that rendered the
article with ``out=Path(".")`` once left ``article/results/shapes.json`` in the repository, and it was
committed. At the end of a run in a git checkout, files that are new and not ignored fail the run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _untracked() -> set[str] | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--others", "--exclude-standard"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an unpacked sdist) or no git: nothing to compare
    return set(out.splitlines())


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._untracked_before = _untracked()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_untracked_before", None)
    after = _untracked()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("tests left files in the checkout (write into tmp_path): "
                                + ", ".join(new[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
