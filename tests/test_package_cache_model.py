"""Package caches, the plain part: which cache mounts a build has, what keys them, the helper
Dockerfiles, "did the mount change?", and how `cache usage` counts them. No builder needed;
tests/test_package_cache.py runs the same code against real BuildKit."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import tarfile

import pytest

from ci import package_cache, report
from ci.cache_usage import CacheEntry, analyse
from ci.explain.snapshot import DirSnapshot
from ci.package_cache import RUN_ID_ARG, contents_digest, extract_dockerfile, find_mounts, restore_dockerfile
from ci.pipeline import ImageResult, PackageCacheStatus, PipelineResult
from tests.conftest import REPO


def bot_mounts(root: pathlib.Path = REPO) -> package_cache.Mounts:
    return find_mounts(DirSnapshot(root), "Dockerfile", ".", {}, None)


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "bot", tmp_path / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_bot_has_one_cache_mount_the_wheelhouse_of_its_install_step() -> None:
    mounts = bot_mounts()
    (mount,) = mounts.mounts
    assert (mount.mount_id, mount.target, mount.step, mount.base) == ("dimbybot2-wheels", "/wheels", "deps 4/4", "${PYTHON_IMAGE}")
    assert mount.key("dimbybot2-bot").startswith("pkgcache-dimbybot2-bot-dimbybot2-wheels-")
    assert mounts.global_args == ("ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm",) and not mounts.left_out


def test_lavalink_has_no_cache_mount() -> None:
    assert find_mounts(DirSnapshot(REPO), "Lavalink/Dockerfile", "Lavalink", {}, None).mounts == ()


def test_the_key_follows_the_install_steps_inputs_the_lock_not_the_code(repo: pathlib.Path) -> None:
    before = bot_mounts(repo).mounts[0].key("s")
    (repo / "bot" / "dimbybot" / "__main__.py").write_text("print('changed')\n")
    assert bot_mounts(repo).mounts[0].key("s") == before
    lock = repo / "bot" / "requirements.lock"
    lock.write_text(lock.read_text() + "# relocked\n")
    after = bot_mounts(repo).mounts[0]
    assert after.key("s") != before and after.restore_prefix("s") == before[:-24]


def test_another_base_image_gives_another_key(repo: pathlib.Path) -> None:
    default = bot_mounts(repo).mounts[0].key("s")
    other = find_mounts(DirSnapshot(repo), "Dockerfile", ".", {"PYTHON_IMAGE": "python:3.12-slim"}, None).mounts[0].key("s")
    assert other != default


@pytest.mark.parametrize(("mount", "why"), [
    ("type=cache,target=/c,from=tools", "from= is not saved"),
    ("type=cache,target=${CACHE_DIR}", "ARG values"),
])
def test_mounts_the_helper_builds_cannot_reproduce_are_left_out_and_say_why(tmp_path: pathlib.Path, mount: str, why: str) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM busybox AS tools\nFROM busybox\nARG CACHE_DIR=/c\nRUN --mount={mount} true\n")
    found = find_mounts(DirSnapshot(tmp_path), "Dockerfile", ".", {}, None)
    assert found.mounts == () and len(found.left_out) == 1 and why in found.left_out[0]


def test_a_stage_built_from_another_stage_is_left_out(tmp_path: pathlib.Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox AS base\nRUN true\nFROM base\nRUN --mount=type=cache,target=/c true\n")
    found = find_mounts(DirSnapshot(tmp_path), "Dockerfile", ".", {}, None)
    assert found.mounts == () and "FROM another stage" in found.left_out[0]


def test_an_unreadable_dockerfile_means_no_mounts_and_a_reason(tmp_path: pathlib.Path) -> None:
    (tmp_path / "Dockerfile").write_text("RUN --mount=type=cache,target=/c true\n")  # no FROM
    found = find_mounts(DirSnapshot(tmp_path), "Dockerfile", ".", {}, None)
    assert found.mounts == () and found.left_out[0].startswith("the Dockerfile cannot be read")


def test_the_helper_builds_mount_the_very_same_cache_and_always_run() -> None:
    mounts = bot_mounts()
    (mount,) = mounts.mounts
    for text in (restore_dockerfile(mounts, mount), extract_dockerfile(mounts, mount)):
        lines = text.splitlines()
        assert lines[0] == "ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm"
        assert lines[1].startswith("FROM ${PYTHON_IMAGE}") and lines[2] == f"ARG {RUN_ID_ARG}"
        assert f"--mount={mount.spec} " in lines[3]
    assert "tar -xf /dimbybot2-pkgcache-restore/cache.tar -C /wheels" in restore_dockerfile(mounts, mount)
    assert extract_dockerfile(mounts, mount).splitlines()[-2:] == ["FROM scratch", "COPY --from=pack /dimbybot2-pkgcache-pack/cache.tar /cache.tar"]


def archive(files: dict[str, tuple[bytes, int, float]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode, mtime) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_contents_digest_sees_files_not_times_or_order() -> None:
    base = contents_digest(archive({"./a.whl": (b"A", 0o644, 1), "./b.whl": (b"B", 0o644, 2)}))
    assert contents_digest(archive({"./b.whl": (b"B", 0o644, 99), "./a.whl": (b"A", 0o644, 98)})) == base
    assert contents_digest(archive({"./a.whl": (b"A", 0o644, 1), "./b.whl": (b"C", 0o644, 2)})) != base
    assert contents_digest(archive({"./a.whl": (b"A", 0o755, 1), "./b.whl": (b"B", 0o644, 2)})) != base
    assert contents_digest(archive({"./a.whl": (b"A", 0o644, 1)})) != base


def entry(id_: int, key: str, size: int, created: str, ref: str = "refs/heads/main") -> CacheEntry:
    return CacheEntry(id=id_, key=key, ref=ref, size=size, created_at=created, last_accessed_at=created)


def test_cache_usage_counts_package_caches_per_mount_and_prunes_only_the_superseded() -> None:
    old = entry(1, "pkgcache-dimbybot2-bot-dimbybot2-wheels-" + "a" * 24, 6_000_000, "2026-11-01T00:00:00Z")
    new = entry(2, "pkgcache-dimbybot2-bot-dimbybot2-wheels-" + "b" * 24, 6_100_000, "2026-11-02T00:00:00Z")
    pr = entry(3, "pkgcache-dimbybot2-bot-dimbybot2-wheels-" + "c" * 24, 6_200_000, "2026-11-01T00:00:00Z", ref="refs/pull/7/merge")
    usage = analyse([old, new, pr], {})
    (mount,) = usage.package_caches
    assert (mount.name, mount.entries, mount.bytes) == ("dimbybot2-bot-dimbybot2-wheels", 3, 18_300_000)
    assert sorted(mount.current) == sorted([new.key, pr.key]) and mount.current_bytes == 12_300_000
    assert [(e.id, why) for e, why in usage.prunable] == [
        (1, "superseded package cache of dimbybot2-bot-dimbybot2-wheels: a newer one is restored instead")]
    assert usage.other_entries == 0
    assert json.loads(json.dumps(usage.to_dict()))["package_caches"][0]["current_bytes"] == 12_300_000


def test_the_report_carries_each_package_cache_in_json_and_in_the_step_summary() -> None:
    status = PackageCacheStatus(mount="dimbybot2-wheels", ok=True, restored_from="pkgcache-x-" + "a" * 24, restored_bytes=6_000_000,
                                saved_as="pkgcache-x-" + "b" * 24, saved_bytes=6_100_000, seconds=2.34567,
                                detail="restored 6.0 MB from `pkgcache-x-aaa`; saved 6.1 MB as `pkgcache-x-bbb` in 1.2 s")
    result = PipelineResult(images=[ImageResult("bot", package_caches=[status])], cache_backend="gha")
    (image,) = json.loads(report.to_json(result))["images"]
    assert image["package_caches"] == [{"mount": "dimbybot2-wheels", "ok": True, "restored_from": status.restored_from,
                                        "exact": False, "restored_bytes": 6_000_000, "saved_as": status.saved_as,
                                        "saved_bytes": 6_100_000, "seconds": 2.346, "detail": status.detail}]
    assert f"**bot** package cache `dimbybot2-wheels`: {status.detail}" in report.to_markdown(result)
