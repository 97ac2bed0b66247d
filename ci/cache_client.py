"""Clients for GitHub's cache: the REST API (list, delete; GITHUB_TOKEN) and the v2 cache
service (read an entry, as BuildKit does; ACTIONS_RUNTIME_TOKEN + ACTIONS_RESULTS_URL).

Tokens go only into Authorization headers; errors never repeat them or signed URLs.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .cache_usage import BUILDKIT_VERSION, CacheEntry, index_layers
from .errors import PipelineError

_TWIRP = "twirp/github.actions.results.api.v1.CacheService/"


class RestCache:
    """`/repos/{repository}/actions/caches` on GitHub's REST API."""

    def __init__(self, repository: str, token: str, api_url: str = "https://api.github.com") -> None:
        self.repository, self._token, self.api_url = repository, token, api_url.rstrip("/")

    def _call(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        url = f"{self.api_url}/repos/{self.repository}/actions/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            raise PipelineError(f"GitHub REST {method} actions/{path}: HTTP {error.code} {detail}") from None
        except OSError as error:
            raise PipelineError(f"GitHub REST API unreachable at {self.api_url}: {error}") from None

    def entries(self) -> list[CacheEntry]:
        """Every cache entry of the repository (all refs), 100 a page."""
        found: list[CacheEntry] = []
        page = 1
        while True:
            _, body = self._call("GET", "caches", {"per_page": "100", "page": str(page)})
            batch = [CacheEntry.from_api(item) for item in body.get("actions_caches", [])]
            found += batch
            if not batch or len(found) >= int(body.get("total_count", 0)):
                return found
            page += 1

    def delete(self, entry: CacheEntry) -> None:
        """Delete one entry by key and ref (the same key may exist for other refs)."""
        self._call("DELETE", "caches", {"key": entry.key, "ref": entry.ref})


class RuntimeCache:
    """Reads entries from the v2 cache service as BuildKit does (GetCacheEntryDownloadURL, then
    the signed blob URL)."""

    def __init__(self, token: str, results_url: str) -> None:
        self._token, self.results_url = token, results_url.rstrip("/") + "/"

    def _twirp(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.results_url + _TWIRP + method, data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as error:
            code = ""
            with contextlib.suppress(ValueError, OSError):
                code = str(json.loads(error.read()).get("code", ""))
            raise PipelineError(f"cache service: {method} answered HTTP {error.code}{' ' + code if code else ''}") from None
        except OSError as error:
            raise PipelineError(f"cache service unreachable: {type(error).__name__}") from None

    def lookup(self, key: str, restore_keys: list[str] | tuple[str, ...] = (),
               version: str = BUILDKIT_VERSION) -> tuple[str, str] | None:
        """The entry under `key`, else the newest whose key starts with a restore key (in their
        order), as actions/cache restores: (the key it matched, its signed URL); None if none."""
        answer = self._twirp("GetCacheEntryDownloadURL", {"key": key, "restore_keys": list(restore_keys), "version": version})
        if not answer.get("ok"):
            return None
        return str(answer.get("matched_key") or key), str(answer["signed_download_url"])

    @staticmethod
    def read_url(signed_url: str, what: str) -> bytes:
        try:
            with urllib.request.urlopen(signed_url, timeout=300) as blob:
                return bytes(blob.read())
        except urllib.error.HTTPError as error:
            raise PipelineError(f"cache storage: downloading {what} answered HTTP {error.code}") from None
        except OSError as error:
            raise PipelineError(f"cache storage unreachable: {type(error).__name__}") from None

    def download(self, key: str) -> bytes | None:
        found = self.lookup(key)
        return self.read_url(found[1], key) if found is not None else None

    def upload(self, key: str, data: bytes, version: str) -> bool:
        """Create, upload (one Azure block blob) and finalize an entry; False if the key exists
        already (entries are immutable: the first writer wins, as for actions/cache)."""
        try:
            created = self._twirp("CreateCacheEntry", {"key": key, "version": version})
        except PipelineError as err:
            if "already_exists" in str(err) or "HTTP 409" in str(err):
                return False
            raise
        put = urllib.request.Request(created["signed_upload_url"], data=data, method="PUT",
                                     headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(put, timeout=600):
                pass
        except urllib.error.HTTPError as error:
            raise PipelineError(f"cache storage: uploading {key} answered HTTP {error.code}") from None
        except OSError as error:
            raise PipelineError(f"cache storage unreachable: {type(error).__name__}") from None
        self._twirp("FinalizeCacheEntryUpload", {"key": key, "version": version, "size_bytes": str(len(data))})
        return True

    def index_blobs(self, key: str) -> set[str] | None:
        """The blob digests a BuildKit index entry lists; None if this token cannot read it (it
        belongs to a ref the token has no read access to, or it is gone)."""
        data = self.download(key)
        return index_layers(json.loads(data)) if data is not None else None
