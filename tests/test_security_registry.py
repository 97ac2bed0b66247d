"""Issue 22, item 6: the registry client sends credentials only where they belong.

Real HTTP servers on 127.0.0.1 (each port is its own origin) record every request they get.
- A redirect that leaves the registry's origin (scheme, host, port) carries no Authorization
  (urllib copies `add_header` headers to the redirected request); within the origin it does.
- A Bearer challenge's realm gets the Basic credentials only over HTTPS, or over plain HTTP for
  a registry the plan already speaks plain HTTP to (tags.plain_http); never another scheme.
The HTTPS registry is a server with a certificate made for the test, trusted through
SSL_CERT_FILE, at `127.1` (the same address, which tags.plain_http does not count as loopback,
so the client speaks HTTPS to it as to any remote registry).
"""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ci.errors import PipelineError
from ci.registry import Registry, RegistryAuthError

BASIC = "Basic " + base64.b64encode(b"me:hunter2").decode()
DIGEST = "sha256:" + "ab" * 32
Answer = tuple[int, dict[str, str], bytes]


class Server:
    """An HTTP(S) server on 127.0.0.1 answering with `answer(method, path, headers)`; records requests."""

    def __init__(self, answer: Callable[[str, str, dict[str, str]], Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                if length := int(headers.get("content-length", "0") or 0):
                    self.rfile.read(length)
                server.seen.append((self.command, self.path, headers))
                code, extra, body = server.answer(self.command, self.path, headers)
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}"

    def authorizations(self) -> list[str]:
        return [h["authorization"] for _, _, h in self.seen if "authorization" in h]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(answer: Callable[[str, str, dict[str, str]], Answer], tls: ssl.SSLContext | None = None) -> Server:
        started.append(Server(answer, tls))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tls(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A certificate for `127.1`, trusted by this process's HTTPS clients (SSL_CERT_FILE)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.1",
                    "-addext", "subjectAltName=DNS:127.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def ok(_method: str, _path: str, _headers: dict[str, str]) -> Answer:
    return 200, {"Content-Type": "application/json"}, b"{}"


def redirect_to(url: str, needs: str | None = None) -> Callable[[str, str, dict[str, str]], Answer]:
    def answer(_method: str, path: str, headers: dict[str, str]) -> Answer:
        if needs and headers.get("authorization") != needs:
            return 401, {"WWW-Authenticate": 'Basic realm="registry"'}, b""
        return 307, {"Location": url + path}, b""
    return answer


def bearer_registry(realm: Callable[[], str], then: Callable[[str, str, dict[str, str]], Answer]) -> Callable[..., Answer]:
    """401 with a Bearer challenge until the request carries the token, then `then`."""
    def answer(method: str, path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/token"):
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": "T0KEN"}).encode()
        if headers.get("authorization") != "Bearer T0KEN":
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm()}",service="registry",scope="repository:me/x:pull"'}, b""
        return then(method, path, headers)
    return answer


def test_a_redirect_to_another_origin_gets_no_basic_credentials(servers: Callable[..., Server]) -> None:
    other = servers(ok)
    registry = servers(redirect_to(other.url(), needs=BASIC))
    Registry(f"127.0.0.1:{registry.port}", "me", "hunter2").check_auth()
    assert registry.authorizations() == [BASIC]  # the registry itself got them
    assert other.seen and other.authorizations() == []


def test_a_redirect_to_another_origin_gets_no_bearer_token(servers: Callable[..., Server]) -> None:
    other = servers(ok)
    registry = servers(bearer_registry(lambda: f"{registry.url()}/token", redirect_to(other.url())))
    Registry(f"127.0.0.1:{registry.port}", "me", "hunter2").get_manifest("me/x", "latest")
    assert "Bearer T0KEN" in registry.authorizations()
    assert other.seen and other.authorizations() == []


def test_the_token_service_redirecting_elsewhere_does_not_pass_the_password_on(servers: Callable[..., Server]) -> None:
    other = servers(lambda *_: (200, {}, json.dumps({"token": "T0KEN"}).encode()))

    def answer(method: str, path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/token"):
            return 307, {"Location": other.url() + path}, b""
        return bearer_registry(lambda: f"{registry.url()}/token", ok)(method, path, headers)

    registry = servers(answer)
    Registry(f"127.0.0.1:{registry.port}", "me", "hunter2").check_auth()
    assert BASIC in registry.authorizations()
    assert other.seen and other.authorizations() == []


def test_a_redirect_within_the_origin_keeps_the_credentials(servers: Callable[..., Server]) -> None:
    def answer(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("authorization") != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="registry"'}, b""
        return (200, {}, b"{}") if path == "/v2/moved/" else (307, {"Location": "/v2/moved/"}, b"")

    registry = servers(answer)
    Registry(f"127.0.0.1:{registry.port}", "me", "hunter2").check_auth()
    assert [p for _, p, _ in registry.seen] == ["/v2/", "/v2/moved/"]


def test_an_https_registry_with_an_http_realm_is_refused_before_the_password_leaves(servers: Callable[..., Server],
                                                                                  tls: ssl.SSLContext) -> None:
    realm = servers(lambda *_: (200, {}, json.dumps({"token": "T0KEN"}).encode()))
    registry = servers(bearer_registry(lambda: f"{realm.url()}/token", ok), tls=tls)
    with pytest.raises(PipelineError) as refused:
        Registry(f"127.1:{registry.port}", "me", "hunter2").check_auth()
    assert "http://" in str(refused.value) and "\n" not in str(refused.value)
    assert realm.seen == []


def test_an_https_registry_may_name_an_https_realm_on_another_host(servers: Callable[..., Server], tls: ssl.SSLContext) -> None:
    """Docker Hub's way (registry-1.docker.io, realm on auth.docker.io): credentials go there."""
    realm = servers(lambda *_: (200, {}, json.dumps({"token": "T0KEN"}).encode()), tls=tls)
    registry = servers(bearer_registry(lambda: f"{realm.url('127.1', 'https')}/token", ok), tls=tls)
    Registry(f"127.1:{registry.port}", "me", "hunter2").check_auth()
    assert realm.authorizations() == [BASIC]


def test_an_https_registry_redirecting_to_http_on_the_same_host_gets_no_credentials(servers: Callable[..., Server],
                                                                                   tls: ssl.SSLContext) -> None:
    plain = servers(ok)
    registry = servers(redirect_to(plain.url("127.1"), needs=BASIC), tls=tls)
    Registry(f"127.1:{registry.port}", "me", "hunter2").check_auth()
    assert registry.authorizations() == [BASIC] and plain.seen and plain.authorizations() == []


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://127.0.0.1/token", "data:,{}", "/token", "token"])
def test_a_realm_that_is_not_an_http_url_is_refused(realm: str, servers: Callable[..., Server]) -> None:
    registry = servers(bearer_registry(lambda: realm, ok))
    with pytest.raises(RegistryAuthError) as refused:
        Registry(f"127.0.0.1:{registry.port}", "me", "hunter2").check_auth()
    assert "realm" in str(refused.value) and "\n" not in str(refused.value)
