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


def test_the_readme_installs_the_dagger_cli_the_module_pins() -> None:
    """The newcomer's first command installs exactly the engine release dagger.json names."""
    import json
    import re

    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"].removeprefix("v")
    readme = (REPO / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):readme.index("## Layout")]
    commands = re.findall(r"```sh\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2, commands  # one for the main job, one for the tests
    assert f"DAGGER_VERSION={engine} " in commands[0] and "dagger call build-and-push" in commands[0]
    assert commands[1] == "bash .ci/run"
