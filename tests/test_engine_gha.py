"""The GitHub Actions cache through the real Dagger engine (marked `engine`): build-and-push with
`--cache=gha`, BuildKit inside the pipeline exporting to and importing from the cache-service
stand-in over Azurite (tests/gha_standin: GitHub itself cannot run here). The engines of a test
share one Docker network, and the stand-in listens on its gateway, where their containers reach
the host. A fresh engine, on a new state volume, is what a fresh GitHub runner starts with: only
the gha cache carries over.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import pytest

from ci import main
from tests import dagger_engine, pinned_buildkit
from tests.conftest import REPO
from tests.gha_standin.service import GhaStandIn, start
from tests.registry_fixture import RunningRegistry, ThrowawayCA, start_registry

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def built() -> tuple[pathlib.Path, str]:
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    return dagger_engine.build()


@pytest.fixture
def runner_network() -> Iterator[tuple[str, str]]:
    with dagger_engine.network() as made:
        yield made


@pytest.fixture
def gha(runner_network: tuple[str, str], tmp_path: pathlib.Path) -> Iterator[GhaStandIn]:
    with contextlib.closing(start(tmp_path / "gha", host=runner_network[1])) as standin:
        yield next(standin)


@contextlib.contextmanager
def fresh_runner(built: tuple[pathlib.Path, str], runner_network: tuple[str, str],
                 ca: pathlib.Path | None = None) -> Iterator[dagger_engine.Engine]:
    """A new engine on a new state volume: what a fresh runner's `dagger call` starts."""
    with dagger_engine.running(*built, pinned_buildkit.MIRROR_STORAGE, extra_ca=ca, on_network=runner_network[0]) as engine:
        yield engine


async def build_and_push(engine: dagger_engine.Engine, env: dict[str, str], root: pathlib.Path = REPO,
                         **options: object) -> main.BuildAndPushResult:
    """`dagger call --buildkit-config=... build-and-push --cache=gha --gha-token=env://... ...` in a
    job whose runner variables are `env`, on the checkout at `root` (bench/dagger_bench.py: a
    scratch copy it edits)."""
    import dagger

    async with dagger_engine.connected(engine, REPO):
        source = dagger.dag.host().directory(str(root), exclude=main.SOURCE_IGNORE)
        config = dagger.dag.directory().with_new_file("buildkitd.toml", engine.buildkitd_toml()).file("buildkitd.toml")
        return await main.Dimbybot2(source=source, buildkit_config=config).build_and_push(  # type: ignore[arg-type]
            sha=SHA, cache_backend="gha", gha_token=dagger.dag.set_secret("gha-token", env["ACTIONS_RUNTIME_TOKEN"]),
            gha_results_url=dagger.dag.set_secret("gha-url", env["ACTIONS_RESULTS_URL"]), **options)


def steps(result: main.BuildAndPushResult) -> dict[str, tuple[int, int]]:
    return {i.name: (i.cached_steps, i.total_steps) for i in result.images}


async def test_a_fresh_engine_hits_every_step_from_the_gha_cache_and_pushes_the_same_digests(
        built: tuple[pathlib.Path, str], runner_network: tuple[str, str], gha: GhaStandIn) -> None:
    env = gha.runner_env("refs/heads/main")
    with fresh_runner(built, runner_network) as first_runner:
        cold = await build_and_push(first_runner, env)
    assert cold.ok, [(i.name, i.error) for i in cold.images]
    assert [i.cache_export for i in cold.images] == ["ok", "ok"], [i.cache_export for i in cold.images]
    with fresh_runner(built, runner_network) as second_runner:
        warm = await build_and_push(second_runner, env)
    assert warm.ok, [(i.name, i.error) for i in warm.images]
    assert all(hits == total > 0 for hits, total in steps(warm).values()), steps(warm)
    assert {i.name: i.digest for i in warm.images} == {i.name: i.digest for i in cold.images}
    assert [i.cache_import for i in warm.images] == ["ok", "ok"]
    token = env["ACTIONS_RUNTIME_TOKEN"]
    assert token not in cold.report_json + cold.summary_markdown + warm.report_json + warm.summary_markdown


