"""Clients for GitHub's cache: the REST API (list, delete; GITHUB_TOKEN) and the v2 cache
service (read an entry, as BuildKit does; ACTIONS_RUNTIME_TOKEN + ACTIONS_RESULTS_URL).

Tokens go only into Authorization headers; errors never repeat them or signed URLs.
"""

from __future__ import annotations

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

    def download(self, key: str) -> bytes | None:
        body = json.dumps({"key": key, "restore_keys": [], "version": BUILDKIT_VERSION}).encode()
        request = urllib.request.Request(self.results_url + _TWIRP + "GetCacheEntryDownloadURL", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            if not answer.get("ok"):
                return None
            with urllib.request.urlopen(answer["signed_download_url"], timeout=120) as blob:
                return bytes(blob.read())
        except urllib.error.HTTPError as error:
            raise PipelineError(f"cache service: reading {key} answered HTTP {error.code}") from None
        except OSError as error:
            raise PipelineError(f"cache service unreachable: {type(error).__name__}") from None

    def index_blobs(self, key: str) -> set[str] | None:
        """The blob digests a BuildKit index entry lists; None if this token cannot read it (it
        belongs to a ref the token has no read access to, or it is gone)."""
        data = self.download(key)
        return index_layers(json.loads(data)) if data is not None else None
