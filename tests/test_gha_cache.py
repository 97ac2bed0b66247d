"""The GitHub Actions cache (v2) for real, with the local driver and real BuildKit.

GitHub itself cannot run here, so its cache service is a stand-in (tests/gha_standin: the v2
Twirp API and GitHub's rules for keys, versions and refs); the blobs go to a real Azure Blob
endpoint (Azurite), uploaded and downloaded by BuildKit's own client. The CLI runs exactly as
on a runner: `dimbybot-ci build-and-push --cache=gha` with ACTIONS_RUNTIME_TOKEN and
ACTIONS_RESULTS_URL in its environment. A "fresh runner" is a new private dockerd
(tests/fresh_docker.py): an empty build cache and content store, like a new CI machine.

The tests share one stand-in and one cold build (module scope), and run in file order: the
fault tests that break entries come last.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci.cache_usage import ref_hash
from tests import fresh_docker
from tests.conftest import BASE_IMAGES, LOCAL_BASES, REPO
from tests.gha_standin.service import GhaStandIn, start
from tests.registry_fixture import RunningRegistry, free_port, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

MAIN, PR = "refs/heads/main", "refs/pull/7/merge"
SHA = "a" * 40
BASES = BASE_IMAGES


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaStandIn]:
    yield from start(tmp_path_factory.mktemp("gha"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(autouse=True)
def no_faults(gha: GhaStandIn) -> Iterator[None]:
    yield
    gha.service.faults.clear()


def fresh_runner() -> contextlib.AbstractContextManager[fresh_docker.PrivateDocker]:
    return fresh_docker.running(images=BASES)


def build(repo: pathlib.Path, runner: fresh_docker.PrivateDocker, registry: RunningRegistry, env: dict[str, str],
          *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    """`dimbybot-ci build-and-push --cache=gha` as a workflow step runs it; the report per image."""
    environment = {**runner.env, **env, "REGISTRY_PASSWORD": registry.password}
    base_args = [arg for key, value in LOCAL_BASES for arg in ("--build-arg", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(repo), *base_args, "--cache=gha",
         "--registry", f"{registry.host}/gha", "--username", registry.username, "--sha", SHA, "--format", "json", *args],
        capture_output=True, text=True, env=environment, cwd=REPO, timeout=900)
    assert result.stdout.lstrip().startswith("{"), result.stdout + result.stderr
    return result, {i["name"]: i for i in json.loads(result.stdout)["images"]}


def misses(image: dict[str, Any]) -> list[str]:
    return [s["label"] for s in image["steps"] if not s["cached"]]


def index_key(scope: str, ref: str = MAIN) -> str:
    return f"index-{scope}-1-{ref_hash(ref)}#"


def copy_repo(dest: pathlib.Path) -> pathlib.Path:
    import shutil

    dest.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", dest / "Lavalink")
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return copy_repo(tmp_path_factory.mktemp("gha-repo") / "repo")


@pytest.fixture(scope="module")
def seeded(gha: GhaStandIn, registry: RunningRegistry, repo: pathlib.Path) -> dict[str, Any]:
    """The default branch's first build on a fresh runner, one image at a time (to see which
    cache keys each build asks for)."""
    seen: dict[str, Any] = {"calls": {}, "reports": {}}
    with fresh_runner() as runner:
        for image in ("bot", "lavalink"):
            before = len(gha.service.calls)
            result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--image", image)
            assert result.returncode == 0, result.stderr
            seen["calls"][image] = gha.service.calls[before:]
            seen["reports"][image] = report[image]
    return seen


def test_cold_build_exports_each_image_to_its_own_scope(gha: GhaStandIn, seeded: dict[str, Any]) -> None:
    for image, other in (("bot", "lavalink"), ("lavalink", "bot")):
        report = seeded["reports"][image]
        assert report["cache_export"]["ok"] is True, report
        assert gha.service.finalized(index_key(f"dimbybot2-{image}")), f"no index for {image}"
        asked = [key for _, key in seeded["calls"][image]]
        assert any(key.startswith(f"index-dimbybot2-{image}-") for key in asked)
        assert not [key for key in asked if f"dimbybot2-{other}" in key], f"{image} build read {other}'s scope"
    assert {e.ref for e in gha.service.finalized()} == {MAIN}


@pytest.fixture(scope="module")
def unchanged(gha: GhaStandIn, registry: RunningRegistry, repo: pathlib.Path,
              seeded: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]], str]:
    env = gha.runner_env(MAIN)
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, env)
    return result, report, env["ACTIONS_RUNTIME_TOKEN"]


def test_fresh_runner_with_unchanged_inputs_hits_every_cacheable_step(unchanged: tuple[Any, dict[str, dict[str, Any]], str]) -> None:
    result, report, _ = unchanged
    assert result.returncode == 0, result.stderr
    for name in ("bot", "lavalink"):
        image = report[name]
        assert image["cached_steps"] == image["total_steps"] > 0, misses(image)
        assert image["cache_import"]["ok"] is True and image["warnings"] == []
        assert image["refs"] == [f"{image['refs'][0].rsplit(':', 1)[0]}:{SHA}", f"{image['refs'][0].rsplit(':', 1)[0]}:latest"]


def test_runtime_token_never_reaches_reports_logs_or_cache_entries(gha: GhaStandIn, repo: pathlib.Path,
                                                                   unchanged: tuple[Any, Any, str]) -> None:
    result, _, token = unchanged
    assert token in gha.service.authorizations[-1]  # the token did reach the cache service
    secret = token.split(".")[2]  # its signature: what makes it usable
    assert secret not in result.stdout + result.stderr
    for log in (repo / ".work").glob("*.json"):
        assert secret not in log.read_text(errors="replace"), log
    for stored in (gha.azurite_dir).rglob("*"):
        if stored.is_file():
            assert secret.encode() not in stored.read_bytes(), stored


def test_bot_code_change_hits_every_dependency_step(gha: GhaStandIn, registry: RunningRegistry, seeded: dict[str, Any],
                                                   tmp_path: pathlib.Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    (repo / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--image", "bot")
    assert result.returncode == 0, result.stderr
    assert misses(report["bot"]) == ["runtime 5/5"]  # only `COPY bot/dimbybot`


def test_lock_change_misses_only_from_the_lock_on(gha: GhaStandIn, registry: RunningRegistry, seeded: dict[str, Any],
                                                  tmp_path: pathlib.Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    lock = repo / "bot" / "requirements.lock"
    lock.write_text(lock.read_text() + f"# {uuid.uuid4()}\n")
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--image", "bot")
    assert result.returncode == 0, result.stderr
    steps = {s["label"]: s["cached"] for s in report["bot"]["steps"]}
    assert steps["deps 2/4"] and steps["runtime 2/5"], "steps before the lock must hit"
    assert not steps["deps 3/4"] and not steps["deps 4/4"], "the lock COPY and the install must miss"


def test_cache_bust_starts_cold_in_new_scopes_and_leaves_the_old_ones_untouched(
        gha: GhaStandIn, registry: RunningRegistry, repo: pathlib.Path, seeded: dict[str, Any]) -> None:
    old_indexes = [(e.id, e.key, e.last_accessed_at) for e in gha.service.finalized("index-dimbybot2-")]
    bust = uuid.uuid4().hex[:8]
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--cache-bust", bust)
    assert result.returncode == 0, result.stderr
    for name in ("bot", "lavalink"):
        assert report[name]["cached_steps"] == 0
        assert gha.service.finalized(index_key(f"dimbybot2-{name}-{bust}"))
    assert [(e.id, e.key, e.last_accessed_at) for e in gha.service.finalized("index-dimbybot2-")
            if not e.key.startswith((f"index-dimbybot2-bot-{bust}", f"index-dimbybot2-lavalink-{bust}"))] == old_indexes


def test_pull_request_token_reads_the_default_branch_and_writes_only_its_own_ref(
        gha: GhaStandIn, registry: RunningRegistry, seeded: dict[str, Any], tmp_path: pathlib.Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    (repo / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "pr-{uuid.uuid4()}"\n')
    main_entries = {(e.id, e.key) for e in gha.service.finalized() if e.ref == MAIN}
    before = {e.id for e in gha.service.finalized()}
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(PR, read_refs=(MAIN,)), "--image", "bot", "--no-latest")
    assert result.returncode == 0, result.stderr
    assert misses(report["bot"]) == ["runtime 5/5"]  # every dependency step read from main's entries
    written = [e for e in gha.service.finalized() if e.id not in before]
    assert written and {e.ref for e in written} == {PR}
    assert any(e.key.startswith(index_key("dimbybot2-bot", PR)) for e in written)
    assert {(e.id, e.key) for e in gha.service.finalized() if e.ref == MAIN} == main_entries


@pytest.fixture(scope="module")
def fault_runner(seeded: dict[str, Any]) -> Iterator[fresh_docker.PrivateDocker]:
    """One runner for the export faults: each case changes the code, so there is a layer to export."""
    with fresh_runner() as runner:
        yield runner


@pytest.mark.parametrize(("fault", "expected"), [
    ("429", "HTTP 429"),
    ("500", "HTTP 500"),
    ("slow", "answered too slowly"),
])
def test_export_fault_keeps_the_build_and_push_and_says_why(gha: GhaStandIn, registry: RunningRegistry, tmp_path: pathlib.Path,
                                                            fault_runner: fresh_docker.PrivateDocker, fault: str, expected: str) -> None:
    repo = copy_repo(tmp_path / "repo")
    (repo / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    if fault == "429":
        gha.service.exhaust_upload_budget()
    elif fault == "500":
        gha.service.faults.status["CreateCacheEntry"] = 500
    else:
        gha.service.faults.delay["CreateCacheEntry"] = 45  # > timeout + the driver's grace
    result, report = build(repo, fault_runner, registry, gha.runner_env(MAIN), "--image", "bot", "--cache-timeout", "5s")
    assert result.returncode == 0, result.stderr
    bot = report["bot"]
    assert bot["error"] is None and bot["refs"] and bot["digest"]
    assert bot["cache_export"]["ok"] is False and expected in bot["cache_export"]["detail"], bot["cache_export"]
    assert any(expected in w for w in bot["warnings"])


def test_unreachable_cache_service_on_import_is_a_cold_build_reported(gha: GhaStandIn, registry: RunningRegistry,
                                                                      repo: pathlib.Path) -> None:
    env = {**gha.runner_env(MAIN), "ACTIONS_RESULTS_URL": f"http://127.0.0.1:{free_port()}/"}
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, env, "--image", "lavalink")
    assert result.returncode == 0, result.stderr
    lavalink = report["lavalink"]
    assert lavalink["cached_steps"] == 0 and lavalink["refs"]
    assert lavalink["cache_import"]["ok"] is False and "unreachable" in lavalink["cache_import"]["detail"]


def cache_cli(gha: GhaStandIn, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **gha.runner_env(MAIN)}
    return subprocess.run([sys.executable, "-m", "ci.cli", "cache", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_cache_usage_per_scope_and_prune_keeps_what_the_next_build_needs(gha: GhaStandIn, registry: RunningRegistry,
                                                                          repo: pathlib.Path, seeded: dict[str, Any]) -> None:
    """Through GitHub's REST cache API (the stand-in serves it too): usage per scope, then a
    dry run, then the prune; a fresh runner afterwards still hits every step."""
    with fresh_runner() as runner:  # the newest index per scope is this checkout's
        assert build(repo, runner, registry, gha.runner_env(MAIN))[0].returncode == 0
    usage = cache_cli(gha, "usage", "--json", "--min-age", "0s", "--quota", "300MB")
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    scopes = {s["scope"]: s for s in report["scopes"]}
    assert {"dimbybot2-bot", "dimbybot2-lavalink"} <= set(scopes)
    assert all(scopes[s]["bytes"] > 0 and scopes[s]["blobs"] > 0 for s in ("dimbybot2-bot", "dimbybot2-lavalink"))
    assert report["total_bytes"] == sum(e.size for e in gha.service.finalized())
    assert any("superseded index of scope dimbybot2-bot" in p["why"] for p in report["prunable"])
    assert any("--cache-mode=min" in line for line in report["recommendations"])  # 300 MB is too small a share
    before = {e.id for e in gha.service.finalized()}
    dry = cache_cli(gha, "prune", "--dry-run", "--json", "--min-age", "0s")
    assert dry.returncode == 0, dry.stderr
    assert {e.id for e in gha.service.finalized()} == before
    assert sorted(json.loads(dry.stdout)["would_delete"]) == sorted(p["key"] for p in report["prunable"])
    pruned = cache_cli(gha, "prune", "--min-age", "0s")
    assert pruned.returncode == 0, pruned.stderr
    left = {e.key for e in gha.service.finalized()}
    assert not left & {p["key"] for p in report["prunable"] if p["ref"] == MAIN}
    with fresh_runner() as runner:
        result, after = build(repo, runner, registry, gha.runner_env(MAIN))
    assert result.returncode == 0, result.stderr
    for name in ("bot", "lavalink"):
        assert after[name]["cached_steps"] == after[name]["total_steps"], misses(after[name])


def test_a_quota_smaller_than_the_cache_evicts_least_recently_used_and_builds_still_succeed(
        registry: RunningRegistry, repo: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A repository whose cache quota (GitHub: 10 GB) is smaller than one mode=max export: the
    stand-in evicts least recently used entries after each upload, as GitHub does past its quota."""
    generator = start(tmp_path / "small", quota_bytes=100 * 1000**2)
    small = next(generator)
    try:
        with fresh_runner() as runner:
            first, _ = build(repo, runner, registry, small.runner_env(MAIN), "--image", "bot")
        assert first.returncode == 0, first.stderr
        assert small.service.evicted and small.service.used_bytes() <= 100 * 1000**2
        assert small.service.finalized(index_key("dimbybot2-bot")), "the index, written last, is the most recently used"
        with fresh_runner() as runner:
            second, report = build(repo, runner, registry, small.runner_env(MAIN), "--image", "bot")
        assert second.returncode == 0, second.stderr
        bot = report["bot"]
        assert bot["refs"] and bot["cached_steps"] < bot["total_steps"]
        assert any("ran again" in w for w in bot["warnings"]), bot["warnings"]
    finally:
        generator.close()


