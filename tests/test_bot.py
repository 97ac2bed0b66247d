"""The bot's configuration and --self-check, on the host (both are stdlib-only by design).

The stand-in Lavalink here is an in-process HTTP server (a test double: the real Lavalink
needs Java and its image cannot be pulled on this machine).
"""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bot"))
from dimbybot import config, selfcheck  # noqa: E402

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123"


def env(**overrides: str) -> dict[str, str]:
    return {"DISCORD_TOKEN": TOKEN, "LAVALINK_HOST": "127.0.0.1", "LAVALINK_PASSWORD": "pw", **overrides}


@pytest.fixture
def lavalink() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/version" and self.headers.get("Authorization") == "pw"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"4.2.2" if ok else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_defaults_and_uri() -> None:
    settings = config.load({"DISCORD_TOKEN": TOKEN, "LAVALINK_PASSWORD": "pw"})
    assert settings.lavalink_uri == "http://lavalink:2333"
    assert "pw" not in repr(settings) and TOKEN not in repr(settings)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"DISCORD_TOKEN": ""}, "DISCORD_TOKEN is not set"),
    ({"DISCORD_TOKEN": "Bot " + TOKEN}, "without the 'Bot ' prefix"),
    ({"DISCORD_TOKEN": "not-a-token"}, "does not look like a Discord bot token"),
    ({"LAVALINK_PORT": "http"}, "LAVALINK_PORT must be an integer"),
    ({"LAVALINK_PORT": "70000"}, "LAVALINK_PORT must be between 1 and 65535"),
    ({"LAVALINK_HOST": "http://x"}, "LAVALINK_HOST must be a host name"),
    ({"LAVALINK_PASSWORD": ""}, "LAVALINK_PASSWORD is not set"),
    ({"DISCORD_GUILD_ID": "abc"}, "DISCORD_GUILD_ID must be a numeric id"),
])
def test_bad_configuration_is_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(env(**overrides))


def test_self_check_ok(lavalink: int) -> None:
    code, line = selfcheck.run(env(LAVALINK_PORT=str(lavalink)))
    assert (code, line) == (0, f"self-check ok: Lavalink 4.2.2 at http://127.0.0.1:{lavalink}")


def test_self_check_wrong_password(lavalink: int) -> None:
    code, line = selfcheck.run(env(LAVALINK_PORT=str(lavalink), LAVALINK_PASSWORD="nope"))
    assert code == 1 and line.endswith("answered HTTP 401 (wrong LAVALINK_PASSWORD?)")


def test_self_check_unreachable() -> None:
    code, line = selfcheck.run(env(LAVALINK_PORT="1"), timeout=2)
    assert code == 1 and line.startswith("self-check failed: Lavalink at http://127.0.0.1:1 is unreachable")
    assert "\n" not in line


def test_self_check_configuration_error_is_one_line() -> None:
    code, line = selfcheck.run({"LAVALINK_PASSWORD": "pw"})
    assert (code, line) == (1, "self-check failed: configuration: DISCORD_TOKEN is not set")
