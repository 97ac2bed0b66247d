"""Static checks over the pipeline package: mypy --strict against the installed dagger-io
(catches wrong method names and argument types of the generated API) and ruff."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_mypy_strict_passes_over_ci() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "ci"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "ci", "tests", "bot", "Lavalink", "bench"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
