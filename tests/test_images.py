"""The two images, built for real by BuildKit (docker buildx) from the repository.

Cache boundaries are measured from BuildKit's own progress output (its CACHED flags per
step), never from timings.
"""

from __future__ import annotations

import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from ci import local
from ci.model import BuildRequest, Output
from ci.progress import BuildLog
from tests.conftest import LOCAL_BASES

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

GOOD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123"  # shaped like one, not real


def build(root: pathlib.Path, work: pathlib.Path, image: str, output: Output | None = None) -> local.BuildOutcome:
    dockerfile, context = ("Dockerfile", ".") if image == "bot" else ("Lavalink/Dockerfile", "Lavalink")
    request = BuildRequest(image=image, context=context, dockerfile=dockerfile,
                           output=output or Output("cacheonly"), build_args=LOCAL_BASES, source_date_epoch=0)
    outcome = local.run_build(request, root, work)
    assert outcome.ok, outcome.stderr_tail
    return outcome


def statuses(log: BuildLog) -> dict[str, bool]:
    """label -> cached, for every cacheable Dockerfile step."""
    return {s.label: s.cached for s in log.cacheable if s.label}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([local.DOCKER, *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture
def network() -> Iterator[str]:
    name = f"dimbybot-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both images built from the real repository and loaded under test tags."""
    from tests.conftest import REPO

    work = tmp_path_factory.mktemp("images")
    tags = {}
    for name in ("bot", "lavalink"):
        tag = f"dimbybot2-test/{name}-under-test:{uuid.uuid4().hex[:8]}"
        build(REPO, work, name, Output("load", names=(tag,)))
        tags[name] = tag
    yield tags
    for tag in tags.values():
        docker("image", "rm", "-f", tag, check=False)


def start_lavalink(image: str, network: str, password: str = "s3cret", **env: str) -> str:
    extra = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
    name = f"lavalink-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", network, "-e", f"LAVALINK_SERVER_PASSWORD={password}", *extra, image)
    for _ in range(50):
        if "standin Lavalink" in docker("logs", name, check=False).stdout:
            return name
        time.sleep(0.2)
    raise AssertionError(docker("logs", name, check=False).stderr)


def self_check(image: str, network: str, host: str, password: str) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", "--network", network, "-e", f"DISCORD_TOKEN={GOOD_TOKEN}",
                  "-e", f"LAVALINK_HOST={host}", "-e", f"LAVALINK_PASSWORD={password}",
                  image, "--self-check", check=False)


def test_bot_image_runs_as_non_root_with_its_dependencies_importable(images: dict[str, str]) -> None:
    result = docker("run", "--rm", "--entrypoint", "python", images["bot"], "-c",
                    "import os, discord, wavelink, dimbybot.bot, dimbybot.music; print(os.getuid(), discord.__version__)")
    uid, discord_version = result.stdout.split()
    assert uid == "10001"
    assert discord_version == "2.7.1"  # the version in bot/requirements.lock


def test_self_check_reports_an_unreachable_lavalink(images: dict[str, str], network: str) -> None:
    result = self_check(images["bot"], network, host="nowhere-lavalink", password="x")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("self-check failed: Lavalink at http://nowhere-lavalink:2333 is unreachable")
    assert len(result.stderr.strip().splitlines()) == 1


def test_self_check_succeeds_against_lavalink_and_names_a_wrong_password(images: dict[str, str], network: str) -> None:
    # The Lavalink image here is built on a stand-in base (test double: the real Lavalink
    # image cannot be pulled on this machine); our Dockerfile, config and health check are real.
    lavalink = start_lavalink(images["lavalink"], network)
    try:
        ok = self_check(images["bot"], network, host=lavalink, password="s3cret")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"self-check ok: Lavalink 4.0.0-standin at http://{lavalink}:2333")
        wrong = self_check(images["bot"], network, host=lavalink, password="not-it")
        assert wrong.returncode == 1
        assert "HTTP 401 (wrong LAVALINK_PASSWORD?)" in wrong.stderr
    finally:
        docker("rm", "-f", lavalink, check=False)


def test_self_check_rejects_a_bad_configuration_without_network(images: dict[str, str]) -> None:
    result = docker("run", "--rm", "--network", "none", "-e", "DISCORD_TOKEN=Bot abc", "-e", "LAVALINK_PASSWORD=x",
                    images["bot"], "--self-check", check=False)
    assert result.returncode == 1
    assert "DISCORD_TOKEN must be the bare token" in result.stderr


