"""The pipeline's tag move against a real registry reached under a non-loopback name.

In the pipeline the embedded registry is `registry:5000`: a service alias, plain HTTP (the
push says `registry.insecure=true`). Here the same shape runs for real: Debian's registry
(distribution 2.8) in a container on its own Docker network under the alias `registry`, and
the exact tag-move step the module records for a `build-and-push` with no `--registry` run in
another container on that network. The Dagger engine itself is stood in for by
tests/engine_double.py (it cannot run here); the registry, the network name and the core's
registry client are real.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from dagger import dag

from ci import main, tags
from ci.registry import Registry
from tests.conftest import BASE_PREFIX, REPO
from tests.engine_double import Script, built, install

SHA = "fedcba9876543210fedcba9876543210fedcba98"
CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
"""


@pytest.fixture
def named_registry(docker: str, tmp_path: pathlib.Path) -> Iterator[tuple[str, str]]:
    """(docker network, host:port published on 127.0.0.1) of a registry known as `registry` on that network."""
    network = f"dimbybot2-test-{uuid.uuid4().hex[:10]}"
    name = f"{network}-registry"
    (tmp_path / "config.yml").write_text(CONFIG)
    subprocess.run([docker, "network", "create", network], check=True, capture_output=True)
    try:
        subprocess.run([docker, "run", "-d", "--name", name, "--network", network, "--network-alias", "registry",
                        "-p", "127.0.0.1::5000", "-v", "/usr/bin/docker-registry:/usr/local/bin/docker-registry:ro",
                        "-v", f"{tmp_path / 'config.yml'}:/etc/registry.yml:ro", f"{BASE_PREFIX}/debian:bookworm",
                        "docker-registry", "serve", "/etc/registry.yml"], check=True, capture_output=True)
        port = subprocess.run([docker, "port", name, "5000/tcp"], check=True, capture_output=True, text=True).stdout.split(":")[-1].strip()
        host = f"127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1)
                break
            except OSError:
                subprocess.run(["sleep", "0.1"], check=True)
        yield network, host
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
        subprocess.run([docker, "network", "rm", network], capture_output=True)


def push_tiny_image(host: str, repository: str, tag: str) -> str:
    """An OCI image (one small layer) uploaded with the registry API; returns its manifest digest."""
    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repository}/blobs/uploads/", method="POST"),
                                    timeout=10) as started:
            location = started.headers["Location"]
        location = location if location.startswith("http") else f"http://{host}{location}"
        upload = urllib.request.Request(f"{location}{'&' if '?' in location else '?'}digest={digest}", data=data, method="PUT",
                                        headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(upload, timeout=10).close()
        return {"mediaType": "", "digest": digest, "size": len(data)}

    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    layer = blob(b"not really a layer, the registry does not care")
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [layer]}).encode()
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}", data=manifest, method="PUT",
                                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_one_plain_http_decision_for_every_client_of_a_registry() -> None:
    assert tags.plain_http("registry:5000", insecure=True)  # the embedded registry: its push says registry.insecure=true
    assert not tags.plain_http("registry:5000") and not tags.plain_http("ghcr.io")
    assert tags.plain_http("127.0.0.1:5000") and tags.plain_http("localhost:5000")  # Docker's default
    assert Registry("registry:5000", insecure=True).base == "http://registry:5000/v2"
    assert Registry("registry:5000").base == "https://registry:5000/v2"


@pytest.mark.docker
async def test_the_embedded_registry_tag_move_speaks_the_pushes_plain_http_under_its_service_name(
        docker: str, named_registry: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    network, published = named_registry
    digest = push_tiny_image(published, "dimbybot2-bot", SHA)  # what the build pushed

    # What the module asks the engine to run for `dagger call build-and-push` (embedded registry).
    engine = install(monkeypatch)(Script(steps={"build": built(digest=digest)}))
    await main.Dimbybot2(source=dag.directory()).build_and_push(sha=SHA, images=["bot"])  # type: ignore[call-arg]
    (build,), (retag,) = engine.execs("build"), engine.execs("retag")
    assert "registry.insecure=true" in build.argv[build.argv.index("--output") + 1]

    env = [arg for name, value in retag.env().items() if name.startswith(("REGISTRY_", main.CALL_ID_ENV))
           for arg in ("-e", f"{name}={value}")]
    moved = subprocess.run([docker, "run", "--rm", "--network", network, "-v", f"{REPO / 'ci'}:/pipeline/ci:ro", "-w", "/pipeline",
                            *env, f"{BASE_PREFIX}/python:3.11", *retag.argv], capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == f"registry:5000/dimbybot2-bot:latest -> {digest}"
    assert Registry(published).digest("dimbybot2-bot", "latest") == digest
