"""A stand-in for the Lavalink v4 server: just enough HTTP for health checks and self-checks.

Test double: the real Lavalink image cannot be pulled on the machines that run the tests.
It mirrors what the project depends on: it refuses to start without application.yml in its
working directory, reads the password from LAVALINK_SERVER_PASSWORD (as Lavalink's Spring
configuration does), answers GET /version with the version text when the Authorization header
equals the password, 401 when it is missing or wrong. STANDIN_FAIL_STATUS=500 makes every
answer that status, so tests can show that a health check fails on HTTP errors.
"""

import http.server
import os
import pathlib
import sys

VERSION = "4.0.0-standin"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        forced = os.environ.get("STANDIN_FAIL_STATUS")
        if forced:
            self._answer(int(forced), "forced failure")
        elif self.headers.get("Authorization") != os.environ.get("LAVALINK_SERVER_PASSWORD"):
            self._answer(401, "Unauthorized")
        elif self.path in ("/version", "/v4/info"):
            self._answer(200, VERSION)
        else:
            self._answer(404, "Not Found")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    if not pathlib.Path("application.yml").is_file():
        sys.exit("standin: application.yml missing in " + os.getcwd())
    if not os.environ.get("LAVALINK_SERVER_PASSWORD"):
        sys.exit("standin: LAVALINK_SERVER_PASSWORD is not set")
    port = int(os.environ.get("SERVER_PORT", "2333"))
    print(f"standin Lavalink {VERSION} on :{port}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
