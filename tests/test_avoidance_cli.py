"""`python -m ci.avoidance_cli` (build avoidance as pipeline steps, for the Dagger path) against
a real registry with auth: decide -> build, record, decide -> skip, skip moves the tags, a
moved base means build, --no-skip builds, a broken registry means build and says so, bad
input is one line and exit 2 before any registry call."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci.registry import Registry
from tests.registry_fixture import RunningRegistry, free_port, start_registry

SHA1, SHA2 = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("avoid-cli-registry"))


def push_image(registry: RunningRegistry, repository: str, tag: str, note: str) -> str:
    """A small image (one layer) over the Registry API; its digest."""
    client = Registry(registry.host, registry.username, registry.password)
    layer = note.encode()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(layer).hexdigest()]}, "config": {}}).encode()
    descriptors = [{"mediaType": kind, "size": len(blob), "digest": client.put_blob(repository, blob)}
                   for kind, blob in (("application/vnd.oci.image.config.v1+json", config), ("application/vnd.oci.image.layer.v1.tar", layer))]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descriptors[0], "layers": descriptors[1:]}).encode()
    return client.put_manifest(repository, tag, manifest, "application/vnd.oci.image.manifest.v1+json")


def avoidance_cli(*args: str, registry: RunningRegistry | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    if registry is not None:
        env.update({"REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password})
    return subprocess.run([sys.executable, "-m", "ci.avoidance_cli", *args], capture_output=True, text=True, env=env, timeout=120)


def source(tmp_path: pathlib.Path, base: str) -> pathlib.Path:
    root = tmp_path / "src"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hello')\n")
    (root / "Dockerfile").write_text(f"FROM {base}\nCOPY app/ /app/\nCMD [\"python\", \"/app/main.py\"]\n")
    return root


def decide(host: str, repository: str, root: pathlib.Path, registry: RunningRegistry, *extra: str) -> dict[str, Any]:
    result = avoidance_cli("decide", host, repository, "--root", str(root), "--dockerfile", "Dockerfile", "--context", ".",
                           "--builder", "moby/buildkit:v0.26.2", "--source-date-epoch", "0", *extra, registry=registry)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_decide_record_skip_round_trip(registry: RunningRegistry, tmp_path: pathlib.Path) -> None:
    namespace = f"cli{uuid.uuid4().hex[:6]}"
    base = f"{registry.host}/{namespace}/base:1"
    push_image(registry, f"{namespace}/base", "1", "base v1")
    root = source(tmp_path, base)
    repository = f"{namespace}/app"
    first = decide(registry.host, repository, root, registry)
    assert first["skip"] is False and first["detail"] == f"built: no image with these inputs yet (key {first['key'][:12]})"

    built = push_image(registry, repository, SHA1, "the built image")  # what the build pushed
    recorded = avoidance_cli("record", registry.host, repository, first["key"], built, SHA1, "gha:dimbybot2-app", registry=registry)
    assert recorded.returncode == 0, recorded.stderr

    again = decide(registry.host, repository, root, registry)
    assert again == {"skip": True, "key": first["key"], "detail": f"skipped: same inputs as {built} (built for {SHA1})",
                     "image": built, "commit": SHA1, "cache": "gha:dimbybot2-app"}
    moved = avoidance_cli("skip", registry.host, repository, built, SHA2, "latest", registry=registry)
    assert moved.returncode == 0, moved.stderr
    client = Registry(registry.host, registry.username, registry.password)
    assert client.digest(repository, SHA2) == client.digest(repository, "latest") == built

    forced = decide(registry.host, repository, root, registry, "--no-skip")
    assert forced["skip"] is False and forced["detail"] == f"built: --no-skip (same inputs as {built})"

    push_image(registry, f"{namespace}/base", "1", "base v2: upstream moved the tag")
    after_move = decide(registry.host, repository, root, registry)
    assert after_move["skip"] is False and after_move["key"] != first["key"]
    assert after_move["detail"].startswith("built: no image with these inputs yet")


def test_an_unreachable_registry_means_build_and_says_why(registry: RunningRegistry, tmp_path: pathlib.Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    root = source(tmp_path, f"{host}/base@sha256:{'a' * 64}")  # pinned: the key needs no lookup, the record does
    answer = decide(host, "ns/app", root, registry)
    assert answer["skip"] is False and answer["key"]
    assert answer["detail"].startswith(f"built: the input-key lookup failed, built as without avoidance (registry {host} is unreachable")


@pytest.mark.parametrize(("args", "line"), [
    (["skip", "bad host", "repo", "sha256:" + "a" * 64, "t"], "error: HOST: "),
    (["record", "h:1", "repo", "nothex", "sha256:" + "a" * 64, SHA1], "error: KEY: must be 64 lower-case hex characters"),
    (["skip", "h:1", "repo", "sha256:" + "a" * 64, "bad tag"], "error: TAG: "),
    (["decide", "h:1", "repo", "--root", "."], "error: usage: the following arguments are required: --dockerfile, --context, --builder"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], line: str) -> None:
    result = avoidance_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1
