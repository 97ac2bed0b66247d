"""Issue 20: real network faults between the product and a real token-auth registry.

Shopify's toxiproxy (built from its Go module: tests/toxiproxy.py) is a TCP proxy in front of
distribution 2.8 with `auth: token` (tests/token_registry.py; its token service is a stand-in
for GitHub's, reached directly, as ghcr.io's realm is another host). The faults are toxiproxy's:
connections reset (TCP RST), answers that never come (the client's timeout), latency, a
bandwidth limit.

Where a fault hits is chosen per request: for the registry client (ci/registry.py, the check and
the tag moves as the local driver runs them) the test arms a toxic just before a request of a
given method and path opens its connection and disarms it when that request is over, for its
first N matches (`Armed`). The toxic, the connection and the reset are real; only the moment is
the test's. For BuildKit's push (real buildx through the local driver, a private dockerd) the
toxic is armed when the registry logs BuildKit's first request, so it hits the push itself.

Every case then checks, on the registry directly, that nothing is half-moved: the SHA tags are
where they were pushed and `latest` names one of them.
With DIMBYBOT_FAULT_TABLE=FILE each case appends its outcome (a JSON line) to FILE.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import ci.registry
from ci.errors import PipelineError
from ci.registry import Registry
from tests import toxiproxy
from tests.test_registry_faults import Released, assert_nothing_half_moved, record, released
from tests.test_registry_token import ANONYMOUS, CI_PASSWORD, CI_USER, OWNER, SHA1, SHA2, USERS, build_and_push
from tests.token_registry import TokenRegistry, start_token_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    yield from start_token_registry(tmp_path_factory.mktemp("network-registry"), USERS, ANONYMOUS)


@pytest.fixture(scope="module")
def toxics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[toxiproxy.Toxiproxy]:
    yield from toxiproxy.running(tmp_path_factory.mktemp("toxiproxy"))


@pytest.fixture
def proxy(registry: TokenRegistry, toxics: toxiproxy.Toxiproxy) -> Iterator[toxiproxy.Proxy]:
    fronted = toxics.proxy(registry.host)
    yield fronted
    toxics.delete(fronted)


@dataclasses.dataclass
class Arm:
    method: str
    path: str  # a regular expression the request path must match
    kind: str
    stream: str
    attributes: dict[str, int]
    count: int
    served: int = 0


class Armed:
    """ci.registry's opener, arming a toxic on `proxy` for the requests an Arm matches."""

    def __init__(self, opener: Any, proxy: toxiproxy.Proxy, arms: list[Arm]) -> None:
        self.opener, self.proxy, self.arms = opener, proxy, arms

    def open(self, request: urllib.request.Request, timeout: float | None = None) -> Any:
        url = urllib.parse.urlsplit(request.full_url)
        arm = next((a for a in self.arms if url.netloc == self.proxy.host and a.method == request.get_method()
                    and re.search(a.path, url.path) and a.served < a.count), None)
        if arm is None:
            return self.opener.open(request, timeout=timeout)
        arm.served += 1
        toxic = self.proxy.add(arm.kind, arm.stream, **arm.attributes)
        try:
            return self.opener.open(request, timeout=timeout)
        finally:  # the answer's head has come (or the request failed): this request is over
            self.proxy.remove(toxic)


@pytest.fixture
def arm(monkeypatch: pytest.MonkeyPatch, proxy: toxiproxy.Proxy) -> Any:
    def arming(*arms: Arm) -> Armed:
        armed = Armed(ci.registry._OPENER, proxy, list(arms))
        monkeypatch.setattr(ci.registry, "_OPENER", armed)
        return armed
    return arming


WHERE = {
    "check_auth": ("GET", r"^/v2/$"),
    "SHA read-back": ("GET", rf"^/v2/owner/[^/]+/manifests/{SHA2}$"),
    "tag move": ("PUT", r"^/v2/owner/[^/]+/manifests/(edge|latest)$"),
}
# (toxic, stream, attributes, what the client's line says)
KINDS = {
    "reset": ("reset_peer", "downstream", {"timeout": 0}, "reset"),  # the request arrived; its answer never did
    # the request is swallowed and the socket stays open: no answer, until the client's timeout
    # (downstream, the registry's close after its answer would end the connection at once)
    "timeout": ("timeout", "upstream", {"timeout": 0}, "timed out"),
}


def client(host: str, **options: Any) -> Registry:
    return Registry(host, CI_USER, CI_PASSWORD, timeout=1.0, backoff=0.05, max_wait=1.0, **options)


def tags_now(registry: TokenRegistry, state: Released) -> dict[str, str]:
    """Every tag and the digest it names, read on the registry itself (not through the proxy)."""
    check = Registry(registry.host, CI_USER, CI_PASSWORD)
    return {t: check.digest(state.repository, t) for t in check.tags(state.repository)}


