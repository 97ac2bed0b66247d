"""A local stand-in for the part of GitHub's REST API that `dimbybot-ci trends --github` reads.

Test double: GitHub itself cannot be reached from the machines that run the tests. It follows
GitHub's documented shapes: workflow runs newest first with `branch`/`status`/`per_page`/`page`,
a run's artifacts filtered by `name`, `archive_download_url` answering 302 to a signed URL on
another host (blob storage, a second server here, which must never see the token), the cache
usage of the repository, 401 without the right bearer token. Every request is recorded.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@dataclasses.dataclass
class FakeRun:
    id: int
    run_number: int
    head_sha: str
    head_branch: str
    created_at: str
    conclusion: str = "success"
    report: bytes | None = None  # None: the run uploaded no artifact
    expired: bool = False
    zip_member: str = "report.json"


@dataclasses.dataclass
class Recorded:
    host: str  # "api" or "blob"
    path: str
    authorization: str | None


@dataclasses.dataclass
class StandIn:
    token: str
    repository: str
    workflow: str
    runs: list[FakeRun]
    cache_bytes: int = 0
    requests: list[Recorded] = dataclasses.field(default_factory=list)
    api_url: str = ""
    blob_url: str = ""

    def zip_of(self, run: FakeRun) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(run.zip_member, run.report or b"")
        return buffer.getvalue()


def _handler(state: StandIn, host: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, data: Any, status: int = 200) -> None:
            self._send(status, json.dumps(data).encode())

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            state.requests.append(Recorded(host, url.path, self.headers.get("Authorization")))
            if host == "blob":
                run = next((r for r in state.runs if url.path == f"/blobs/{r.id}.zip"), None)
                if run is None or query.get("sig") != f"signed-{run.id}":
                    return self._send(403, b"AuthenticationFailed", "text/plain")
                return self._send(200, state.zip_of(run), "application/zip")
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._json({"message": "Bad credentials", "status": "401"}, 401)
            prefix = f"/repos/{state.repository}/actions"
            if url.path == f"{prefix}/workflows/{state.workflow}/runs":
                runs = [r for r in state.runs if "branch" not in query or r.head_branch == query["branch"]]
                runs.sort(key=lambda r: r.created_at, reverse=True)  # GitHub: newest first
                per_page, page = int(query.get("per_page", "30")), int(query.get("page", "1"))
                chosen = runs[(page - 1) * per_page: page * per_page]
                return self._json({"total_count": len(runs), "workflow_runs": [{
                    "id": r.id, "run_number": r.run_number, "head_sha": r.head_sha, "head_branch": r.head_branch,
                    "created_at": r.created_at, "run_started_at": r.created_at, "status": "completed",
                    "conclusion": r.conclusion, "name": "build and deploy", "path": f".github/workflows/{state.workflow}",
                    "html_url": f"https://github.example/{state.repository}/actions/runs/{r.id}"} for r in chosen]})
            for run in state.runs:
                if url.path == f"{prefix}/runs/{run.id}/artifacts":
                    artifacts = [] if run.report is None else [{
                        "id": 9000 + run.id, "name": "build-report", "size_in_bytes": len(run.report), "expired": run.expired,
                        "archive_download_url": f"{state.api_url}{prefix}/artifacts/{9000 + run.id}/zip"}]
                    return self._json({"total_count": len(artifacts),
                                       "artifacts": [a for a in artifacts if query.get("name") in (None, a["name"])]})
                if url.path == f"{prefix}/artifacts/{9000 + run.id}/zip":
                    return self._send(302, b"", headers={"Location": f"{state.blob_url}/blobs/{run.id}.zip?sig=signed-{run.id}"})
            if url.path == f"{prefix}/cache/usage":
                return self._json({"full_name": state.repository, "active_caches_size_in_bytes": state.cache_bytes,
                                   "active_caches_count": 3})
            return self._json({"message": "Not Found"}, 404)

    return Handler


@contextmanager
def serve(state: StandIn) -> Iterator[StandIn]:
    """Start the API and the blob host on two free ports of 127.0.0.1; stop both afterwards."""
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, "api"))
    blob = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, "blob"))
    state.api_url = f"http://127.0.0.1:{api.server_address[1]}"
    state.blob_url = f"http://127.0.0.1:{blob.server_address[1]}"
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (api, blob)]
    for thread in threads:
        thread.start()
    try:
        yield state
    finally:
        for server in (api, blob):
            server.shutdown()
            server.server_close()
