"""A stand-in for GitHub's Actions cache service (GitHub itself cannot run here).

Only GitHub's part is stood in for; blobs live in a real Azure Blob endpoint (Azurite) and
BuildKit's own client uploads and downloads them with the Azure protocol.

What it serves, on one port (127.0.0.1 unless told):
  POST /twirp/github.actions.results.api.v1.CacheService/{CreateCacheEntry,
       FinalizeCacheEntryUpload, GetCacheEntryDownloadURL}      the v2 cache API (ACTIONS_RESULTS_URL)
  GET/DELETE /repos/{owner}/{repo}/actions/caches[...], GET .../actions/cache/usage
                                                              the REST cache API (GITHUB_TOKEN)

The wire format follows the public sources: field names from actions/toolkit's generated
`results/api/v1/cache.ts` (JSON with the proto's snake_case names; lowerCamel accepted too, as
protobuf JSON parsers do), errors as Twirp JSON (`{"code", "msg"}`, Twirp's HTTP status per
code), the runtime token as a JWT whose `ac` claim lists `{"Scope", "Permission"}` (1 read,
2 write). GitHub's rules modelled:
  - keys: non-empty, at most 512 characters, no commas; at most 10 key + restore keys;
  - an entry is (ref, key, version); creating one that exists is `already_exists` (409);
  - lookups: for each ref the token may read, in the token's order, an exact key+version
    match, then each restore key as a prefix (newest entry first);
  - writes go to the token's writable ref only (a pull request's own merge ref);
  - at most `uploads_per_minute` entry creations a minute (GitHub: 200), else
    `resource_exhausted` (429) with Retry-After;
  - a storage quota (GitHub: 10 GB) enforced after each upload by evicting the least recently
    used entries, and entries unused for 7 days evicted (`advance_clock`).
Faults to inject (`faults`): a status code or a delay per method, and deleting a blob or
evicting an entry by hand. What it does not model is listed in the README (cache section).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import hmac
import http.server
import json
import pathlib
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from .azurite import Azurite, free_port, start_azurite

TWIRP_PREFIX = "/twirp/github.actions.results.api.v1.CacheService/"
TWIRP_STATUS = {"invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403, "not_found": 404,
                "already_exists": 409, "failed_precondition": 412, "resource_exhausted": 429, "internal": 500,
                "unavailable": 503}
CONTAINER = "actions-cache"
GIB = 1024**3
READ, WRITE = 1, 2


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass
class Entry:
    id: int
    ref: str
    key: str
    version: str
    blob: str
    created_at: float
    last_accessed_at: float
    size: int = 0
    finalized: bool = False

    def rest(self) -> dict[str, Any]:
        def iso(t: float) -> str:
            return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"id": self.id, "ref": self.ref, "key": self.key, "version": self.version,
                "last_accessed_at": iso(self.last_accessed_at), "created_at": iso(self.created_at),
                "size_in_bytes": self.size}


@dataclasses.dataclass
class Faults:
    """What to break. `status` and `delay` are per Twirp method name (e.g. "CreateCacheEntry")."""

    status: dict[str, int] = dataclasses.field(default_factory=dict)
    delay: dict[str, float] = dataclasses.field(default_factory=dict)

    def clear(self) -> None:
        self.status.clear()
        self.delay.clear()


class TwirpError(Exception):
    def __init__(self, code: str, msg: str, retry_after: int | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.retry_after = code, msg, retry_after


class CacheService:
    """The state and rules of one repository's cache; the HTTP layer is `_Handler`."""

    def __init__(self, azurite: Azurite, repository: str, github_token: str,
                 quota_bytes: int = 10 * GIB, uploads_per_minute: int = 200) -> None:
        self.azurite, self.repository, self.github_token = azurite, repository, github_token
        self.quota_bytes, self.uploads_per_minute = quota_bytes, uploads_per_minute
        self.faults = Faults()
        self.entries: list[Entry] = []
        self.evicted: list[Entry] = []
        self.calls: list[tuple[str, str]] = []  # (method, key) of every Twirp call, in order
        self.errors: list[str] = []  # the stand-in's own failures (should stay empty)
        self.authorizations: list[str] = []  # every Authorization header seen (for secret checks)
        self._secret = secrets.token_bytes(32)
        self._creates: list[float] = []
        self._next_id = 1
        self._clock_offset = 0.0
        self._lock = threading.RLock()
        azurite.create_container(CONTAINER)

    # -- tokens ------------------------------------------------------------------------------
    def runtime_token(self, ref: str = "refs/heads/main", read_refs: tuple[str, ...] = (), lifetime: int = 3600) -> str:
        """An ACTIONS_RUNTIME_TOKEN as a runner gets it: `ref` read+write, `read_refs` read only."""
        scopes = [{"Scope": ref, "Permission": READ | WRITE}] + [{"Scope": r, "Permission": READ} for r in read_refs]
        now = int(time.time())
        header = _b64url(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = _b64url(json.dumps({"ac": json.dumps(scopes), "nbf": now - 60, "iat": now - 60, "exp": now + lifetime,
                                      "iss": "gha-standin", "aud": "vso:gha-standin"}).encode())
        signature = _b64url(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    def _scopes(self, authorization: str) -> list[tuple[str, int]]:
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header, payload, signature = token.split(".")
            expected = _b64url(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, json.JSONDecodeError):
            raise TwirpError("unauthenticated", "invalid token") from None
        if not hmac.compare_digest(signature, expected):
            raise TwirpError("unauthenticated", "invalid token signature")
        if claims.get("exp", 0) < time.time():
            raise TwirpError("unauthenticated", "token expired")
        return [(s["Scope"], int(s["Permission"])) for s in json.loads(claims["ac"])]

    def exhaust_upload_budget(self) -> None:
        """Other jobs used this minute's uploads (GitHub: 200 a minute per repository)."""
        with self._lock:
            now = time.time()
            self._creates = [now] * self.uploads_per_minute

    # -- clock and eviction -----------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance_clock(self, days: float) -> list[Entry]:
        """Let time pass; entries unused for 7 days are evicted, as GitHub does. Returns them."""
        with self._lock:
            self._clock_offset += days * 86400
            stale = [e for e in self.entries if e.finalized and self.now() - e.last_accessed_at > 7 * 86400]
            for entry in stale:
                self._evict(entry)
            return stale

    def _evict(self, entry: Entry) -> None:
        self.entries.remove(entry)
        self.evicted.append(entry)
        self.azurite.delete_blob(CONTAINER, entry.blob)

    def evict(self, key_prefix: str) -> list[Entry]:
        """Evict entries (metadata and blob) whose key starts with `key_prefix`, like GitHub's LRU."""
        with self._lock:
            matched = [e for e in self.entries if e.key.startswith(key_prefix)]
            for entry in matched:
                self._evict(entry)
            return matched

    def delete_blob_only(self, key_prefix: str) -> list[Entry]:
        """Delete the Azure blobs of entries but keep the entries listed (a storage-side loss)."""
        with self._lock:
            matched = [e for e in self.entries if e.key.startswith(key_prefix)]
            for entry in matched:
                self.azurite.delete_blob(CONTAINER, entry.blob)
            return matched

    def _enforce_quota(self) -> None:
        while self.used_bytes() > self.quota_bytes:
            oldest = min((e for e in self.entries if e.finalized), key=lambda e: (e.last_accessed_at, e.id))
            self._evict(oldest)

    def used_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.finalized)

    def finalized(self, key_prefix: str = "") -> list[Entry]:
        return [e for e in self.entries if e.finalized and e.key.startswith(key_prefix)]

    # -- the Twirp methods --------------------------------------------------------------------
    @staticmethod
    def _key(body: dict[str, Any], name: str = "key") -> str:
        key = body.get(name)
        if not isinstance(key, str) or not key:
            raise TwirpError("invalid_argument", f"{name} is required")
        if len(key) > 512:
            raise TwirpError("invalid_argument", f"{name} exceeds 512 characters")
        if "," in key:
            raise TwirpError("invalid_argument", f"{name} cannot contain commas")
        return key

    @staticmethod
    def _version(body: dict[str, Any]) -> str:
        version = body.get("version")
        if not isinstance(version, str) or not version:
            raise TwirpError("invalid_argument", "version is required")
        return version

    def create_cache_entry(self, scopes: list[tuple[str, int]], body: dict[str, Any]) -> dict[str, Any]:
        key, version = self._key(body), self._version(body)
        writable = [ref for ref, permission in scopes if permission & WRITE]
        if not writable:
            raise TwirpError("permission_denied", "token cannot write to the cache")
        ref = writable[-1]
        now = time.time()
        self._creates = [t for t in self._creates if now - t < 60]
        if len(self._creates) >= self.uploads_per_minute:
            retry = int(60 - (now - self._creates[0])) + 1
            raise TwirpError("resource_exhausted", f"cache upload rate limit of {self.uploads_per_minute} a minute exceeded", retry)
        if any(e.ref == ref and e.key == key and e.version == version for e in self.entries):
            raise TwirpError("already_exists", f"cache entry {key} already exists")
        self._creates.append(now)
        entry = Entry(id=self._next_id, ref=ref, key=key, version=version, blob=f"{self._next_id}-{secrets.token_hex(8)}",
                      created_at=self.now(), last_accessed_at=self.now())
        self._next_id += 1
        self.entries.append(entry)
        return {"ok": True, "signed_upload_url": self.azurite.blob_url(CONTAINER, entry.blob, "cw")}

    def finalize_cache_entry_upload(self, scopes: list[tuple[str, int]], body: dict[str, Any]) -> dict[str, Any]:
        key, version = self._key(body), self._version(body)
        writable = [ref for ref, permission in scopes if permission & WRITE]
        pending = [e for e in self.entries if not e.finalized and e.key == key and e.version == version and e.ref in writable]
        if not pending:
            raise TwirpError("not_found", f"no cache entry {key} is being uploaded")
        entry = pending[0]
        stored = self.azurite.blob_size(CONTAINER, entry.blob)
        size = int(body.get("size_bytes", body.get("sizeBytes", 0)))
        if stored is None:
            raise TwirpError("failed_precondition", f"nothing was uploaded for {key}")
        if stored != size:
            raise TwirpError("invalid_argument", f"size_bytes {size} does not match the uploaded {stored} bytes")
        entry.size, entry.finalized = size, True
        self._enforce_quota()
        return {"ok": True, "entry_id": str(entry.id)}

    def get_cache_entry_download_url(self, scopes: list[tuple[str, int]], body: dict[str, Any]) -> dict[str, Any]:
        key, version = self._key(body), self._version(body)
        restore = body.get("restore_keys", body.get("restoreKeys")) or []
        if len(restore) + 1 > 10:
            raise TwirpError("invalid_argument", "at most 10 keys (key and restore keys)")
        restore = [self._key({"key": k}) for k in restore]
        for ref in [r for r, permission in scopes if permission & READ]:
            candidates = [e for e in self.entries if e.finalized and e.ref == ref and e.version == version]
            match = next((e for e in candidates if e.key == key), None)
            for prefix in restore:
                if match is None:
                    prefixed = [e for e in candidates if e.key.startswith(prefix)]
                    match = max(prefixed, key=lambda e: (e.created_at, e.id)) if prefixed else None
            if match is not None:
                match.last_accessed_at = self.now()
                return {"ok": True, "signed_download_url": self.azurite.blob_url(CONTAINER, match.blob, "r", 600),
                        "matched_key": match.key}
        return {"ok": False, "signed_download_url": "", "matched_key": ""}

    METHODS = {"CreateCacheEntry": create_cache_entry, "FinalizeCacheEntryUpload": finalize_cache_entry_upload,
               "GetCacheEntryDownloadURL": get_cache_entry_download_url}

    def twirp(self, method: str, authorization: str, body: dict[str, Any]) -> dict[str, Any]:
        handler = self.METHODS.get(method)
        if handler is None:
            raise TwirpError("not_found", f"no method {method}")
        with self._lock:
            self.authorizations.append(authorization)
            self.calls.append((method, str(body.get("key", ""))))
            scopes = self._scopes(authorization)
            return handler(self, scopes, body)

    # -- the REST API (GITHUB_TOKEN) ----------------------------------------------------------
    def rest(self, method: str, path: str, query: dict[str, str], authorization: str) -> tuple[int, Any]:
        if authorization.removeprefix("Bearer ").removeprefix("token ").strip() != self.github_token:
            return 401, {"message": "Bad credentials"}
        base = f"/repos/{self.repository}/actions/"
        if not path.startswith(base):
            return 404, {"message": "Not Found"}
        rest = path[len(base):].rstrip("/")
        with self._lock:
            if method == "GET" and rest == "cache/usage":
                return 200, {"full_name": self.repository, "active_caches_size_in_bytes": self.used_bytes(),
                             "active_caches_count": len(self.finalized())}
            if method == "GET" and rest == "caches":
                return 200, self._list(query)
            if method == "DELETE" and rest == "caches":
                if "key" not in query:
                    return 422, {"message": "key is required"}
                doomed = [e for e in self.finalized() if e.key == query["key"] and query.get("ref", e.ref) == e.ref]
                if not doomed:
                    return 404, {"message": "Not Found"}
                for entry in doomed:
                    self._delete(entry)
                return 200, {"total_count": len(doomed), "actions_caches": [e.rest() for e in doomed]}
            if method == "DELETE" and rest.startswith("caches/") and rest[7:].isdigit():
                doomed = [e for e in self.finalized() if e.id == int(rest[7:])]
                if not doomed:
                    return 404, {"message": "Not Found"}
                self._delete(doomed[0])
                return 204, None
        return 404, {"message": "Not Found"}

    def _delete(self, entry: Entry) -> None:
        self.entries.remove(entry)
        self.azurite.delete_blob(CONTAINER, entry.blob)

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        entries = [e for e in self.finalized(query.get("key", "")) if query.get("ref", e.ref) == e.ref]
        sort = query.get("sort", "last_accessed_at")
        attribute = {"created_at": "created_at", "size_in_bytes": "size", "last_accessed_at": "last_accessed_at"}.get(sort, "last_accessed_at")
        entries.sort(key=lambda e: (getattr(e, attribute), e.id), reverse=query.get("direction", "desc") == "desc")
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        return {"total_count": len(entries), "actions_caches": [e.rest() for e in entries[(page - 1) * per_page:page * per_page]]}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # BuildKit opens many connections at once (one per blob lookup)


class _Handler(http.server.BaseHTTPRequestHandler):
    service: CacheService  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _rest(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        status, payload = self.service.rest(method, url.path, query, self.headers.get("Authorization", ""))
        self._send(status, payload)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._rest("GET")

    def do_DELETE(self) -> None:  # noqa: N802
        self._rest("DELETE")

    def do_POST(self) -> None:  # noqa: N802
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        if not self.path.startswith(TWIRP_PREFIX):
            self._send(404, {"code": "bad_route", "msg": f"no handler for {self.path}"})
            return
        method = self.path[len(TWIRP_PREFIX):]
        faults = self.service.faults
        if method in faults.delay:
            time.sleep(faults.delay[method])
        if method in faults.status:
            status = faults.status[method]
            code = next((c for c, s in TWIRP_STATUS.items() if s == status), "internal")
            self.service.calls.append((method + f" -> injected {status}", ""))
            self._send(status, {"code": code, "msg": f"injected fault: HTTP {status}"},
                       {"Retry-After": "1"} if status == 429 else None)
            return
        try:
            body = json.loads(body_bytes or b"{}")
            self._send(200, self.service.twirp(method, self.headers.get("Authorization", ""), body))
        except json.JSONDecodeError:
            self._send(400, {"code": "malformed", "msg": "body is not JSON"})
        except TwirpError as error:
            self._send(TWIRP_STATUS[error.code], {"code": error.code, "msg": error.msg},
                       {"Retry-After": str(error.retry_after)} if error.retry_after else None)
        except Exception as error:  # a bug in the stand-in must show as one, not as a reset connection
            self.service.errors.append(f"{method}: {type(error).__name__}: {error}")
            self._send(500, {"code": "internal", "msg": "stand-in error (see service.errors)"})


@dataclasses.dataclass
class GhaStandIn:
    """A running stand-in: `results_url` is ACTIONS_RESULTS_URL, `api_url` GITHUB_API_URL."""

    service: CacheService
    server: http.server.ThreadingHTTPServer
    azurite: Azurite
    azurite_dir: pathlib.Path  # where Azurite keeps the blobs

    @property
    def results_url(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}/"

    @property
    def api_url(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def runner_env(self, ref: str = "refs/heads/main", read_refs: tuple[str, ...] = ()) -> dict[str, str]:
        """The variables a job sees on a runner (with the runtime exported to `run:` steps)."""
        return {"ACTIONS_RUNTIME_TOKEN": self.service.runtime_token(ref, read_refs), "ACTIONS_RESULTS_URL": self.results_url,
                "ACTIONS_CACHE_SERVICE_V2": "true", "GITHUB_TOKEN": self.service.github_token,
                "GITHUB_REPOSITORY": self.service.repository, "GITHUB_API_URL": self.api_url, "GITHUB_REF": ref}


def start(directory: pathlib.Path, repository: str = "owner/dimbybot2", quota_bytes: int = 10 * GIB,
          uploads_per_minute: int = 200, host: str = "127.0.0.1") -> Iterator[GhaStandIn]:
    """Azurite plus the cache service on free ports of `host` (generator: stops both on close):
    another address than loopback for clients elsewhere, a Dagger engine's containers."""
    azurite_gen = start_azurite(directory / "azurite", host)
    azurite = next(azurite_gen)
    try:
        service = CacheService(azurite, repository, "ghs_" + secrets.token_hex(16), quota_bytes, uploads_per_minute)
        handler = type("Handler", (_Handler,), {"service": service})
        server = _Server((host, free_port()), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield GhaStandIn(service, server, azurite, directory / "azurite")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    finally:
        azurite_gen.close()