def test_lavalink_health_check_fails_on_http_errors(images: dict[str, str], network: str) -> None:
    healthy = start_lavalink(images["lavalink"], network)
    broken = start_lavalink(images["lavalink"], network, STANDIN_FAIL_STATUS="500")
    try:
        assert docker("exec", healthy, "bash", "/opt/Lavalink/healthcheck.sh", check=False).returncode == 0
        wrong = docker("exec", "-e", "LAVALINK_SERVER_PASSWORD=wrong", healthy, "bash", "/opt/Lavalink/healthcheck.sh", check=False)
        assert (wrong.returncode, wrong.stdout.strip()) == (1, "unhealthy: HTTP/1.0 401 Unauthorized")
        failing = docker("exec", broken, "bash", "/opt/Lavalink/healthcheck.sh", check=False)
        assert (failing.returncode, failing.stdout.strip()) == (1, "unhealthy: HTTP/1.0 500 Internal Server Error")
        config = docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}", images["lavalink"]).stdout
        assert "/opt/Lavalink/healthcheck.sh" in config
    finally:
        docker("rm", "-f", healthy, broken, check=False)


def test_lavalink_image_has_config_without_password_and_an_empty_plugin_dir(images: dict[str, str]) -> None:
    listing = docker("run", "--rm", "--entrypoint", "bash", images["lavalink"], "-c",
                     "ls -A /opt/Lavalink/plugins | wc -l; grep -c 'LAVALINK_SERVER_PASSWORD}' application.yml").stdout.split()
    assert listing == ["0", "1"]  # no plugins listed -> empty dir; password is a placeholder


def test_cache_boundaries_of_the_bot_image(repo_copy: pathlib.Path, work_dir: pathlib.Path) -> None:
    first = build(repo_copy, work_dir, "bot")
    steps = statuses(first.log)
    deps = {label for label in steps if label.startswith("deps ")}
    code_copy = next(s.label for s in first.log.cacheable if s.instruction.startswith("COPY bot/dimbybot"))
    assert deps and code_copy

    rebuild = statuses(build(repo_copy, work_dir, "bot").log)
    assert all(rebuild.values()), f"immediate rebuild missed: {rebuild}"

    (repo_copy / "README.md").write_text(f"changed docs {uuid.uuid4()}\n")
    (repo_copy / "tests" / "images" / "new-file.txt").write_text("ignored\n")
    ignored = statuses(build(repo_copy, work_dir, "bot").log)
    assert all(ignored.values()), f"a .dockerignored change invalidated steps: {ignored}"

    # Unique contents: the cache is content-addressed, so a change seen in an earlier run
    # on this machine would (rightly) hit.
    init = repo_copy / "bot" / "dimbybot" / "__init__.py"
    init.write_text(init.read_text() + f"\n# a code change {uuid.uuid4()}\n")
    code = statuses(build(repo_copy, work_dir, "bot").log)
    assert all(code[label] for label in deps), f"a code change rebuilt dependency steps: {code}"
    after_copy = [s.label for s in first.log.cacheable if s.label and _order(s.label) >= _order(code_copy) and s.stage == "runtime"]
    assert [label for label, hit in code.items() if not hit] == after_copy

    lock = repo_copy / "bot" / "requirements.lock"
    lock.write_text(lock.read_text() + f"# a lock change {uuid.uuid4()}\n")
    locked = statuses(build(repo_copy, work_dir, "bot").log)
    install = next(s.label for s in first.log.cacheable if s.stage == "deps" and s.keyword == "RUN")
    assert not locked[install], f"a lock change did not rebuild the dependency install: {locked}"
    # Not asserted: `COPY --from=deps` may still hit. BuildKit keys it by the content it copies,
    # and a comment-only lock change reinstalls a byte-identical venv (installs are
    # reproducible), so it rightly hits. Nor steps before the lock copy: BuildKit's CACHED
    # flag for a bare WORKDIR step was seen as hit in one run and miss in the next.


def _order(label: str) -> int:
    return int(label.split()[-1].split("/")[0])


def test_compose_file_is_valid_and_takes_the_tag_from_the_environment(tmp_path: pathlib.Path) -> None:
    from tests.conftest import REPO

    env = {"DIMBYBOT_REGISTRY": "registry.example:5000/team", "DIMBYBOT_TAG": "a" * 40,
           "DISCORD_TOKEN": "t", "LAVALINK_PASSWORD": "p", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([local.DOCKER, "compose", "-f", str(REPO / "compose.yaml"), "config", "--format", "json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    services = json.loads(result.stdout)["services"]
    assert services["bot"]["image"] == f"registry.example:5000/team/dimbybot2-bot:{'a' * 40}"
    assert services["lavalink"]["image"] == f"registry.example:5000/team/dimbybot2-lavalink:{'a' * 40}"
    assert services["bot"]["depends_on"]["lavalink"]["condition"] == "service_healthy"
    assert {s["restart"] for s in services.values()} == {"unless-stopped"}
    missing = subprocess.run([local.DOCKER, "compose", "-f", str(REPO / "compose.yaml"), "config"],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert missing.returncode != 0 and "required variable" in missing.stderr
