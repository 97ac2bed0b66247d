"""With a real Dagger engine (GitHub runners, laptops): `dagger call` end to end.

Marked `dagger_call`: `dagger call` loads the module with the Python SDK's module runtime,
which is on no registry these machines reach, and the engine itself cannot be built here (the
Go module proxy refuses modules it needs), so .ci/run selects them only where the `dagger` CLI
is installed and reports them as deselected elsewhere. The Dagger path's builds run for real
on the pinned BuildKit in test_pinned_buildkit.py; test_dagger_module.py checks the rest
offline.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.dagger_call, pytest.mark.skipif(shutil.which("dagger") is None, reason="no dagger CLI here (extra test)")]


def dagger_call(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dagger", "call", "--progress=plain", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_images_lists_the_configured_images() -> None:
    result = dagger_call("images")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["bot", "lavalink"]


def test_build_and_push_to_the_embedded_registry_reports_both_images() -> None:
    result = dagger_call("build-and-push", "--sha=" + "d" * 40, "report")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and {i["name"] for i in report["images"]} == {"bot", "lavalink"}
    for image in report["images"]:
        assert image["digest"].startswith("sha256:") and len(image["refs"]) == 2


def test_a_second_identical_call_pushes_and_moves_tags_again_from_a_warm_cache() -> None:
    # Each call starts its own embedded registry: a push replayed from the engine's cache would
    # leave it empty, and the SHA-tag check before the tag move would fail.
    first = dagger_call("build-and-push", "--sha=" + "e" * 40, "--cache=engine", "report")
    second = dagger_call("build-and-push", "--sha=" + "e" * 40, "--cache=engine", "report")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    report = json.loads(second.stdout)
    assert report["ok"] is True
    for image in report["images"]:
        assert image["cached_steps"] == image["total_steps"] and len(image["refs"]) == 2


def test_an_external_buildkit_without_a_registry_is_refused() -> None:
    result = dagger_call("build-and-push", "--sha=" + "f" * 40, "--buildkit=tcp://localhost:1234", "report", timeout=600)
    assert result.returncode != 0 and "--buildkit: an external BuildKit cannot push" in result.stderr


def test_bad_input_fails_before_building() -> None:
    result = dagger_call("build-and-push", "--sha=abc", "report", timeout=600)
    assert result.returncode != 0 and "--sha: must be a full 40-character" in result.stderr
