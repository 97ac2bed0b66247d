"""The module's functions and the engine's rules on a real Dagger engine (marked `engine`).

The engine is Dagger v0.21.8 built from the Go module proxy (tests/dagger_engine.py says how,
and what stands in for the five modules the proxy refuses). The module's functions are driven
by the Python SDK as a client of that engine, with the arguments `dagger call` would build (the
source directory with the module's Ignore list); ci.main.MODULE_SOURCE stands in for
dag.current_module(), which only a module call has.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from ci import main, pins
from tests import dagger_engine, pinned_buildkit
from tests.conftest import REPO

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]


@pytest.fixture(scope="module")
def engine() -> Iterator[dagger_engine.Engine]:
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    bin_dir, image = dagger_engine.build()
    with dagger_engine.running(bin_dir, image, pinned_buildkit.MIRROR_STORAGE) as started:
        yield started


def test_the_cli_and_the_engine_built_here_answer_with_the_same_version(engine: dagger_engine.Engine) -> None:
    assert engine.cli("version").stdout.split()[1] == "v0.21.8"
    answered = engine.cli("core", "version")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip() == "v0.21.8"


async def test_a_container_of_the_pinned_python_image_reaches_pypi_through_the_ca_the_engine_injects(
        engine: dagger_engine.Engine) -> None:
    import dagger
    from pip._internal.models.index import PyPI  # the package index pip uses by default

    probe = "import os, urllib.request; print(urllib.request.urlopen(os.environ['INDEX'] + 'pip/', timeout=30).status)"
    async with dagger_engine.connected(engine, REPO):
        out = await (dagger.dag.container().from_(pins.PYTHON_IMAGE).with_env_variable("INDEX", PyPI.simple_url + "/")
                     .with_exec(["python3", "-c", probe]).stdout())
    assert out.strip() == "200"


async def test_identical_execs_are_replayed_and_the_per_call_id_makes_them_run_again(engine: dagger_engine.Engine) -> None:
    """The rule once_per_call exists for: `cache="never"` aside, the engine answers an exec it has
    seen from its cache, so an effectful step (push, tag move, deploy) would silently not run."""
    import dagger

    async def run(call_id: str | None) -> str:
        ctr = dagger.dag.container().from_(pins.PYTHON_IMAGE)
        if call_id is not None:
            ctr = ctr.with_(main.once_per_call(call_id))
        return await ctr.with_exec(["cat", "/proc/sys/kernel/random/uuid"]).stdout()

    async with dagger_engine.connected(engine, REPO):
        assert await run(None) == await run(None)
        assert await run(main.new_call_id()) != await run(main.new_call_id())


def git(repo: pathlib.Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


async def test_explain_runs_in_the_engine_and_names_the_step_a_code_change_misses(
        engine: dagger_engine.Engine, tmp_path: pathlib.Path) -> None:
    import dagger

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    shutil.copytree(REPO / "bot", repo / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", repo / "Lavalink")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    music = next((repo / "bot" / "dimbybot").glob("*.py"))
    music.write_text(music.read_text() + "\n# changed\n")
    git(repo, "commit", "-qam", "head")
    async with dagger_engine.connected(engine, REPO):
        source = dagger.dag.host().directory(str(repo), exclude=main.SOURCE_IGNORE)
        out = await main.Dimbybot2(source=source).explain(base=base, head="HEAD", images=["bot"])
    (bot,) = json.loads(out)["images"]
    missed = [s["label"] for s in bot["steps"] if s["status"] == "miss"]
    assert missed == ["runtime 5/5"], bot["steps"]
