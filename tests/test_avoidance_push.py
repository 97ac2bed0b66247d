"""Build avoidance for real (issue 19): the CLI as a user runs it, real BuildKit in a private
dockerd (a fresh runner), a real registry with auth holding the base images, so every base
digest is resolved from the registry as in production.

Unchanged inputs skip BuildKit (no progress log at all) and point the new SHA tag and `latest`
at the recorded image; a code change and a moved base image are built; a registry that fails
the lookup leaves a normal build that says why; with `--no-skip`, a build whose every step hit
from its own scope skips the cache export, and one that missed exports it.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci import local
from ci.registry import Registry
from tests import fresh_docker as private_docker
from tests.conftest import BASE_IMAGES, BASE_PREFIX, REPO
from tests.fresh_docker import PrivateDocker
from tests.registry_fixture import RunningRegistry, start_registry
from tests.test_registry_faults import Fault, FaultProxy

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

SHA1, SHA2, SHA3, SHA4 = ("1" * 40, "2" * 40, "3" * 40, "4" * 40)
PYTHON = f"{BASE_PREFIX}/python:3.11"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("avoid-registry"))


def push_base(daemon: PrivateDocker, registry: RunningRegistry, name: str, dockerfile: str | None = None) -> str:
    """Put a base image into the registry as `name` (from the local stand-in, or built from
    `dockerfile` on it); the daemon keeps no tag of it, so builds resolve it from the registry."""
    ref = f"{registry.host}/{name}"
    with local.docker_config({registry.host: (registry.username, registry.password)}) as env:
        env = {**env, "DOCKER_HOST": daemon.host}
        if dockerfile is None:
            subprocess.run([local.DOCKER, "tag", PYTHON, ref], env=env, check=True, capture_output=True)
            subprocess.run([local.DOCKER, "push", "--quiet", ref], env=env, check=True, capture_output=True, timeout=600)
            subprocess.run([local.DOCKER, "rmi", ref], env=env, check=True, capture_output=True)
        else:
            subprocess.run([local.DOCKER, "buildx", "build", "--provenance=false", "--output", f"type=image,name={ref},push=true",
                            "-"], input=dockerfile, text=True, env=env, check=True, capture_output=True, timeout=600)
    return ref


@pytest.fixture(scope="module")
def runner(fresh_docker: PrivateDocker) -> PrivateDocker:
    return fresh_docker


@pytest.fixture(scope="module")
def base_ref(runner: PrivateDocker, registry: RunningRegistry) -> str:
    return push_base(runner, registry, "bases/python:3.11")


def copy_repo(dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", dest / "Lavalink")
    # A nonce in the code: this module's first build is really built, not found in another run's record.
    (dest / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    return dest


def cli(root: pathlib.Path, registry: str, user: RunningRegistry, sha: str, base: str, daemon: PrivateDocker,
        *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], pathlib.Path]:
    work = root.parent / f"work-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"], "DOCKER_HOST": daemon.host, "REGISTRY_PASSWORD": user.password}
    for name in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(root), "--image", "bot", "--registry", registry,
            "--username", user.username, "--sha", sha, "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"FETCH_IMAGE={base}",
            "--work-dir", str(work), "--format", "json", *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert result.stdout.lstrip().startswith("{"), result.stdout + result.stderr
    (image,) = json.loads(result.stdout)["images"]
    return result, image, work


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry, runner: PrivateDocker,
          base_ref: str) -> tuple[pathlib.Path, str, dict[str, Any]]:
    """The bot built and pushed once for SHA1, with a registry cache: its inputs are recorded."""
    root = copy_repo(tmp_path_factory.mktemp("avoid") / "repo")
    namespace = f"avoid{uuid.uuid4().hex[:6]}"
    _, image, _ = cli(root, f"{registry.host}/{namespace}", registry, SHA1, base_ref, runner, *cache(registry, namespace))
    return root, namespace, image


def cache(registry: RunningRegistry, namespace: str) -> list[str]:
    return ["--cache", "registry", "--cache-ref", f"{registry.host}/{namespace}/buildcache"]


def client(registry: RunningRegistry) -> Registry:
    return Registry(registry.host, registry.username, registry.password)


def test_the_first_build_is_built_and_records_its_inputs(first: tuple[pathlib.Path, str, dict[str, Any]],
                                                         registry: RunningRegistry) -> None:
    _, namespace, image = first
    assert image["error"] is None and image["digest"]
    assert image["avoidance"]["skipped"] is False
    assert image["avoidance"]["detail"] == f"built: no image with these inputs yet (key {image['avoidance']['key'][:12]})"
    tags = client(registry).tags(f"{namespace}/dimbybot2-bot")
    assert tags == sorted([SHA1, "latest", f"inputs-{image['avoidance']['key']}"])


def test_unchanged_inputs_skip_buildkit_and_move_the_tags(first: tuple[pathlib.Path, str, dict[str, Any]], registry: RunningRegistry,
                                                          runner: PrivateDocker, base_ref: str) -> None:
    root, namespace, built = first
    result, image, work = cli(root, f"{registry.host}/{namespace}", registry, SHA2, base_ref, runner, *cache(registry, namespace))
    assert result.returncode == 0, (result.stderr, image["error"], image["avoidance"])
    assert image["avoidance"] == {"skipped": True, "key": built["avoidance"]["key"],
                                  "detail": f"skipped: same inputs as {built['digest']} (built for {SHA1})"}
    assert not list(work.glob("*.progress.json"))  # BuildKit was never asked
    repository = f"{namespace}/dimbybot2-bot"
    assert image["digest"] == client(registry).digest(repository, SHA2) == client(registry).digest(repository, "latest") == built["digest"]
    assert image["refs"] == [f"{registry.host}/{repository}:{SHA2}", f"{registry.host}/{repository}:latest"]


def test_a_code_change_is_built(first: tuple[pathlib.Path, str, dict[str, Any]], registry: RunningRegistry, runner: PrivateDocker,
                                base_ref: str, tmp_path: pathlib.Path) -> None:
    root, namespace, built = first
    head = tmp_path / "head"
    shutil.copytree(root, head, symlinks=True)
    (head / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    result, image, work = cli(head, f"{registry.host}/{namespace}", registry, SHA3, base_ref, runner, *cache(registry, namespace))
    assert result.returncode == 0, (result.stderr, image["error"], image["avoidance"])
    assert image["avoidance"]["skipped"] is False
    assert image["avoidance"]["detail"].startswith("built: no image with these inputs yet")
    assert image["avoidance"]["key"] != built["avoidance"]["key"]
    assert image["digest"] != built["digest"]
    assert [s["label"] for s in image["steps"] if not s["cached"]] == ["runtime 5/5"]
    assert (work / "bot.progress.json").exists()


def test_a_moved_base_image_is_built(tmp_path: pathlib.Path, registry: RunningRegistry, runner: PrivateDocker) -> None:
    name = f"moved{uuid.uuid4().hex[:6]}/python:3.11"
    base = push_base(runner, registry, name)
    root = copy_repo(tmp_path / "repo")
    namespace = f"moved{uuid.uuid4().hex[:6]}"
    _, before, _ = cli(root, f"{registry.host}/{namespace}", registry, SHA1, base, runner)
    assert before["error"] is None and before["avoidance"]["key"]
    # Upstream moves the tag: the same name, another image.
    push_base(runner, registry, name, f"FROM {PYTHON}\nRUN echo moved > /moved\n")
    result, after, _ = cli(root, f"{registry.host}/{namespace}", registry, SHA2, base, runner)
    assert result.returncode == 0, (result.stderr, after["error"], after["avoidance"])
    assert after["avoidance"]["skipped"] is False
    assert after["avoidance"]["detail"].startswith("built: no image with these inputs yet")
    assert after["digest"] != before["digest"]
    assert not any(s["cached"] for s in after["steps"])  # every step built on the moved base


def test_a_failing_lookup_builds_as_usual_and_says_so(first: tuple[pathlib.Path, str, dict[str, Any]], registry: RunningRegistry,
                                                      runner: PrivateDocker) -> None:
    root, namespace, built = first
    proxy = FaultProxy(registry.host)
    try:
        proxy.faults.append(Fault("GET", r"/manifests/inputs-", 500, count=1000))
        result, image, _ = cli(root, f"{proxy.host}/{namespace}", registry, SHA4,
                               f"{proxy.host}/bases/python:3.11", runner)
    finally:
        proxy.stop()
    assert result.returncode == 0, (result.stderr, image["error"], image["avoidance"])
    assert image["error"] is None and image["digest"]
    assert image["avoidance"]["skipped"] is False
    assert image["avoidance"]["detail"].startswith("built: the input-key lookup failed, built as without avoidance (registry "
                                                   f"{proxy.host}: GET /{namespace}/dimbybot2-bot/manifests/inputs-")
    assert "answered HTTP 500 after 4 attempts" in image["avoidance"]["detail"]
    assert client(registry).digest(f"{namespace}/dimbybot2-bot", SHA4) == image["digest"]


def _cache_digest(registry: RunningRegistry, namespace: str) -> str:
    return client(registry).digest(f"{namespace}/buildcache", "dimbybot2-bot")


def test_no_skip_builds_and_skips_the_export_when_every_step_hit_from_its_own_scope(
        first: tuple[pathlib.Path, str, dict[str, Any]], registry: RunningRegistry, runner: PrivateDocker, base_ref: str) -> None:
    root, namespace, built = first
    index = _cache_digest(registry, namespace)
    result, image, work = cli(root, f"{registry.host}/{namespace}", registry, SHA4, base_ref, runner, "--no-skip",
                              *cache(registry, namespace))
    assert result.returncode == 0, (result.stderr, image["error"], image["avoidance"])
    assert image["avoidance"]["detail"] == f"built: --no-skip (same inputs as {built['digest']})"
    assert image["cached_steps"] == image["total_steps"] > 0
    assert image["digest"] == built["digest"]
    assert image["cache_export"] == {"ok": True, "detail": "skipped: every step hit and the import came from the scope's own index "
                                                           f"(registry:{registry.host}/{namespace}/buildcache:dimbybot2-bot)"}
    assert (work / "bot.progress.json").exists() and not (work / "bot.export.progress.json").exists()
    assert _cache_digest(registry, namespace) == index


def _delete_manifest(registry: RunningRegistry, repository: str, digest: str) -> None:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    request = urllib.request.Request(f"http://{registry.host}/v2/{repository}/manifests/{digest}", method="DELETE",
                                     headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the test's own registry)
        assert response.status == 202


def test_no_skip_exports_when_a_fresh_runner_missed(tmp_path: pathlib.Path, registry: RunningRegistry, runner: PrivateDocker,
                                                    base_ref: str) -> None:
    root = copy_repo(tmp_path / "repo")
    namespace = f"lost{uuid.uuid4().hex[:6]}"
    _, built, _ = cli(root, f"{registry.host}/{namespace}", registry, SHA1, base_ref, runner, *cache(registry, namespace))
    assert built["cache_export"] == {"ok": True, "detail": "ok"}
    _delete_manifest(registry, f"{namespace}/buildcache", _cache_digest(registry, namespace))  # the scope's index is gone
    with private_docker.running(BASE_IMAGES) as fresh:
        result, image, work = cli(root, f"{registry.host}/{namespace}", registry, SHA2, base_ref, fresh, "--no-skip",
                                  *cache(registry, namespace))
    assert result.returncode == 0, (result.stderr, image["error"], image["avoidance"])
    assert image["cached_steps"] < image["total_steps"]
    assert image["cache_export"] == {"ok": True, "detail": "ok"}  # exported after the build, by a second, all-hit pass
    assert (work / "bot.export.progress.json").exists()
    assert _cache_digest(registry, namespace)  # the scope has an index again
