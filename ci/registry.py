"""A small OCI distribution (Registry API v2) client: check credentials, resolve, retag.

Moving a tag is a manifest copy: the manifest stored under the SHA tag is PUT again under
`latest`, byte for byte, so both tags resolve to the same digest by construction.
Basic and Bearer (token service) authentication are supported. Plain HTTP or HTTPS is
`tags.plain_http`'s decision (loopback hosts, and registries marked `insecure`), the same one
the pipeline's push makes.

Credentials go only where they belong: a redirect that leaves the origin (scheme, host, port)
of the request carries no Authorization (urllib would copy it), and a Bearer challenge's realm
gets the Basic credentials only over HTTPS, or over plain HTTP when the registry itself is
spoken to over plain HTTP and the realm is on a host tags.plain_http allows. Whatever the
registry or the token service answers, a failure is one PipelineError line.

Tokens (ghcr.io's way: a token service answering `{"token", "expires_in"}` for a scope such as
`repository:owner/name:pull,push`) are kept per scope until shortly before they expire, and a
401 on a token that was thought good (revoked, or a clock that disagrees) gets one fresh token
and one more try. Throttling and passing faults (429, 500, 502, 503, 504) are retried a bounded
number of times with exponential backoff, honouring Retry-After up to `max_wait` seconds; then
the call fails with one line naming the registry and the last status. A connection dropped on the
way (reset, cut short, timed out) is retried the same way, then one line names the registry, the
request and what happened to it; a registry that cannot be reached at all (refused, unknown name)
fails at once. Every request retried is idempotent (GET, HEAD, a manifest PUT of the same bytes
under the same tag, or the start of a blob upload).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import PipelineError
from .tags import plain_http

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


# Statuses worth another try: throttling and a registry (or its front) passing a fault on.
TRANSIENT = frozenset({429, 500, 502, 503, 504})
# A token is not sent in its last seconds (or last tenth of its life, if that is shorter).
TOKEN_MARGIN = 10.0
# Token services that say nothing of the lifetime: Docker's token spec says 60 s.
DEFAULT_TOKEN_SECONDS = 60.0


class RegistryAuthError(PipelineError):
    """The registry refused the credentials."""


class _Dropped(PipelineError):
    """The connection broke during a request (reset, cut short, timed out): worth another try."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Transport failures of a connection that was made: passing, unlike a refused connection.
_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, TimeoutError, http.client.IncompleteRead,
            http.client.RemoteDisconnected)


def _idempotent(method: str, path: str, body: bytes | None) -> bool:
    """Requests that may be sent again after a dropped connection without changing the outcome."""
    return method in ("GET", "HEAD") or (method == "PUT" and "/manifests/" in path) or (
        method == "POST" and path.endswith("/blobs/uploads/") and body is None)


class RegistryNotFound(PipelineError):
    """The registry answered HTTP 404: no such manifest, blob or repository."""


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), if it is readable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _scope_key(method: str, path: str) -> str:
    """Which token a request needs: the repository and whether it writes ("" for the API root)."""
    match = re.match(r"^/(.+?)/(?:manifests|blobs|tags)/", path)
    if not match:
        return ""
    return f"{match.group(1)}:{'pull' if method in ('GET', 'HEAD') else 'push'}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class _AuthStaysInOrigin(urllib.request.HTTPRedirectHandler):
    """Follows redirects; the Authorization header (kept unredirected) goes along only while
    the redirect stays in the origin it was meant for."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(new.full_url) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


_OPENER = urllib.request.build_opener(_AuthStaysInOrigin)


def _line(text: str, limit: int = 300) -> str:
    """Text from the other side as one printable line."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


