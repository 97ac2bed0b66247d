"""Issue 20: `verify` of registry references against a registry with token auth (ghcr.io's way).

Images are OCI layouts (tests/oci_layouts.py) pushed as they are (index, platform manifest,
attestation, config, layers) to distribution 2.8 with `auth: token`, whose tokens come from
tests/token_registry.py's stand-in for GitHub's token service. `dimbybot-ci verify` then reads
both references over the Registry API with Bearer tokens, pull scope per repository.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ci import verify
from ci.registry import Registry
from tests.oci_layouts import File, make_layout
from tests.test_registry_token import ANONYMOUS, CI_PASSWORD, CI_USER, READER, READER_PASSWORD, SHA1, USERS
from tests.token_registry import TokenRegistry, start_token_registry

APP: dict[str, File] = {"app/main.py": (b"print(1)\n", 0o644, 1000)}
BASE: dict[str, File] = {"etc/os-release": (b"ID=debian\n", 0o644, 1000)}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    yield from start_token_registry(tmp_path_factory.mktemp("verify-registry"), USERS, ANONYMOUS)


def push_layout(registry: TokenRegistry, layout: pathlib.Path, repository: str, tag: str) -> str:
    """Push every blob of an OCI layout, the manifests, then the index under `tag`; the index digest."""
    pusher = Registry(registry.host, CI_USER, CI_PASSWORD)
    (top,) = json.loads((layout / "index.json").read_text())["manifests"]
    index = (layout / "blobs" / "sha256" / top["digest"].split(":")[1]).read_bytes()
    for entry in json.loads(index)["manifests"]:
        body = (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
        manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]] if "config" in manifest else []:
            pusher.put_blob(repository, (layout / "blobs" / "sha256" / blob["digest"].split(":")[1]).read_bytes())
        if "config" not in manifest:  # the stand-in attestation: give it a config so the registry takes it
            continue
        pusher.put_manifest(repository, entry["digest"], body, entry["mediaType"])
    platform_only = {**json.loads(index), "manifests": [m for m in json.loads(index)["manifests"]
                                                        if "platform" in m]}
    body = json.dumps(platform_only).encode()
    return pusher.put_manifest(repository, tag, body, top["mediaType"])


def pushed(registry: TokenRegistry, tmp_path: pathlib.Path, layers: list[dict[str, File]], prefix: str = "owner") -> str:
    repository = f"{prefix}/verify{uuid.uuid4().hex[:8]}"
    push_layout(registry, make_layout(tmp_path / repository.replace("/", "-"), layers), repository, SHA1)
    return f"{registry.host}/{repository}:{SHA1}"


def cli_verify(a: str, b: str, user: str | None, password: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    args = [sys.executable, "-m", "ci.cli", "verify", a, b, "--format", "json"]
    if user:
        env["REGISTRY_PASSWORD"] = password or ""
        args += ["--username", user]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_two_registry_refs_with_the_same_files_compare_identical_over_bearer_tokens(registry: TokenRegistry,
                                                                                   tmp_path: pathlib.Path) -> None:
    a, b = pushed(registry, tmp_path, [BASE, APP]), pushed(registry, tmp_path, [BASE, APP])
    before = len(registry.tokens.issued)
    result = cli_verify(a, b, CI_USER, CI_PASSWORD)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["identical"] and answer["digest_a"] == answer["digest_b"]
    issued = registry.tokens.issued[before:]
    # one pull token per repository, granted by the token service, and nothing wider
    assert sorted(g["name"] for i in issued for g in i.granted) == sorted(r.split("/", 1)[1].split(":")[0] for r in (a, b))
    assert all(g["actions"] == ["pull"] for i in issued for g in i.granted)
    assert CI_PASSWORD not in result.stdout + result.stderr


def test_a_changed_file_is_named_and_a_pull_only_user_may_verify(registry: TokenRegistry, tmp_path: pathlib.Path) -> None:
    changed = {"app/main.py": (b"print(2)\n", 0o644, 1000)}
    a, b = pushed(registry, tmp_path, [BASE, APP]), pushed(registry, tmp_path, [BASE, changed])
    result = cli_verify(a, b, READER, READER_PASSWORD)
    assert result.returncode == 1, result.stderr
    answer = json.loads(result.stdout)
    assert not answer["identical"]
    assert [(d["layer"], d["path"], d["kind"]) for d in answer["differences"]] == [(1, "app/main.py", "content")]
    direct = verify.compare_specs(a, b, READER, READER_PASSWORD)
    assert [(d.layer, d.path, d.kind) for d in direct.differences] == [(1, "app/main.py", "content")]


def test_wrong_credentials_and_anonymous_access_to_a_private_repository_fail_in_one_line(registry: TokenRegistry,
                                                                                          tmp_path: pathlib.Path) -> None:
    a = pushed(registry, tmp_path, [BASE, APP])
    wrong = cli_verify(a, a, CI_USER, "wrong-password")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr == f"error: registry {registry.host} refused the credentials (token service HTTP 401)\n"
    assert "wrong-password" not in wrong.stderr
    anonymous = cli_verify(a, a, None, None)
    assert anonymous.returncode == 2 and anonymous.stderr.count("\n") == 1
    assert anonymous.stderr.startswith(f"error: registry {registry.host} refused the credentials (token service HTTP 401)")


def test_anonymous_verify_of_public_repositories(registry: TokenRegistry, tmp_path: pathlib.Path) -> None:
    a, b = pushed(registry, tmp_path, [BASE, APP], "public"), pushed(registry, tmp_path, [BASE, APP], "public")
    result = cli_verify(a, b, None, None)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["identical"]
