"""The cache must never change the image: cached and --no-cache builds give the same digest.

Real BuildKit, both project images (local base images), OCI exports with timestamps
rewritten to SOURCE_DATE_EPOCH; and a deliberately non-reproducible Dockerfile that must be
reported as different, naming the file.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import LOCAL_BASES, REPO

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

DIGESTS: dict[str, tuple[str, str]] = {}  # printed by conftest at the end of the session


def verify_determinism(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    base_args = [a for key, value in LOCAL_BASES for a in ("--build-arg", f"{key}={value}")]
    return subprocess.run([sys.executable, "-m", "ci.cli", "verify-determinism", "--repo", str(root), "--format", "json",
                           *base_args, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"]})


def test_both_project_images_are_identical_with_and_without_cache(repo_copy: pathlib.Path) -> None:
    result = verify_determinism(repo_copy, "--work-dir", str(repo_copy / "work"))
    assert result.returncode == 0, result.stdout + result.stderr
    images = {i["image"]: i for i in json.loads(result.stdout)["images"]}
    assert set(images) == {"bot", "lavalink"}
    for name, image in images.items():
        assert image["identical"] is True and image["differences"] == []
        cached, total = image["cached_build_hits"].split("/")
        assert cached == total, f"{name}: the 'cached' build was not fully cached"
        DIGESTS[name] = (image["digest_a"], image["digest_b"])


def test_a_non_reproducible_dockerfile_is_reported_with_the_differing_path(tmp_path: pathlib.Path) -> None:
    repo = tmp_path / "nonrepro"
    shutil.copytree(REPO / "tests" / "data" / "nonrepro", repo)
    (repo / "pyproject.toml").write_text('[tool.dimbybot2.images.clock]\ndockerfile = "Dockerfile"\n')
    result = verify_determinism(repo)
    assert result.returncode == 1, result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert image["identical"] is False and image["digest_a"] != image["digest_b"]
    paths = {(d["path"], d["kind"]) for d in image["differences"]}
    assert ("built-at", "content") in paths
    assert all(d["path"] != "stable.txt" for d in image["differences"])