@dataclasses.dataclass
class Registry:
    host: str
    username: str | None = dataclasses.field(default=None)
    password: str | None = dataclasses.field(default=None, repr=False)
    timeout: float = 30.0
    insecure: bool = False  # known to speak plain HTTP only (see tags.plain_http)
    attempts: int = 4  # tries of one request when the answer is transient (TRANSIENT)
    backoff: float = 0.5  # seconds before the second try; doubled for each further one
    max_wait: float = 30.0  # the longest wait before a retry, whatever Retry-After asks
    # Bearer tokens by _scope_key: (token, monotonic time after which it is not sent).
    _tokens: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict, repr=False)
    token_fetches: int = dataclasses.field(default=0, repr=False)  # how many the token service issued
    retries: int = dataclasses.field(default=0, repr=False)  # transient answers retried so far

    @property
    def base(self) -> str:
        scheme = "http" if plain_http(self.host, self.insecure) else "https"
        return f"{scheme}://{self.host}/v2"

    def _basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _realm(self, challenge: str) -> tuple[str, dict[str, str]]:
        """The token service's URL and parameters, if credentials may be sent there."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryAuthError(f"registry {self.host}: bearer challenge without realm")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c in realm for c in " \t\r\n\\"):
            raise RegistryAuthError(f"registry {self.host}: the token realm {_line(realm, 120)!r} is not an http(s) URL")
        if parts.scheme == "http":
            plain_registry = self.base.startswith("http://")
            realm_host = parts.netloc.rpartition("@")[2]
            if not plain_registry or not (realm_host == self.host or plain_http(realm_host)):
                raise RegistryAuthError(f"registry {self.host}: refusing to send credentials to the plain-HTTP token realm "
                                        f"{_line(realm, 120)!r} (only HTTPS, or plain HTTP for a registry spoken to over plain HTTP)")
        return realm, params

    def _open(self, request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
        """One request; transport failures as PipelineError (HTTPError passes for the caller)."""
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as err:
            if isinstance(err.reason, _DROPPED):
                reason = _line(str(err.reason)) or type(err.reason).__name__
                raise _Dropped(f"registry {self.host}: {request.get_method()} failed: {reason}", reason) from None
            raise PipelineError(f"registry {self.host} is unreachable: {_line(str(err.reason))}") from None
        except _DROPPED as err:
            reason = _line(str(err)) or type(err).__name__
            raise _Dropped(f"registry {self.host}: {request.get_method()} failed: {reason}", reason) from None
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise PipelineError(f"registry {self.host}: {request.get_method()} failed: {_line(str(err)) or type(err).__name__}") from None

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        asked = _retry_after(retry_after)
        seconds = asked if asked is not None else self.backoff * 2 ** (attempt - 1)
        return min(max(seconds, 0.0), self.max_wait)

    def _transient(self, err: urllib.error.HTTPError, attempt: int) -> bool:
        """Wait and say True when `err` is worth another try and tries are left."""
        if err.code not in TRANSIENT or attempt >= self.attempts:
            return False
        retry_after = err.headers.get("Retry-After") if err.headers is not None else None
        self.retries += 1
        time.sleep(self._wait(attempt, retry_after))
        return True

    def _fetch_token(self, challenge: str) -> tuple[str, float]:
        """A token for the challenge's scope and the monotonic time to stop sending it."""
        realm, params = self._realm(challenge)
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(url)
            if basic := self._basic():
                request.add_unredirected_header("Authorization", basic)
            try:
                _, _, raw = self._open(request)
                break
            except _Dropped as err:
                if attempt < self.attempts:
                    self.retries += 1
                    time.sleep(self._wait(attempt, None))
                    continue
                raise PipelineError(f"registry {self.host}: the token service failed after {attempt} attempts: {err.reason}") from None
            except urllib.error.HTTPError as err:
                if self._transient(err, attempt):
                    continue
                if err.code in TRANSIENT:
                    raise PipelineError(f"registry {self.host}: the token service answered HTTP {err.code} "
                                        f"after {attempt} attempts") from None
                raise RegistryAuthError(f"registry {self.host} refused the credentials (token service HTTP {err.code})") from None
        started = time.monotonic()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not all(33 <= ord(c) < 127 for c in token):
            raise RegistryAuthError(f"registry {self.host}: the token service answered no usable token")
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        seconds = float(lifetime) if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and 0 < lifetime < 1e9 \
            else DEFAULT_TOKEN_SECONDS
        self.token_fetches += 1
        return token, started + seconds - min(TOKEN_MARGIN, seconds / 10)

    def _token_for(self, key: str) -> str | None:
        token, until = self._tokens.get(key, ("", 0.0))
        if token and time.monotonic() < until:
            return token
        self._tokens.pop(key, None)
        return None

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        key = _scope_key(method, path)
        token = self._token_for(key)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
            # Unredirected: _AuthStaysInOrigin passes it on only within the registry's origin.
            if token:
                request.add_unredirected_header("Authorization", f"Bearer {token}")
            elif basic := self._basic():
                request.add_unredirected_header("Authorization", basic)
            try:
                return self._open(request)
            except _Dropped as err:
                if _idempotent(method, path, body) and attempt < self.attempts:
                    self.retries += 1
                    time.sleep(self._wait(attempt, None))
                    continue
                after = f" after {attempt} attempts" if attempt > 1 else ""
                raise PipelineError(f"registry {self.host}: {method} {path.split('?', 1)[0]} failed{after}: {err.reason}") from None
            except urllib.error.HTTPError as err:
                challenge = (err.headers.get("WWW-Authenticate", "") if err.headers is not None else "") or ""
                if err.code == 401 and not refreshed and challenge.lower().startswith("bearer"):
                    # No token yet, an expired one, or one for too small a scope: one fresh token.
                    self._tokens.pop(key, None)
                    token, until = self._fetch_token(challenge)
                    self._tokens[key] = (token, until)
                    refreshed = True
                    attempt -= 1  # a token fetch is not a transient fault
                    continue
                if err.code == 401:
                    who = f"user {self.username!r}" if self.username else "anonymous access"
                    raise RegistryAuthError(f"registry {self.host} refused {who} (HTTP 401)") from None
                if self._transient(err, attempt):
                    continue
                try:
                    detail = _line(err.read()[:300].decode("utf-8", "replace"))
                except (OSError, http.client.HTTPException):
                    detail = ""
                after = f" after {attempt} attempts" if err.code in TRANSIENT else ""
                kind = RegistryNotFound if err.code == 404 else PipelineError
                raise kind(f"registry {self.host}: {method} {path.split('?', 1)[0]} answered HTTP {err.code}{after}: {detail}") from None

    def check_auth(self, repositories: Iterable[str] = ()) -> None:
        """Raise RegistryAuthError now rather than after a long build.

        The API root says only whether the credentials are good (a token registry answers it
        for any valid token, whatever it may do). For each of `repositories` the client also
        asks for what a push needs: it starts a blob upload there (the registry grants that
        only with push access), so a pull-only user or token is refused here too. Nothing is
        written: the upload is never completed, and registries drop abandoned uploads
        (cancelling it would need `delete` access, which a pushing token need not have).
        go-containerregistry's remote.CheckPushPermission checks the same way."""
        self._call("GET", "/")
        for repository in repositories:
            try:
                self._call("POST", f"/{repository}/blobs/uploads/")
            except RegistryAuthError as err:
                raise RegistryAuthError(f"{err} when asked for push access to {repository}") from None

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a tag or digest."""
        _, headers, body = self._call("GET", f"/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        lowered = {k.lower(): v for k, v in headers.items()}
        media_type = lowered.get("content-type") or str(self._json(body, f"manifest {repository}:{reference}", dict).get("mediaType", ""))
        # Without the header the digest is the manifest's own (the bytes as stored).
        digest = lowered.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        if not _DIGEST.match(digest):
            raise PipelineError(f"registry {self.host}: manifest {repository}:{reference} came without a valid "
                                f"Docker-Content-Digest (got {_line(digest, 100)!r})")
        return body, _line(media_type, 200), digest

    def _json(self, body: bytes, what: str, kind: type[Any]) -> Any:
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, kind):
            raise PipelineError(f"registry {self.host}: {what} is not a JSON {kind.__name__}")
        return value

    def digest(self, repository: str, reference: str) -> str:
        return self.get_manifest(repository, reference)[2]

    def retag(self, repository: str, source: str, tag: str) -> str:
        """Point `tag` at the manifest `source` names; return the digest."""
        body, media_type, digest = self.get_manifest(repository, source)
        _, headers, _ = self._call("PUT", f"/{repository}/manifests/{tag}", body=body,
                                   headers={"Content-Type": media_type})
        lowered = {k.lower(): v for k, v in headers.items()}
        answered = lowered.get("docker-content-digest", digest)
        return answered if _DIGEST.match(answered) else digest

    def move_tag(self, repository: str, digest: str, tag: str) -> None:
        """Point `tag` at `digest` and read it back; raise PipelineError if it resolves elsewhere."""
        self.retag(repository, digest, tag)
        moved = self.digest(repository, tag)
        if moved != digest:
            raise PipelineError(f"{self.host}/{repository}:{tag} resolves to {moved}, expected {digest}")

    def promote(self, repository: str, pushed_tag: str, digest: str | None, followers: Sequence[str]) -> str:
        """After a push: confirm `pushed_tag` resolves to the digest the build reported, then
        point each of `followers` at it in order (the plan puts `latest` last), reading each back.
        Returns the digest; raises PipelineError at the first tag that cannot be moved."""
        pushed = self.digest(repository, pushed_tag)
        if digest and pushed != digest:
            raise PipelineError(f"{self.host}/{repository}:{pushed_tag} resolves to {pushed}, the build produced {digest}")
        for tag in followers:
            self.move_tag(repository, pushed, tag)
        return pushed

    def manifest_or_none(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """get_manifest, or None when the registry has no such tag or digest (HTTP 404)."""
        try:
            return self.get_manifest(repository, reference)
        except RegistryNotFound:
            return None

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload `data` as one blob (a monolithic upload) unless the repository has it; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            self._call("HEAD", f"/{repository}/blobs/{digest}")
            return digest
        except RegistryNotFound:
            pass
        _, headers, _ = self._call("POST", f"/{repository}/blobs/uploads/")
        location = {k.lower(): v for k, v in headers.items()}.get("location", "")
        path = self._upload_path(location)
        separator = "&" if "?" in path else "?"
        self._call("PUT", f"{path}{separator}digest={urllib.parse.quote(digest)}", body=data,
                   headers={"Content-Type": "application/octet-stream"})
        return digest

    def _upload_path(self, location: str) -> str:
        """The upload URL the registry answered, as a path below /v2 on this registry."""
        parts = urllib.parse.urlsplit(location)
        if parts.netloc and _origin(location) != _origin(self.base):
            raise PipelineError(f"registry {self.host}: the blob upload went to another origin ({_line(parts.netloc, 100)})")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if not path.startswith("/v2/"):
            raise PipelineError(f"registry {self.host}: the blob upload answered no usable Location")
        return path[len("/v2"):]

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Store `body` under `tag`; the digest of the bytes stored."""
        self._call("PUT", f"/{repository}/manifests/{tag}", body=body, headers={"Content-Type": media_type})
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def blob(self, repository: str, digest: str) -> bytes:
        return self._call("GET", f"/{repository}/blobs/{digest}")[2]

    def tags(self, repository: str) -> list[str]:
        _, _, body = self._call("GET", f"/{repository}/tags/list")
        data: dict[str, Any] = self._json(body, f"the tag list of {repository}", dict)
        tags = data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise PipelineError(f"registry {self.host}: the tag list of {repository} is not a list of names")
        return sorted(tags)
