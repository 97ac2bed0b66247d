"""Issue 22, item 9: whatever a registry or its token service answers, the client fails as one
PipelineError line (RegistryAuthError included), never with another exception.

A real HTTP server on 127.0.0.1 answers every request with what hypothesis draws: any status,
WWW-Authenticate challenges (Bearer realms on this server, elsewhere, of other schemes, or
garbage), Location headers, Content-Type and Docker-Content-Digest values, JSON or arbitrary
bodies, token bodies of every shape, and raw bytes that are not HTTP at all.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci.errors import PipelineError
from ci.registry import Registry

DIGEST = "sha256:" + "ab" * 32
LATIN1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
NASTY = st.text(st.characters(codec="latin-1"), max_size=60)  # control characters too (CR/LF included)


class FuzzServer:
    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _any(self) -> None:
                if length := int(self.headers.get("Content-Length", "0") or 0):
                    self.rfile.read(length)
                kind = "token" if self.path.startswith("/token") else "registry"
                answer = server.answers[kind]
                if answer.get("raw") is not None:
                    self.wfile.write(answer["raw"])
                    return
                self.send_response(answer["status"])
                for name, value in answer["headers"]:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer["body"])))
                self.end_headers()
                self.wfile.write(answer["body"])

            do_GET = do_PUT = do_HEAD = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[FuzzServer]:
    fuzz = FuzzServer()
    yield fuzz
    fuzz.stop()


def realms(port: int) -> st.SearchStrategy[str]:
    return st.one_of(st.just(f"http://127.0.0.1:{port}/token"), st.just(f"http://127.0.0.1:{port}/token?x=1"),
                     st.just("http://127.0.0.1:1/token"), st.just("https://127.0.0.1:1/token"), st.just("file:///etc/passwd"),
                     st.just("ftp://127.0.0.1/x"), st.just(""), st.just(f"http://me:pw@127.0.0.1:{port}/token"),
                     st.just(f"http://127.0.0.1:{port}/token\\x"), st.just("http://[::1"), LATIN1)


def challenges(port: int) -> st.SearchStrategy[str]:
    bearer = st.builds(lambda realm, extra, scheme: f'{scheme} realm="{realm}"{extra}', realms(port),
                       st.sampled_from(["", ',service="registry"', ',scope="repository:x:pull"', ',realm="again"', ",broken"]),
                       st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearer  "]))
    return st.one_of(bearer, NASTY)


def answers(port: int) -> st.SearchStrategy[dict[str, Any]]:
    header = st.one_of(
        st.tuples(st.just("WWW-Authenticate"), challenges(port)),
        st.tuples(st.just("Location"), st.one_of(st.sampled_from(["/v2/", "/v2/x/manifests/y", "http://127.0.0.1:1/x",
                                                                  f"http://127.0.0.1:{port}/v2/", "file:///etc/passwd", ""]), NASTY)),
        st.tuples(st.just("Content-Type"), st.one_of(st.just("application/vnd.oci.image.manifest.v1+json"), NASTY)),
        st.tuples(st.just("Docker-Content-Digest"), st.one_of(st.just(DIGEST), NASTY)),
        st.tuples(LATIN1.filter(lambda n: n.strip() and ":" not in n and "\r" not in n and "\n" not in n), NASTY),
    )
    json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | NASTY,
                              lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                                  st.sampled_from(["token", "access_token", "tags", "mediaType", "errors", "x"]), inner, max_size=3),
                              max_leaves=8)
    body = st.one_of(st.binary(max_size=200), json_value.map(lambda v: json.dumps(v).encode()))
    normal = st.fixed_dictionaries({
        "status": st.sampled_from([200, 201, 202, 204, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 429, 500, 502, 599]),
        "headers": st.lists(header, max_size=4), "body": body, "raw": st.none()})
    raw = st.fixed_dictionaries({"raw": st.one_of(st.binary(max_size=200), st.just(b""),
                                                  st.just(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}"))})
    return st.one_of(normal, normal, normal, raw)


OPERATIONS = ["check_auth", "get_manifest", "tags", "promote", "blob"]


def run(registry: Registry, operation: str) -> None:
    if operation == "check_auth":
        registry.check_auth()
    elif operation == "get_manifest":
        registry.get_manifest("me/x", "latest")
    elif operation == "tags":
        registry.tags("me/x")
    elif operation == "promote":
        registry.promote("me/x", "sha", DIGEST, ["latest"])
    else:
        registry.blob("me/x", DIGEST)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_registry_answer_is_a_one_line_pipeline_error_or_a_result(server: FuzzServer, data: st.DataObject) -> None:
    server.answers = {"registry": data.draw(answers(server.port), "registry"), "token": data.draw(answers(server.port), "token")}
    operation = data.draw(st.sampled_from(OPERATIONS), "operation")
    credentials = data.draw(st.sampled_from([(None, None), ("me", "hunter2")]), "credentials")
    # Short waits between retries (5xx, dropped connections): the answers, not the waits, are under test.
    registry = Registry(f"127.0.0.1:{server.port}", *credentials, timeout=3, backoff=0.01, max_wait=0.05)
    try:
        run(registry, operation)
    except PipelineError as error:
        text = str(error)
        assert text and "\n" not in text and "\r" not in text, repr(text)