async def test_an_export_refused_with_429_still_builds_and_pushes_and_the_report_says_why(
        built: tuple[pathlib.Path, str], runner_network: tuple[str, str], gha: GhaStandIn) -> None:
    """BuildKit keeps retrying a 429 until the export's timeout: `--cache-timeout` bounds the wait."""
    gha.service.faults.status["CreateCacheEntry"] = 429
    with fresh_runner(built, runner_network) as runner:
        result = await build_and_push(runner, gha.runner_env(), images=["lavalink"], cache_timeout="20s")
    (image,) = result.images
    assert result.ok and image.digest, image.error
    assert image.cache_export.startswith("failed:") and "429" in image.cache_export, image.cache_export


async def test_an_export_failed_with_500_still_builds_and_pushes_and_the_report_says_why(
        built: tuple[pathlib.Path, str], runner_network: tuple[str, str], gha: GhaStandIn) -> None:
    gha.service.faults.status["FinalizeCacheEntryUpload"] = 500
    with fresh_runner(built, runner_network) as runner:
        result = await build_and_push(runner, gha.runner_env(), images=["lavalink"])
    (image,) = result.images
    assert result.ok and image.digest, image.error
    assert image.cache_export.startswith("failed:"), image.cache_export


async def test_a_lost_cache_blob_takes_the_cold_retry_and_still_pushes(
        built: tuple[pathlib.Path, str], runner_network: tuple[str, str], gha: GhaStandIn) -> None:
    with fresh_runner(built, runner_network) as seeding:
        seeded = await build_and_push(seeding, gha.runner_env(), images=["lavalink"])
    assert seeded.ok, seeded.images[0].error
    assert gha.service.delete_blob_only("buildkit-blob-"), "the seed build stored no layer blob to lose"
    with fresh_runner(built, runner_network) as runner:
        result = await build_and_push(runner, gha.runner_env(), images=["lavalink"])
    (image,) = result.images
    assert result.ok and image.digest == seeded.images[0].digest, image.error
    assert any("rebuilt without external cache" in w for w in image.warnings), image.warnings
    assert "sig=" not in " ".join(image.warnings)


@pytest.fixture
def outside(runner_network: tuple[str, str], tmp_path: pathlib.Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningRegistry, ThrowawayCA]]:
    """A registry that outlives the runners (as ghcr.io does), over TLS on the network's gateway."""
    (tmp_path / "ca").mkdir()
    ca = ThrowawayCA.make(tmp_path / "ca")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    gateway = runner_network[1]
    for registry in start_registry(tmp_path / "registry", address=gateway, certificate=ca.issue(gateway), ca=ca.cert):
        yield registry, ca


async def test_a_forced_rebuild_of_recorded_inputs_leaves_out_the_cache_export_and_says_so(
        built: tuple[pathlib.Path, str], runner_network: tuple[str, str], gha: GhaStandIn,
        outside: tuple[RunningRegistry, ThrowawayCA]) -> None:
    """Issue 19 part 3 on the Dagger path: the first runner builds, exports to the image's gha
    scope and records that beside the image; a second fresh runner with --no-skip builds the
    same inputs again, every step hits from that scope, and the export (an identical index, a
    part of the 200-uploads-a-minute budget) is left out."""
    registry, ca = outside
    options = {"images": ["lavalink"], "registry": f"{registry.host}/dimbybot2", "username": registry.username}
    with fresh_runner(built, runner_network, ca.cert) as first_runner:
        first = await build_and_push(first_runner, gha.runner_env(), password=_password(registry), **options)
    (built_first,) = first.images
    assert first.ok and built_first.cache_export == "ok", (built_first.error, built_first.cache_export)
    uploads = creates(gha)
    with fresh_runner(built, runner_network, ca.cert) as second_runner:
        again = await build_and_push(second_runner, gha.runner_env(), password=_password(registry), no_skip=True, **options)
    (rebuilt,) = again.images
    assert again.ok and rebuilt.digest == built_first.digest, rebuilt.error
    assert rebuilt.cached_steps == rebuilt.total_steps > 0, (rebuilt.cached_steps, rebuilt.total_steps)
    assert rebuilt.cache_export.startswith("skipped: every step hit"), rebuilt.cache_export
    assert creates(gha) == uploads, "the cache was exported again"


def creates(gha: GhaStandIn) -> int:
    return sum(method == "CreateCacheEntry" for method, _ in gha.service.calls)


def _password(registry: RunningRegistry) -> object:
    import dagger

    return dagger.dag.set_secret("registry-password", registry.password)