def test_evicted_entries_make_buildkit_run_their_steps_again_and_the_result_says_so(
        gha: GhaStandIn, registry: RunningRegistry, repo: pathlib.Path, unchanged: Any) -> None:
    """GitHub evicted the layers (LRU past the quota, or 7 days unused) but not the index."""
    assert gha.service.evict("buildkit-blob-")
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--image", "bot")
    assert result.returncode == 0, result.stderr
    bot = report["bot"]
    assert bot["refs"] and bot["cached_steps"] < bot["total_steps"]
    assert any("ran again" in w and "missing (evicted or deleted)" in w for w in bot["warnings"]), bot["warnings"]


def test_blob_lost_while_its_entry_is_listed_takes_the_cold_retry_path(
        gha: GhaStandIn, registry: RunningRegistry, repo: pathlib.Path, unchanged: Any) -> None:
    """The entries stay listed but their blobs are gone from storage: BuildKit fails fetching
    them, and the driver rebuilds without external cache."""
    with fresh_runner() as runner:  # make sure every layer is in the cache again first
        assert build(repo, runner, registry, gha.runner_env(MAIN), "--image", "bot")[0].returncode == 0
    assert gha.service.delete_blob_only("buildkit-blob-")
    with fresh_runner() as runner:
        result, report = build(repo, runner, registry, gha.runner_env(MAIN), "--image", "bot")
    assert result.returncode == 0, result.stderr
    bot = report["bot"]
    assert bot["error"] is None and bot["refs"] and bot["digest"]
    assert any("rebuilt without external cache" in w and "missing (evicted or deleted)" in w for w in bot["warnings"]), bot["warnings"]
    assert "?sig" not in json.dumps(bot) and "sig=" not in json.dumps(bot)  # no signed URL in the report
    # The failed attempt's log is kept beside the cold build's, without the signed URL BuildKit named.
    kept_log = (repo / ".work" / "bot.cache-failed.progress.json").read_text()
    assert "BlobNotFound" in kept_log and "sig=" not in kept_log

