"""Shared fixtures and the Docker policy.

Tests marked `docker` need a Docker engine with buildx. Where there is none they skip with a
loud reason, unless DIMBYBOT_REQUIRE_DOCKER=1 (set by .ci/run): then a missing engine is a
test failure, and a session that skipped any docker test exits non-zero. CI can never pass
by skipping them.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from ci import local
from tests import fresh_docker as private_docker

REPO = pathlib.Path(__file__).resolve().parent.parent
REQUIRE_DOCKER = os.environ.get("DIMBYBOT_REQUIRE_DOCKER") == "1"
BASE_PREFIX = os.environ.get("BASE_IMAGE_PREFIX", "dimbybot2-test")
# Build args that swap the Dockerfiles' upstream bases for the local stand-ins
# (tests/images/build-base-images.sh makes them; no registry can be pulled from here).
LOCAL_BASES = (
    ("PYTHON_IMAGE", f"{BASE_PREFIX}/python:3.11"),
    ("FETCH_IMAGE", f"{BASE_PREFIX}/python:3.11"),
    ("LAVALINK_IMAGE", f"{BASE_PREFIX}/lavalink:4"),
)
BASE_IMAGES = tuple(sorted({image for _, image in LOCAL_BASES}))


def _docker_problem() -> str | None:
    if not shutil.which(local.DOCKER) and not pathlib.Path(local.DOCKER).exists():
        return f"no docker client at {local.DOCKER}"
    try:
        subprocess.run([local.DOCKER, "buildx", "version"], check=True, capture_output=True, timeout=20)
        subprocess.run([local.DOCKER, "info"], check=True, capture_output=True, timeout=20)
    except (subprocess.SubprocessError, OSError) as err:
        return f"docker with buildx is not usable: {err}"
    missing = [image for _, image in LOCAL_BASES
               if subprocess.run([local.DOCKER, "image", "inspect", image], capture_output=True).returncode]
    if missing:
        return f"local base images missing ({', '.join(sorted(set(missing)))}): run tests/images/build-base-images.sh"
    return None


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker client path, once the engine and the local base images are known to work."""
    problem = _docker_problem()
    if problem:
        if REQUIRE_DOCKER:
            pytest.fail(f"DIMBYBOT_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(f"SKIPPED REAL-DOCKER TEST: {problem}")
    return local.DOCKER


@pytest.fixture(scope="module")
def fresh_docker(docker: str) -> Iterator[private_docker.PrivateDocker]:
    """A private dockerd holding only the local base images: what a fresh CI runner starts with,
    without touching the host's build cache (see tests/fresh_docker.py)."""
    with private_docker.running(images=BASE_IMAGES) as daemon:
        yield daemon


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.agreement import AGREEMENT
    from tests.test_determinism import DIGESTS

    for image, (cached, uncached) in DIGESTS.items():
        terminalreporter.write_line(f"determinism: {image} cached {cached} / uncached {uncached}")

    if AGREEMENT:
        agree = sum(a for a, _, _ in AGREEMENT.values())
        total = sum(t for _, t, _ in AGREEMENT.values())
        misses = sum(m for _, _, m in AGREEMENT.values())
        terminalreporter.write_line(f"explain agrees with BuildKit on {agree}/{total} steps over {len(AGREEMENT)} scenarios "
                                    f"({misses} of them misses)")
        for scenario, (a, t, m) in AGREEMENT.items():
            terminalreporter.write_line(f"  {scenario}: {a}/{t} agree, {m} missed")

    from tests.agreement import AVOIDANCE

    if AVOIDANCE:
        skips = sum(same for same, _ in AVOIDANCE.values())
        missed = sum(miss for _, miss in AVOIDANCE.values())
        wrong = sum(same and miss for same, miss in AVOIDANCE.values())
        terminalreporter.write_line(f"build avoidance over {len(AVOIDANCE)} scenarios: {skips} would skip, {missed} had a BuildKit "
                                    f"miss, {wrong} wrong skips")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not REQUIRE_DOCKER:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    required = [r for r in skipped if {"docker", "tools"} & set(getattr(r, "keywords", {}))]
    if required:
        reporter.write_line(f"FAIL: {len(required)} docker/tools test(s) skipped with DIMBYBOT_REQUIRE_DOCKER=1", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def repo_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the files the images are built from, safe to mutate."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", dest / "Lavalink")
    shutil.copytree(REPO / "tests" / "images", dest / "tests" / "images", ignore=shutil.ignore_patterns("*.crt"))
    return dest


@pytest.fixture
def work_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "work"
    path.mkdir()
    return path
