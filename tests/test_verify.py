"""Comparing images: hand-made OCI layouts with one known difference each."""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import tarfile

import pytest

from ci import verify
from ci.errors import InputError
from tests.oci_layouts import File, make_layout

APP: dict[str, File] = {"app/main.py": (b"print(1)\n", 0o644, 1000), "app/run.sh": (b"#!/bin/sh\n", 0o755, 1000)}
BASE: dict[str, File] = {"etc/os-release": (b"ID=debian\n", 0o644, 1000)}


def layout(tmp_path: pathlib.Path, name: str, layers: list[dict[str, File]], **kwargs: object) -> str:
    return str(make_layout(tmp_path / name, layers, **kwargs))  # type: ignore[arg-type]


def kinds(result: verify.Comparison) -> set[tuple[int | None, str | None, str]]:
    return {(d.layer, d.path, d.kind) for d in result.differences}


def test_identical_images_compare_identical_even_with_different_attestations(tmp_path: pathlib.Path) -> None:
    result = verify.compare_specs(layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [BASE, APP]))
    assert result.identical and result.digest_a == result.digest_b and not result.differences


def test_same_content_with_different_mtimes(tmp_path: pathlib.Path) -> None:
    later = {path: (content, mode, 2000) for path, (content, mode, _) in APP.items()}
    result = verify.compare_specs(layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [BASE, later]))
    assert kinds(result) == {(1, "app/main.py", "mtime"), (1, "app/run.sh", "mtime")}
    # what rewrite-timestamp does: clamp every mtime to SOURCE_DATE_EPOCH -> identical again
    clamped_a = {p: (c, m, 0) for p, (c, m, _) in APP.items()}
    clamped_b = {p: (c, m, 0) for p, (c, m, _) in later.items()}
    assert verify.compare_specs(layout(tmp_path, "c", [BASE, clamped_a]), layout(tmp_path, "d", [BASE, clamped_b])).identical


def test_changed_mode(tmp_path: pathlib.Path) -> None:
    changed = {**APP, "app/run.sh": (b"#!/bin/sh\n", 0o644, 1000)}
    result = verify.compare_specs(layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [BASE, changed]))
    (difference,) = result.differences
    assert (difference.layer, difference.path, difference.kind, difference.detail) == (1, "app/run.sh", "mode", "0o755 -> 0o644")


def test_added_file(tmp_path: pathlib.Path) -> None:
    more = {**APP, "app/extra.txt": (b"x", 0o644, 1000)}
    result = verify.compare_specs(layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [BASE, more]))
    assert kinds(result) == {(1, "app/extra.txt", "added")}


def test_changed_config_env(tmp_path: pathlib.Path) -> None:
    result = verify.compare_specs(layout(tmp_path, "a", [BASE], env=["MODE=prod"]), layout(tmp_path, "b", [BASE], env=["MODE=dev"]))
    (difference,) = result.differences
    assert difference.kind == "config" and difference.detail == "config.Env: ['MODE=prod'] -> ['MODE=dev']"


def test_changed_layer_order(tmp_path: pathlib.Path) -> None:
    result = verify.compare_specs(layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [APP, BASE]))
    assert not result.identical
    assert {(0, "etc/os-release", "removed"), (0, "app/main.py", "added"), (1, "etc/os-release", "added")} <= kinds(result)


def test_tarball_input(tmp_path: pathlib.Path) -> None:
    directory = pathlib.Path(layout(tmp_path, "a", [BASE, APP]))
    tarball = tmp_path / "a.tar"
    with tarfile.open(tarball, "w") as archive:
        for path in directory.rglob("*"):
            archive.add(path, arcname=str(path.relative_to(directory)))
    assert verify.compare_specs(str(tarball), str(directory)).identical


def _tarball_with(tmp_path: pathlib.Path, member: tarfile.TarInfo, data: bytes = b"") -> pathlib.Path:
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.addfile(member, io.BytesIO(data))
    return tarball


@pytest.mark.parametrize("name, kind", [("../escaped", tarfile.REGTYPE), ("/etc/absolute", tarfile.REGTYPE),
                                        ("blobs/link", tarfile.SYMTYPE)])
def test_a_tarball_that_would_write_outside_the_layout_or_make_links_is_refused(tmp_path: pathlib.Path, name: str,
                                                                               kind: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    tarball = _tarball_with(tmp_path, member)
    dest = tmp_path / "inner" / "layout"
    with pytest.raises(tarfile.TarError):
        verify.extract_files(tarball, dest)
    assert not (tmp_path / "inner" / "escaped").exists() and not (dest / "blobs" / "link").exists()
    with pytest.raises(InputError, match="not a readable OCI layout tarball"):  # what a user sees
        verify.compare_specs(str(tarball), str(dest))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci.cli", "verify", *args], capture_output=True, text=True)


def test_cli_exit_status_like_diffoci(tmp_path: pathlib.Path) -> None:
    a, b = layout(tmp_path, "a", [BASE, APP]), layout(tmp_path, "b", [BASE, APP])
    c = layout(tmp_path, "c", [BASE, {**APP, "app/main.py": (b"print(2)\n", 0o644, 1000)}])
    assert cli(a, b).returncode == 0
    different = cli(a, c, "--format", "json")
    assert different.returncode == 1
    data = json.loads(different.stdout)
    assert data["identical"] is False and data["differences"][0]["kind"] == "content"
    assert data["differences"][0]["path"] == "app/main.py" and data["differences"][0]["layer"] == 1
    missing = cli(a, str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: IMAGE:")
