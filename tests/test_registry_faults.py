"""Issue 20: transient HTTP faults between the registry client and a real token-auth registry.

A small reverse proxy of the tests' own (FaultProxy) sits in front of the real registry
(tests/token_registry.py: distribution 2.8 with `auth: token` and a stand-in for GitHub's token
service) and answers the first N requests of a given method and path with 429 (Retry-After),
500, 502 or 503; every other request goes through to the registry untouched. For each fault
kind x where it hits (the credential check, a manifest GET, a manifest PUT), a few faults are
retried and the tags move; faults that never stop fail with one line naming the registry and
the status. After each, nothing is half-moved: `latest` names the old image or the new SHA
tag's, never anything else, and never moves before the other tags.

All of these failed on the old client (no retries: the first 429/5xx was the end).
With DIMBYBOT_FAULT_TABLE=FILE each case appends its outcome (a JSON line) to FILE.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ci.errors import PipelineError
from ci.registry import Registry
from tests.test_registry_token import ANONYMOUS, CI_PASSWORD, CI_USER, SHA1, SHA2, USERS, fresh_repository, push_manifest
from tests.token_registry import TokenRegistry, start_token_registry


@dataclasses.dataclass
class Fault:
    method: str
    path: str  # a regular expression the request path must match
    status: int
    count: int  # how many matching requests get the fault
    retry_after: str | None = None
    served: int = 0


class FaultProxy:
    """HTTP reverse proxy to `upstream` (host:port) injecting `faults`; records every request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[float, str, str, int]] = []  # (time, method, path, status answered)
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A TLS hello is answered "HTTP/1.1 400" (not a bare HTTP/0.9 body): Docker's pull then
            # falls back to plain HTTP, as it does for a real registry on a loopback address.
            default_request_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                fault = proxy._fault(self.command, self.path)
                if fault is not None:
                    payload = json.dumps({"errors": [{"code": "UNAVAILABLE" if fault.status != 429 else "TOOMANYREQUESTS",
                                                      "message": f"injected {fault.status}"}]}).encode()
                    self.send_response(fault.status)
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, fault.status)
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                # A HEAD answer has no body but the length of the one a GET would get (clients read it).
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()
                proxy._record(self.command, self.path, response.status)

            do_GET = do_PUT = do_POST = do_HEAD = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path) and fault.served < fault.count:
                    fault.served += 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), method, path, status))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    yield from start_token_registry(tmp_path_factory.mktemp("fault-registry"), USERS, ANONYMOUS)


@pytest.fixture
def proxy(registry: TokenRegistry) -> Iterator[FaultProxy]:
    fronted = FaultProxy(registry.host)
    yield fronted
    fronted.stop()


def direct(registry: TokenRegistry) -> Registry:
    return Registry(registry.host, CI_USER, CI_PASSWORD, backoff=0.05, max_wait=1.0)


@dataclasses.dataclass
class Released:
    """A repository where SHA1 is out (edge and latest at it) and SHA2 was just pushed."""

    repository: str
    old: str
    new: str


def released(registry: TokenRegistry) -> Released:
    repository = fresh_repository()
    old = push_manifest(registry, repository, SHA1, f"old {repository}")
    direct(registry).promote(repository, SHA1, old, ["edge", "latest"])
    new = push_manifest(registry, repository, SHA2, f"new {repository}")
    return Released(repository, old, new)


def assert_nothing_half_moved(registry: TokenRegistry, state: Released, moved: bool) -> None:
    """The tags as the registry has them: all at the new image, or all as they were."""
    check = direct(registry)
    tags = {t: check.digest(state.repository, t) for t in check.tags(state.repository)}
    assert tags[SHA1] == state.old and tags[SHA2] == state.new
    assert tags["latest"] in (state.old, state.new)  # never an image no SHA tag names
    expected = state.new if moved else state.old
    assert (tags["edge"], tags["latest"]) == (expected, expected), tags


WHERE = {
    "check_auth": ("GET", r"^/v2/$"),
    "manifest GET": ("GET", r"^/v2/owner/[^/]+/manifests/"),
    "manifest PUT": ("PUT", r"^/v2/owner/[^/]+/manifests/"),
}
KINDS = {"429": (429, "1"), "500": (500, None), "502": (502, None), "503": (503, None)}


