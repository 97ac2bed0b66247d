"""build-and-push for real: the local driver, real BuildKit, a real registry with auth.

The CLI is run as a user would (`dimbybot-ci build-and-push ...`), with the password in the
environment. Cache behaviour is read from BuildKit's own progress (the JSON report).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ci import local
from ci.registry import Registry, RegistryAuthError
from tests import fresh_docker as private_docker
from tests.conftest import BASE_IMAGES, LOCAL_BASES
from tests.fresh_docker import PrivateDocker
from tests.registry_fixture import RunningRegistry, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

SHA1 = "1" * 40
SHA2 = "2" * 40


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("registry"))


def cli(root: pathlib.Path, *args: str, password: str | None = None,
        docker_host: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"]}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    env.pop("REGISTRY_PASSWORD", None)
    for name in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL"):
        env.pop(name, None)
    if password is not None:
        env["REGISTRY_PASSWORD"] = password
    base_args = [arg for key, value in LOCAL_BASES for arg in ("--build-arg", f"{key}={value}")]
    return subprocess.run([sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(root), *base_args, *args],
                          capture_output=True, text=True, env=env, cwd=root, timeout=900)


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.stdout.lstrip().startswith("{"), result.stdout + result.stderr
    return json.loads(result.stdout)


def images_by_name(report: dict[str, object]) -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in report["images"]}  # type: ignore[index, union-attr]


def test_both_images_are_pushed_with_sha_and_latest_at_the_same_digest(registry: RunningRegistry, repo_copy: pathlib.Path) -> None:
    namespace = f"team{uuid.uuid4().hex[:6]}"
    result = cli(repo_copy, "--registry", f"{registry.host}/{namespace}", "--username", registry.username,
                 "--sha", SHA1, "--format", "json", password=registry.password)
    assert result.returncode == 0, result.stderr
    report = images_by_name(report_of(result))
    client = Registry(registry.host, registry.username, registry.password)
    for name in ("bot", "lavalink"):
        repository = f"{namespace}/dimbybot2-{name}"
        digest = client.digest(repository, SHA1)
        assert digest == client.digest(repository, "latest") == report[name]["digest"]
        assert report[name]["refs"] == [f"{registry.host}/{repository}:{SHA1}", f"{registry.host}/{repository}:latest"]
        assert client.tags(repository) == sorted([SHA1, "latest"])


def test_ephemeral_runner_rebuild_reuses_every_step_from_the_registry_cache(registry: RunningRegistry, repo_copy: pathlib.Path,
                                                                           fresh_docker: PrivateDocker) -> None:
    namespace = f"cache{uuid.uuid4().hex[:6]}"
    # A unique code change so the first build really exports fresh layers.
    (repo_copy / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    common = ["--registry", f"{registry.host}/{namespace}", "--username", registry.username, "--sha", SHA1,
              "--cache", "registry", "--cache-ref", f"{registry.host}/{namespace}/buildcache", "--format", "json"]
    first = cli(repo_copy, *common, password=registry.password, docker_host=fresh_docker.host)
    assert first.returncode == 0, first.stderr
    for image in images_by_name(report_of(first)).values():
        assert image["cache_export"] == {"ok": True, "detail": "ok"}
    with private_docker.running(BASE_IMAGES) as new_runner:  # the next run is a new machine: only the registry cache is left
        second = cli(repo_copy, *common, password=registry.password, docker_host=new_runner.host)
    assert second.returncode == 0, second.stderr
    images = images_by_name(report_of(second))
    for name, image in images.items():
        assert image["cached_steps"] == image["total_steps"] > 0, f"{name}: {image['steps']}"
        assert image["cache_import"]["ok"] is True  # type: ignore[index]
    first_images = images_by_name(report_of(first))
    assert {n: i["digest"] for n, i in images.items()} == {n: i["digest"] for n, i in first_images.items()}


def test_an_unreachable_cache_registry_still_gives_a_cold_build_with_a_warning(registry: RunningRegistry,
                                                                              repo_copy: pathlib.Path) -> None:
    namespace = f"nocache{uuid.uuid4().hex[:6]}"
    result = cli(repo_copy, "--registry", f"{registry.host}/{namespace}", "--username", registry.username, "--sha", SHA1,
                 "--image", "lavalink", "--cache", "registry", "--cache-ref", "127.0.0.1:9/nowhere", "--format", "json",
                 password=registry.password)
    assert result.returncode == 0, result.stderr
    (image,) = report_of(result)["images"]  # type: ignore[misc]
    assert image["digest"] and image["error"] is None
    assert image["cache_import"]["ok"] is False or image["cache_export"]["ok"] is False
    assert any("cache" in w for w in image["warnings"])


def test_a_wrong_password_fails_clearly_and_moves_no_tag(registry: RunningRegistry, repo_copy: pathlib.Path) -> None:
    namespace = f"auth{uuid.uuid4().hex[:6]}"
    common = ["--registry", f"{registry.host}/{namespace}", "--username", registry.username, "--image", "lavalink"]
    assert cli(repo_copy, *common, "--sha", SHA1, password=registry.password).returncode == 0
    client = Registry(registry.host, registry.username, registry.password)
    before = client.digest(f"{namespace}/dimbybot2-lavalink", "latest")
    (repo_copy / "Lavalink" / "application.yml").write_text(
        (repo_copy / "Lavalink" / "application.yml").read_text() + f"# {uuid.uuid4()}\n")
    result = cli(repo_copy, *common, "--sha", SHA2, password="wrong-password")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: registry {registry.host} refused user 'ci-user' (HTTP 401)"
    assert client.tags(f"{namespace}/dimbybot2-lavalink") == sorted([SHA1, "latest"])
    assert client.digest(f"{namespace}/dimbybot2-lavalink", "latest") == before
    with pytest.raises(RegistryAuthError):
        Registry(registry.host, registry.username, "wrong-password").check_auth()


@pytest.mark.parametrize(("args", "message"), [
    (["--image", "web"], "error: --image: unknown image 'web' (known: bot, lavalink)"),
    (["--sha", "abc123"], "error: --sha: must be a full 40-character lower-case hex commit SHA, got 'abc123'"),
    (["--registry", "http://x"], "error: --registry: give the registry without a scheme (e.g. ghcr.io/owner), got 'http://x'"),
    (["--cache", "registry"], "error: --cache: registry needs --cache-ref (e.g. ghcr.io/owner/dimbybot2-cache)"),
])
def test_bad_arguments_fail_before_any_build(registry: RunningRegistry, repo_copy: pathlib.Path, args: list[str], message: str) -> None:
    namespace = f"bad{uuid.uuid4().hex[:6]}"
    work = repo_copy / "work"
    base = ["--registry", f"{registry.host}/{namespace}", "--username", registry.username, "--sha", SHA1, "--work-dir", str(work)]
    result = cli(repo_copy, *base, *args, password=registry.password)
    assert (result.returncode, result.stderr.strip()) == (2, message)
    assert not work.exists()  # no build started
    with pytest.raises(Exception, match="HTTP 404"):
        Registry(registry.host, registry.username, registry.password).tags(f"{namespace}/dimbybot2-bot")


def test_a_missing_dockerfile_fails_before_any_build(registry: RunningRegistry, repo_copy: pathlib.Path) -> None:
    (repo_copy / "Lavalink" / "Dockerfile").unlink()
    result = cli(repo_copy, "--registry", f"{registry.host}/x", "--sha", SHA1, "--work-dir", str(repo_copy / "work"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --image: image 'lavalink': Dockerfile 'Lavalink/Dockerfile' not found in {repo_copy}"
    assert not (repo_copy / "work").exists()


def test_the_password_never_reaches_logs_reports_or_disk(registry: RunningRegistry, repo_copy: pathlib.Path) -> None:
    namespace = f"secret{uuid.uuid4().hex[:6]}"
    work = repo_copy / "work"
    summary = repo_copy / "summary.md"
    result = cli(repo_copy, "--registry", f"{registry.host}/{namespace}", "--username", registry.username, "--sha", SHA1,
                 "--image", "lavalink", "--work-dir", str(work), "--summary-file", str(summary),
                 "--report-file", str(repo_copy / "report.json"), password=registry.password)
    assert result.returncode == 0, result.stderr
    written = [p for p in repo_copy.rglob("*") if p.is_file() and p.suffix in (".json", ".md")]
    assert any(p.parent == work for p in written) and summary in written
    for path in written:
        assert registry.password not in path.read_text(errors="replace"), path
    assert registry.password not in result.stdout + result.stderr
    # nor in any blob of the pushed image (layers, config, manifest)
    client = Registry(registry.host, registry.username, registry.password)
    repository = f"{namespace}/dimbybot2-lavalink"
    manifest = json.loads(client.get_manifest(repository, SHA1)[0])
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest.get("layers", []))]
    assert blobs
    import gzip

    for digest in blobs:
        data = client.blob(repository, digest)
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        assert registry.password.encode() not in raw, digest


def test_credentials_live_in_a_private_docker_config_that_is_removed() -> None:
    with local.docker_config({"reg.example": ("u", "p4ss")}) as env:
        config = pathlib.Path(env["DOCKER_CONFIG"]) / "config.json"
        assert config.stat().st_mode & 0o777 == 0o600
        assert config.parent.stat().st_mode & 0o777 == 0o700
    assert not config.exists() and not config.parent.exists()


def test_the_in_pipeline_registry_check_names_the_password(registry: RunningRegistry) -> None:
    # What the Dagger skin runs in a container before building: the core's registry client.
    env = {**os.environ, "REGISTRY_USERNAME": registry.username}
    ok = subprocess.run([sys.executable, "-m", "ci.registry_cli", "check", registry.host], capture_output=True, text=True,
                        env={**env, "REGISTRY_PASSWORD": registry.password})
    bad = subprocess.run([sys.executable, "-m", "ci.registry_cli", "check", registry.host], capture_output=True, text=True,
                         env={**env, "REGISTRY_PASSWORD": "nope"})
    assert ok.returncode == 0
    assert (bad.returncode, bad.stderr.strip()) == (1, f"--password: registry {registry.host} refused user 'ci-user' (HTTP 401)")