def driver_steps(registry: Registry, state: Released) -> str:
    """The local driver's registry sequence: the check, then the read-back and the tag moves."""
    registry.check_auth([state.repository])
    return registry.promote(state.repository, SHA2, state.new, ["edge", "latest"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", WHERE)
def test_a_few_dropped_connections_are_retried_and_the_tags_move(registry: TokenRegistry, proxy: toxiproxy.Proxy, arm: Any,
                                                                  where: str, kind: str) -> None:
    state = released(registry)
    toxic, stream, attributes, _ = KINDS[kind]
    armed = arm(Arm(*WHERE[where], toxic, stream, attributes, count=2))
    ci_client = client(proxy.host)
    assert driver_steps(ci_client, state) == state.new
    assert armed.arms[0].served == 2 and ci_client.retries == 2
    assert_nothing_half_moved(registry, state, moved=True)
    record({"source": "network", "where": where, "kind": kind, "injected": 2, "retries": ci_client.retries,
            "outcome": "retried and succeeded"})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", WHERE)
def test_connections_that_keep_dropping_fail_in_one_line_naming_registry_and_fault(registry: TokenRegistry,
                                                                                 proxy: toxiproxy.Proxy, arm: Any,
                                                                                 where: str, kind: str) -> None:
    state = released(registry)
    toxic, stream, attributes, said = KINDS[kind]
    method, path = WHERE[where]
    armed = arm(Arm(method, path, toxic, stream, attributes, count=1000))
    ci_client = client(proxy.host, attempts=3)
    with pytest.raises(PipelineError) as failed:
        driver_steps(ci_client, state)
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"registry {proxy.host}: {method} /"), message
    assert "failed after 3 attempts: " in message and said in message.lower(), message
    assert armed.arms[0].served == 3  # bounded: three tries, then the line
    if (where, kind) == ("tag move", "reset"):
        # The PUT reached the registry, its answers were lost: `edge` moved, the run stopped
        # there, and `latest` (moved last) still names the old SHA tag's image.
        assert tags_now(registry, state) == {SHA1: state.old, SHA2: state.new, "edge": state.new, "latest": state.old}
    else:
        assert_nothing_half_moved(registry, state, moved=False)
    record({"source": "network", "where": where, "kind": kind, "injected": 3, "retries": ci_client.retries,
            "outcome": "failed cleanly", "message": message.replace(proxy.host, "HOST").replace(state.repository, "owner/app")})


def test_resets_on_the_latest_move_alone_leave_edge_moved_and_latest_where_a_sha_tag_is(
        registry: TokenRegistry, proxy: toxiproxy.Proxy, arm: Any) -> None:
    """The one state a tag set can be left in (no transaction across tags): `edge` moved, the
    `latest` PUT never answered. `latest` moves last, so it is behind, never ahead: it still
    names the old SHA tag's image, and the failure says which request it was."""
    state = released(registry)
    arm(Arm("PUT", r"/manifests/latest$", "reset_peer", "downstream", {"timeout": 0}, count=1000))
    ci_client = client(proxy.host, attempts=3)
    with pytest.raises(PipelineError) as failed:
        driver_steps(ci_client, state)
    assert str(failed.value).startswith(f"registry {proxy.host}: PUT /{state.repository}/manifests/latest failed after 3 attempts: ")
    tags = tags_now(registry, state)
    assert (tags[SHA1], tags[SHA2], tags["edge"]) == (state.old, state.new, state.new)
    # the answers were lost, not the requests: the registry may have taken the PUT; either way
    # latest names an image a SHA tag names
    assert tags["latest"] in (state.old, state.new)
    record({"source": "network", "where": "tag move (latest only)", "kind": "reset", "injected": 3, "retries": ci_client.retries,
            "outcome": "failed cleanly", "latest": "old" if tags["latest"] == state.old else "new"})


@pytest.mark.parametrize("kind", ["latency", "bandwidth"])
def test_a_slow_network_slows_the_steps_and_changes_nothing_else(registry: TokenRegistry, proxy: toxiproxy.Proxy, kind: str) -> None:
    """Every connection, both ways: 150 ms each way (plus up to 50), or 2 KB/s back (a manifest
    is about 1 KB: each answer takes a good part of a second). No retry is needed or made."""
    state = released(registry)
    if kind == "latency":
        proxy.add("latency", "downstream", latency=150, jitter=50)
        proxy.add("latency", "upstream", latency=150, jitter=50)
    else:
        proxy.add("bandwidth", "downstream", rate=2)
    ci_client = Registry(proxy.host, CI_USER, CI_PASSWORD, backoff=0.05, max_wait=1.0)
    assert driver_steps(ci_client, state) == state.new
    assert ci_client.retries == 0
    proxy.clear()
    assert_nothing_half_moved(registry, state, moved=True)
    record({"source": "network", "where": "every request", "kind": kind, "injected": "all", "retries": 0,
            "outcome": "succeeded, no retry"})


# BuildKit's push, through the local driver


class ArmOnBuildKit:
    """Adds the toxics when the registry's log shows BuildKit's first request (not Python's)."""

    def __init__(self, registry: TokenRegistry, proxy: toxiproxy.Proxy, toxics: list[tuple[str, str, dict[str, int]]]) -> None:
        self.registry, self.proxy, self.toxics = registry, proxy, toxics
        self.offset = registry.log.stat().st_size
        self.armed = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop.is_set():
            with self.registry.log.open("rb") as log:
                log.seek(self.offset)
                seen = log.read().decode("utf-8", "replace")
            if re.search(r'http\.request\.useragent="?(?!Python-urllib)\w', seen):  # quoted only with spaces
                for kind, stream, attributes in self.toxics:
                    self.proxy.add(kind, stream, **attributes)
                self.armed.set()
                return
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def change_lavalink(root: pathlib.Path) -> None:
    path = root / "Lavalink" / "application.yml"
    path.write_text(path.read_text() + f"# {uuid.uuid4()}\n")


def release_sha1(registry: TokenRegistry, root: pathlib.Path, docker_host: str) -> str:
    """A first run through the registry itself, no fault: SHA1 pushed, latest at it."""
    first = build_and_push(root, registry, docker_host, CI_USER, CI_PASSWORD, "--sha", SHA1)
    if first.returncode != 0:
        raise RuntimeError(first.stderr[-3000:])
    return str(json.loads(first.stdout)["images"][0]["digest"])


def build_and_push_via(proxy: toxiproxy.Proxy, registry: TokenRegistry, root: pathlib.Path, docker_host: str,
                       *args: str) -> Any:
    fronted = dataclasses.replace(registry, host=proxy.host)
    return build_and_push(root, fronted, docker_host, CI_USER, CI_PASSWORD, *args)


REPOSITORY = f"{OWNER}/dimbybot2-lavalink"
SHA3 = "3" * 40  # the commit whose push the resets break (SHA2 is the slow pushes')


@pytest.mark.docker
@pytest.mark.parametrize("kind", ["latency", "bandwidth"])
def test_buildkit_pushes_through_a_slow_network_and_the_tags_move(registry: TokenRegistry, proxy: toxiproxy.Proxy,
                                                                   repo_copy: pathlib.Path, fresh_docker: Any, kind: str) -> None:
    toxics = {"latency": [("latency", "downstream", {"latency": 100, "jitter": 20}), ("latency", "upstream", {"latency": 100})],
              "bandwidth": [("bandwidth", "upstream", {"rate": 4096}), ("bandwidth", "downstream", {"rate": 256})]}[kind]
    old = release_sha1(registry, repo_copy, fresh_docker.host)
    change_lavalink(repo_copy)
    watcher = ArmOnBuildKit(registry, proxy, toxics)
    try:
        result = build_and_push_via(proxy, registry, repo_copy, fresh_docker.host, "--sha", SHA2)
    finally:
        watcher.close()
    assert watcher.armed.is_set()  # the push itself went through the slow network
    assert result.returncode == 0, result.stderr[-3000:]
    (image,) = json.loads(result.stdout)["images"]
    check = Registry(registry.host, CI_USER, CI_PASSWORD)
    assert check.digest(REPOSITORY, SHA1) == old
    assert check.digest(REPOSITORY, SHA2) == check.digest(REPOSITORY, "latest") == image["digest"] != old
    record({"source": "network", "where": "BuildKit push", "kind": kind, "injected": "all", "retries": "-",
            "outcome": "succeeded"})


@pytest.mark.docker
def test_resets_during_buildkits_push_fail_the_run_in_one_line_and_move_no_tag(registry: TokenRegistry, proxy: toxiproxy.Proxy,
                                                                               repo_copy: pathlib.Path, fresh_docker: Any) -> None:
    """From BuildKit's first request on, every connection is reset as soon as it sends: BuildKit
    retries what it retries, the build fails, the error is one line, and no tag moves."""
    old = release_sha1(registry, repo_copy, fresh_docker.host)
    change_lavalink(repo_copy)
    watcher = ArmOnBuildKit(registry, proxy, [("reset_peer", "upstream", {"timeout": 0})])
    try:
        result = build_and_push_via(proxy, registry, repo_copy, fresh_docker.host, "--sha", SHA3)
    finally:
        watcher.close()
    assert watcher.armed.is_set(), result.stdout[-2000:] + result.stderr[-2000:]
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    (image,) = json.loads(result.stdout)["images"]
    error = image["error"]
    assert error.startswith("build of lavalink failed: ") and "\n" not in error, error
    assert proxy.host in error and ("reset" in error or "connection" in error), error  # the registry, and what happened
    assert CI_PASSWORD not in result.stdout + result.stderr
    check = Registry(registry.host, CI_USER, CI_PASSWORD)
    assert check.digest(REPOSITORY, SHA1) == check.digest(REPOSITORY, "latest") == old
    assert SHA3 not in check.tags(REPOSITORY)
    record({"source": "network", "where": "BuildKit push", "kind": "reset", "injected": "all", "retries": "BuildKit's",
            "outcome": "failed cleanly", "message": error.replace(proxy.host, "HOST")})
