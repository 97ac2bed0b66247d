"""The Dagger path's builds, run by the BuildKit it pins (ci/pins.py), for real.

On the Dagger path every image is built by one exec: the credential wrapper around the
rendered `buildctl build` (`ci.main.buildctl_command`), in a container of the pinned BuildKit
image, against a buildkitd from the same image. No Dagger engine can be built here (the Go
module proxy refuses modules it needs: README, "What was verified on an engine"), so these
tests run that exact exec on the host, against buildkitd and buildctl built from BuildKit's
Go module at the pin (tests/engine/build.sh), with the same environment the engine gives the
container (secrets as environment variables, DOCKER_CONFIG on a private directory), and read
the results with the Dagger skin's own readers (`read_progress`, `image_result`).

What stands in for what: base images come from a local mirror registry
(tests/images/build-mirror.sh: test doubles for docker.io's python and ghcr.io's Lavalink,
served under their upstream names, so the production Dockerfiles build unchanged); GitHub's
cache service is the stand-in over Azurite (tests/gha_standin). Everything else is real: a
fresh buildkitd (new state directory) is a fresh runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ci import cache, config, main, tags
from ci.model import BuildRequest
from ci.pipeline import ImagePlan, PipelineOptions, cold_retry, image_result
from ci.registry import Registry
from tests import pinned_buildkit
from tests.conftest import REPO
from tests.gha_standin.service import GhaStandIn, start
from tests.registry_fixture import RunningRegistry, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

SHA = "b" * 40
MAIN = "refs/heads/main"


@pytest.fixture(scope="module")
def bin_dir() -> pathlib.Path:
    built = pinned_buildkit.binaries()
    pinned_buildkit.fill_mirror(built)
    return built


@pytest.fixture(scope="module")
def mirror(bin_dir: pathlib.Path) -> Iterator[str]:
    with pinned_buildkit.serving_mirror() as host:
        yield host


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaStandIn]:
    yield from start(tmp_path_factory.mktemp("gha"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """What the Dagger path's source directory holds for a build: the images' files."""
    dest = tmp_path_factory.mktemp("source") / "src"
    dest.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", dest / "Lavalink")
    return dest


def dagger_plans(registry: RunningRegistry, backend: cache.Backend, **cache_options: Any) -> list[ImagePlan]:
    """The plans `build-and-push` makes for an outside registry (main.push_plans)."""
    options = PipelineOptions(
        registry=f"{registry.host}/dimbybot2", tag_plan=tags.plan(SHA, True, ()),
        cache=cache.CacheOptions(backend=backend, **cache_options), rewrite_timestamp=True)
    return main.push_plans(config.load(REPO), options, plain_http=tags.plain_http(registry.host))


@dataclasses.dataclass
class Built:
    code: int
    progress: str
    result: Any  # pipeline.ImageResult
    tail: str
    out: pathlib.Path

    @property
    def digest(self) -> str | None:
        meta = self.out / "metadata.json"
        return json.loads(meta.read_text()).get("containerimage.digest") if meta.exists() else None

    def misses(self) -> list[str]:
        return [str(s.label) for s in self.result.log.cacheable if not s.cached]


def run_exec(daemon: pinned_buildkit.Buildkitd, request: BuildRequest, source: pathlib.Path, out: pathlib.Path,
             secrets: dict[str, str]) -> Built:
    """The Dagger path's build exec, as the engine runs it: stderr to progress.json, the exit
    code read afterwards (expect=ANY), credentials only in the environment."""
    out.mkdir(parents=True)
    docker_config = out / "docker-config"  # the tmpfs on the Dagger path
    docker_config.mkdir()
    env = daemon.env(DOCKER_CONFIG=str(docker_config), **secrets)
    with (out / "progress.json").open("w") as stderr:
        code = subprocess.run(main.buildctl_command(request, root=str(source), out=str(out)), env=env, stderr=stderr,
                              stdout=subprocess.DEVNULL, timeout=900).returncode
    progress = (out / "progress.json").read_text()
    log, tail = main.read_progress(progress)
    shutil.rmtree(docker_config)  # the tmpfs goes with the container
    return Built(code, progress, image_result(request.image, request, log), tail, out)


def files_holding(root: pathlib.Path, needle: bytes) -> list[pathlib.Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def registry_secrets(registry: RunningRegistry) -> dict[str, str]:
    return {"REGISTRY_HOST": registry.host, "REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password}


def test_both_images_push_with_the_wrapper_credentials_and_the_sha_tag_resolves_to_the_built_digest(
        bin_dir: pathlib.Path, mirror: str, registry: RunningRegistry, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    client = Registry(registry.host, registry.username, registry.password)
    with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as daemon:
        for image_plan in dagger_plans(registry, cache.Backend.ENGINE):
            built = run_exec(daemon, image_plan.request, source, tmp_path / image_plan.image.name, registry_secrets(registry))
            assert built.code == 0, built.tail or built.progress[-2000:]
            assert built.digest and built.digest.startswith("sha256:")
            repository = image_plan.refs[0].split("/", 1)[1].rsplit(":", 1)[0]
            assert client.digest(repository, SHA) == built.digest, image_plan.image.name
            assert built.result.total_steps > 0 and not built.result.log.error


def test_a_wrong_password_fails_the_push_with_the_registrys_words(
        bin_dir: pathlib.Path, mirror: str, registry: RunningRegistry, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    lavalink = next(p for p in dagger_plans(registry, cache.Backend.NONE) if p.image.name == "lavalink")
    with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as daemon:
        built = run_exec(daemon, lavalink.request, source, tmp_path / "out",
                         {**registry_secrets(registry), "REGISTRY_PASSWORD": "not-the-password"})
    assert built.code != 0
    error = built.result.log.error or built.tail
    assert "401" in error or "unauthorized" in error.lower(), error
    assert "not-the-password" not in built.progress


def test_a_fresh_runner_hits_every_step_from_the_gha_cache_and_pushes_the_same_digests(
        bin_dir: pathlib.Path, mirror: str, registry: RunningRegistry, gha: GhaStandIn, source: pathlib.Path,
        tmp_path: pathlib.Path) -> None:
    runner_env = gha.runner_env(MAIN)
    secrets = {**registry_secrets(registry), "ACTIONS_RUNTIME_TOKEN": runner_env["ACTIONS_RUNTIME_TOKEN"],
               "ACTIONS_RESULTS_URL": runner_env["ACTIONS_RESULTS_URL"]}
    plans = dagger_plans(registry, cache.Backend.GHA, gha_tokens=True, bust="pinned")
    first: dict[str, Built] = {}
    with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as daemon:
        for image_plan in plans:
            first[image_plan.image.name] = built = run_exec(daemon, image_plan.request, source,
                                                            tmp_path / "cold" / image_plan.image.name, secrets)
            assert built.code == 0, built.tail or built.progress[-2000:]
            assert built.result.cache_export.ok is True, built.result.cache_export
        token = runner_env["ACTIONS_RUNTIME_TOKEN"].encode()
        # BuildKit itself keeps it: the client passes cache imports, attributes and all, as the
        # frontend's `cache-imports`, and buildkitd records those in its build history. That is
        # why the Dagger path keeps BuildKit's state only for the engine backend (no tokens).
        assert [p.name for p in files_holding(daemon.root, token)] == ["history.db"]
    assert not files_holding(gha.azurite_dir, token), "the runtime token reached the exported cache"
    with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as fresh:
        for image_plan in plans:
            again = run_exec(fresh, image_plan.request, source, tmp_path / "warm" / image_plan.image.name, secrets)
            assert again.code == 0, again.tail
            assert again.misses() == [], f"{image_plan.image.name} missed on a fresh runner: {again.misses()}"
            assert again.result.cache_import.ok is True
            assert again.digest == first[image_plan.image.name].digest, "cached and cold builds pushed different images"
    for built in (*first.values(),):
        assert runner_env["ACTIONS_RUNTIME_TOKEN"] not in built.progress


def test_a_lost_gha_blob_takes_the_cold_retry_and_still_pushes(
        bin_dir: pathlib.Path, mirror: str, registry: RunningRegistry, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Blobs gone while their entries stay listed (a storage-side loss): its own stand-in, since
    every scope shares the blob entries."""
    with contextlib.closing(start(tmp_path / "gha")) as standin:
        gha = next(standin)
        runner_env = gha.runner_env(MAIN)
        secrets = {**registry_secrets(registry), "ACTIONS_RUNTIME_TOKEN": runner_env["ACTIONS_RUNTIME_TOKEN"],
                   "ACTIONS_RESULTS_URL": runner_env["ACTIONS_RESULTS_URL"]}
        lavalink = next(p for p in dagger_plans(registry, cache.Backend.GHA, gha_tokens=True) if p.image.name == "lavalink")
        with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as daemon:
            assert run_exec(daemon, lavalink.request, source, tmp_path / "seed", secrets).code == 0
        assert gha.service.delete_blob_only("buildkit-blob-"), "the seed build stored no layer blob to lose"
        with pinned_buildkit.running(bin_dir, mirror, plain_http=(registry.host,)) as fresh:
            built = run_exec(fresh, lavalink.request, source, tmp_path / "broken", secrets)
            retry = cold_retry(lavalink.request, built.result.log, built.code == 0)
            if retry is not None:  # the Dagger path's decision (ci.main._push_and_tag), then its second exec
                built = run_exec(fresh, retry.request, source, tmp_path / "cold", secrets)
    assert built.code == 0, built.tail
    assert built.digest
    described = " ".join(built.result.warnings) + (retry.reason if retry else "")
    assert "sig=" not in described and "se=" not in described
    assert retry is not None or any("ran again" in w for w in built.result.warnings), built.result.warnings


def test_a_build_without_an_exporter_runs_every_step_on_the_pinned_buildkit(
        bin_dir: pathlib.Path, mirror: str, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """verify-determinism's warm-up and debug's cut build export nothing: buildctl must then be
    given no --output at all (buildkitd has no `cacheonly` exporter; an offline check once
    passed a command that failed on every engine)."""
    options = PipelineOptions(registry=None, tag_plan=None, images=("lavalink",),
                              cache=cache.CacheOptions(backend=cache.Backend.ENGINE))
    (lavalink,) = main.push_plans(config.load(REPO), options, plain_http=False)
    assert lavalink.request.output.kind == "cacheonly"
    with pinned_buildkit.running(bin_dir, mirror) as daemon:
        built = run_exec(daemon, lavalink.request, source, tmp_path / "out", {})
    assert built.code == 0, built.tail
    assert built.result.total_steps > 0 and built.misses() == [str(s.label) for s in built.result.log.cacheable]