def record(row: dict[str, Any]) -> None:
    if path := os.environ.get("DIMBYBOT_FAULT_TABLE"):
        with open(path, "a") as table:
            table.write(json.dumps(row) + "\n")


def run_driver_steps(client: Registry, state: Released) -> str:
    """What a push run does with the registry after (check) and around (promote) the build."""
    client.check_auth([state.repository])
    return client.promote(state.repository, SHA2, state.new, ["edge", "latest"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", WHERE)
def test_a_few_faults_are_retried_and_the_tags_move(registry: TokenRegistry, proxy: FaultProxy, where: str, kind: str) -> None:
    state = released(registry)
    status, retry_after = KINDS[kind]
    method, path = WHERE[where]
    proxy.faults = [Fault(method, path, status, count=2, retry_after=retry_after)]
    client = Registry(proxy.host, CI_USER, CI_PASSWORD, backoff=0.05, max_wait=1.0)
    assert run_driver_steps(client, state) == state.new
    assert proxy.faults[0].served == 2 and client.retries == 2
    if retry_after:  # each retry waited what Retry-After asked
        faulted = [t for t, m, p, s in proxy.seen if s == status]
        after = [t for t, m, p, s in proxy.seen if s != status and t > faulted[-1]]
        assert faulted[1] - faulted[0] >= 0.95 and after[0] - faulted[1] >= 0.95
    assert_nothing_half_moved(registry, state, moved=True)
    record({"where": where, "kind": kind, "injected": 2, "retries": client.retries, "outcome": "retried and succeeded"})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", WHERE)
def test_faults_that_do_not_stop_fail_in_one_line_naming_registry_and_status(registry: TokenRegistry, proxy: FaultProxy,
                                                                            where: str, kind: str) -> None:
    state = released(registry)
    status, retry_after = KINDS[kind]
    method, path = WHERE[where]
    proxy.faults = [Fault(method, path, status, count=1000, retry_after=retry_after)]
    client = Registry(proxy.host, CI_USER, CI_PASSWORD, attempts=3, backoff=0.05, max_wait=1.0)
    started = time.monotonic()
    with pytest.raises(PipelineError) as failed:
        run_driver_steps(client, state)
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"registry {proxy.host}: {method} ")
    assert f"answered HTTP {status} after 3 attempts" in message
    assert proxy.faults[0].served == 3  # bounded: three tries, then the line
    assert time.monotonic() - started < 10
    assert_nothing_half_moved(registry, state, moved=False)
    record({"where": where, "kind": kind, "injected": proxy.faults[0].served, "retries": client.retries, "outcome": "failed cleanly",
            "message": message.replace(proxy.host, "HOST").replace(state.repository, "owner/app")})


def test_a_long_retry_after_is_capped(registry: TokenRegistry, proxy: FaultProxy) -> None:
    state = released(registry)
    proxy.faults = [Fault("GET", WHERE["manifest GET"][1], 429, count=1, retry_after="3600")]
    client = Registry(proxy.host, CI_USER, CI_PASSWORD, backoff=0.05, max_wait=0.5)
    started = time.monotonic()
    assert run_driver_steps(client, state) == state.new
    assert 0.45 <= time.monotonic() - started < 5
    assert_nothing_half_moved(registry, state, moved=True)


def test_a_failed_sha_read_back_moves_nothing_when_the_tag_move_step_runs_in_the_pipeline(registry: TokenRegistry,
                                                                                         proxy: FaultProxy) -> None:
    """The Dagger skin's tag step (python -m ci.registry_cli retag), default backoff: 0.5 + 1 + 2 s."""
    state = released(registry)
    proxy.faults = [Fault("GET", rf"/manifests/{SHA2}$", 503, count=1000)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update({"REGISTRY_USERNAME": CI_USER, "REGISTRY_PASSWORD": CI_PASSWORD})
    result = subprocess.run([sys.executable, "-m", "ci.registry_cli", "retag", proxy.host, state.repository, SHA2, state.new,
                             "edge", "latest"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"moving tags failed: registry {proxy.host}: GET /{state.repository}/manifests/{SHA2} answered "
                             f"HTTP 503 after 4 attempts: {{\"errors\": [{{\"code\": \"UNAVAILABLE\", \"message\": \"injected 503\"}}]}}\n")
    assert CI_PASSWORD not in result.stderr
    assert_nothing_half_moved(registry, state, moved=False)
