"""Issue 20: every registry conversation against a registry that behaves like ghcr.io.

Debian's docker-registry (distribution 2.8) with `auth: token` verifies real JWTs from
tests/token_registry.py's token service, a stand-in for GitHub's (ghcr.io's) token service:
per-repository, per-action grants, anonymous pull where allowed, tokens that expire. No test
double for the registry. The push runs real BuildKit through the local driver
(`dimbybot-ci build-and-push`) into a private dockerd (tests/fresh_docker.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci.errors import PipelineError
from ci.registry import Registry, RegistryAuthError
from tests.token_registry import TokenRegistry, User, start_token_registry

CI_USER, CI_PASSWORD = "ci-user", "tok-pass-91c2"
READER, READER_PASSWORD = "reader", "read-pass-4d1e"
OWNER = "owner"
USERS = {
    CI_USER: User(CI_PASSWORD, {f"{OWNER}/*": frozenset({"pull", "push"}), "public/*": frozenset({"pull", "push"})}),
    READER: User(READER_PASSWORD, {f"{OWNER}/*": frozenset({"pull"})}),
}
ANONYMOUS = {"public/*": frozenset({"pull"})}
SHA1, SHA2 = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    yield from start_token_registry(tmp_path_factory.mktemp("token-registry"), USERS, ANONYMOUS)


@pytest.fixture(autouse=True)
def honest_lifetimes(registry: TokenRegistry) -> Iterator[None]:
    yield
    registry.tokens.expires_in, registry.tokens.reported_expires_in = 300, None


def client(registry: TokenRegistry, user: str | None = CI_USER, password: str | None = CI_PASSWORD) -> Registry:
    return Registry(registry.host, user, password, backoff=0.05, max_wait=1.0)


def push_manifest(registry: TokenRegistry, repository: str, tag: str, note: str) -> str:
    """A small image pushed over the Registry API (blobs, then the manifest); its digest."""
    pusher = client(registry)
    layer = note.encode()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(layer).hexdigest()]}, "config": {}}).encode()
    for blob in (layer, config):
        _, headers, _ = pusher._call("POST", f"/{repository}/blobs/uploads/")
        location = urllib.parse.urlsplit({k.lower(): v for k, v in headers.items()}["location"])
        path = location.path[len("/v2"):] + "?" + location.query + "&digest=sha256:" + hashlib.sha256(blob).hexdigest()
        pusher._call("PUT", path, body=blob, headers={"Content-Type": "application/octet-stream"})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                                      "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer),
                                       "digest": "sha256:" + hashlib.sha256(layer).hexdigest()}]}).encode()
    pusher._call("PUT", f"/{repository}/manifests/{tag}", body=manifest,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def registry_cli(*args: str, user: str | None, password: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update({"REGISTRY_USERNAME": user or "", "REGISTRY_PASSWORD": password or ""})
    return subprocess.run([sys.executable, "-m", "ci.registry_cli", *args], capture_output=True, text=True, env=env, timeout=120)


def fresh_repository(prefix: str = OWNER) -> str:
    return f"{prefix}/app{uuid.uuid4().hex[:8]}"


def test_right_credentials_pass_the_check_with_push_access(registry: TokenRegistry) -> None:
    repository = fresh_repository()
    client(registry).check_auth([repository])
    issued = [i for i in registry.tokens.issued if i.scopes and i.scopes[0].startswith(f"repository:{repository}:")]
    assert issued and issued[-1].granted == [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
    ok = registry_cli("check", registry.host, repository, user=CI_USER, password=CI_PASSWORD)
    assert (ok.returncode, ok.stderr) == (0, "")


def test_a_wrong_password_is_refused_in_one_line(registry: TokenRegistry) -> None:
    with pytest.raises(RegistryAuthError) as refused:
        client(registry, CI_USER, "wrong-password").check_auth()
    assert str(refused.value) == f"registry {registry.host} refused the credentials (token service HTTP 401)"
    bad = registry_cli("check", registry.host, user=CI_USER, password="wrong-password")
    assert (bad.returncode, bad.stderr) == (1, f"--password: registry {registry.host} refused the credentials (token service HTTP 401)\n")
    assert "wrong-password" not in bad.stdout + bad.stderr


def test_a_pull_only_user_is_refused_push_in_one_line_and_nothing_is_pushed(registry: TokenRegistry) -> None:
    """Fails on the old client: it checked only /v2/, which a token registry answers for any token."""
    repository = fresh_repository()
    digest = push_manifest(registry, repository, SHA1, "pull-only")
    reader = client(registry, READER, READER_PASSWORD)
    assert reader.digest(repository, SHA1) == digest  # it may pull
    reader.check_auth()  # and its credentials are good
    with pytest.raises(RegistryAuthError) as refused:
        reader.check_auth([repository])
    assert str(refused.value) == (f"registry {registry.host} refused user 'reader' (HTTP 401) "
                                  f"when asked for push access to {repository}")
    cli = registry_cli("check", registry.host, repository, user=READER, password=READER_PASSWORD)
    assert cli.returncode == 1 and cli.stderr.count("\n") == 1 and f"push access to {repository}" in cli.stderr
    with pytest.raises(RegistryAuthError):
        reader.promote(repository, SHA1, digest, ["latest"])
    assert client(registry).tags(repository) == [SHA1]  # no tag moved, nothing pushed


def test_anonymous_pull_where_the_registry_allows_it_and_nowhere_else(registry: TokenRegistry) -> None:
    public, private = fresh_repository("public"), fresh_repository()
    public_digest = push_manifest(registry, public, SHA1, "public")
    push_manifest(registry, private, SHA1, "private")
    anonymous = client(registry, None, None)
    assert anonymous.digest(public, SHA1) == public_digest
    assert anonymous.tags(public) == [SHA1]
    with pytest.raises(RegistryAuthError) as refused:
        anonymous.digest(private, SHA1)
    assert "\n" not in str(refused.value)
    with pytest.raises(RegistryAuthError) as no_push:
        anonymous.check_auth([public])
    assert "push access" in str(no_push.value)


def test_tag_moves_and_digest_read_back(registry: TokenRegistry) -> None:
    repository = fresh_repository()
    old = push_manifest(registry, repository, SHA1, "old")
    ci = client(registry)
    assert ci.promote(repository, SHA1, old, ["edge", "latest"]) == old
    new = push_manifest(registry, repository, SHA2, "new")
    assert ci.promote(repository, SHA2, new, ["edge", "latest"]) == new
    assert {t: ci.digest(repository, t) for t in ci.tags(repository)} == {SHA1: old, SHA2: new, "edge": new, "latest": new}
    with pytest.raises(PipelineError) as wrong:  # a read-back that disagrees with the build moves nothing
        ci.promote(repository, SHA1, new, ["latest"])
    assert "the build produced" in str(wrong.value)
    assert ci.digest(repository, "latest") == new


def test_a_token_that_expires_between_the_push_and_the_tag_moves_is_replaced(registry: TokenRegistry) -> None:
    repository = fresh_repository()
    registry.tokens.expires_in = 3
    digest = push_manifest(registry, repository, SHA1, "expiring")
    ci = client(registry)
    assert ci.digest(repository, SHA1) == digest
    fetched = ci.token_fetches
    time.sleep(3.5)  # the token is dead: the registry refuses it from here on
    assert ci.promote(repository, SHA1, digest, ["latest"]) == digest
    assert ci.token_fetches > fetched
    assert client(registry).digest(repository, "latest") == digest


def test_a_token_the_registry_stops_honouring_early_is_refreshed_on_401(registry: TokenRegistry) -> None:
    """The token service says 300 s, the token dies after 3 (revoked, or a clock that disagrees):
    the client cannot know, sends it, gets 401 invalid_token, fetches one token and goes on."""
    repository = fresh_repository()
    digest = push_manifest(registry, repository, SHA1, "revoked")
    registry.tokens.expires_in, registry.tokens.reported_expires_in = 3, 300
    ci = client(registry)
    assert ci.digest(repository, SHA1) == digest
    time.sleep(3.5)
    fetched = ci.token_fetches
    assert ci.digest(repository, SHA1) == digest
    assert ci.token_fetches == fetched + 1


def test_cached_tokens_are_reused_per_scope_until_they_expire(registry: TokenRegistry) -> None:
    """Fails on the old client: one token slot for every scope, so each change of scope (pull,
    push, another repository) cost a 401 and a token fetch, again and again."""
    repository = fresh_repository()
    digest = push_manifest(registry, repository, SHA1, "cache")
    ci = client(registry)
    ci.promote(repository, SHA1, digest, ["a", "b", "c", "latest"])
    # one for pull, one for push: the four moves and read-backs reuse them
    assert ci.token_fetches == 2


def build_and_push(root: pathlib.Path, registry: TokenRegistry, docker_host: str, user: str, password: str,
                   *args: str) -> subprocess.CompletedProcess[str]:
    from tests.conftest import LOCAL_BASES

    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_PASSWORD", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL")}
    env.update({"PATH": "/usr/bin:" + os.environ["PATH"], "DOCKER_HOST": docker_host, "REGISTRY_PASSWORD": password})
    base_args = [arg for key, value in LOCAL_BASES for arg in ("--build-arg", f"{key}={value}")]
    return subprocess.run([sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(root), *base_args,
                           "--registry", f"{registry.host}/{OWNER}", "--username", user, "--image", "lavalink",
                           "--format", "json", *args], capture_output=True, text=True, env=env, cwd=root, timeout=900)


@pytest.mark.docker
def test_buildkit_pushes_through_the_local_driver_and_the_tags_move_after_the_token_expired(
        registry: TokenRegistry, repo_copy: pathlib.Path, fresh_docker: Any) -> None:
    """Real BuildKit (buildx, a private dockerd) gets its own tokens from the token service and
    pushes; the check's tokens (1 s) are dead by the time the tags move, and the client fetches
    new ones. (1 s: a warm build of one changed file takes under 2 s here.)"""
    registry.tokens.expires_in = 1
    (repo_copy / "Lavalink" / "application.yml").write_text(
        (repo_copy / "Lavalink" / "application.yml").read_text() + f"# {uuid.uuid4()}\n")
    before = len(registry.tokens.issued)
    result = build_and_push(repo_copy, registry, fresh_docker.host, CI_USER, CI_PASSWORD, "--sha", SHA1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert CI_PASSWORD not in result.stdout + result.stderr
    (image,) = json.loads(result.stdout)["images"]
    repository = f"{OWNER}/dimbybot2-lavalink"
    check = client(registry)
    assert check.digest(repository, SHA1) == check.digest(repository, "latest") == image["digest"]
    issued = registry.tokens.issued[before:]
    assert any("Python-urllib" not in i.user_agent and i.status == 200 for i in issued)  # BuildKit's (buildx's) own
    assert image["duration"] > 1  # the build outlived the check's tokens
    python = [i for i in issued if "Python-urllib" in i.user_agent]
    # the check's (API root, push access), then the tag moves' fresh ones (pull, push)
    assert len(python) >= 4 and all(i.status == 200 for i in python)


@pytest.mark.docker
def test_a_wrong_password_through_build_and_push_is_one_line_and_pushes_nothing(
        registry: TokenRegistry, repo_copy: pathlib.Path, fresh_docker: Any) -> None:
    work = repo_copy / "work"
    result = build_and_push(repo_copy, registry, fresh_docker.host, CI_USER, "wrong-password", "--sha", SHA2, "--work-dir", str(work))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: registry {registry.host} refused the credentials (token service HTTP 401)"]
    assert not work.exists()  # no build started
    with pytest.raises(PipelineError):
        client(registry).digest(f"{OWNER}/dimbybot2-lavalink", SHA2)


@pytest.mark.docker
def test_a_pull_only_user_through_build_and_push_is_refused_before_any_build(
        registry: TokenRegistry, repo_copy: pathlib.Path, fresh_docker: Any) -> None:
    """The API root answers any good credentials: only the push-access check stops a reader."""
    work = repo_copy / "work-reader"
    result = build_and_push(repo_copy, registry, fresh_docker.host, READER, READER_PASSWORD, "--sha", SHA2, "--work-dir", str(work))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: registry {registry.host} refused user 'reader' (HTTP 401) when asked for push access to {OWNER}/dimbybot2-")
    assert not work.exists()  # no build started
    with pytest.raises(PipelineError):
        client(registry).digest(f"{OWNER}/dimbybot2-lavalink", SHA2)
