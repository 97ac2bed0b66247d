"""A small OCI distribution (Registry API v2) client: check credentials, resolve, retag.

Moving a tag is a manifest copy: the manifest stored under the SHA tag is PUT again under
`latest`, byte for byte, so both tags resolve to the same digest by construction.
Basic and Bearer (token service) authentication are supported. Plain HTTP or HTTPS is
`tags.plain_http`'s decision (loopback hosts, and registries marked `insecure`), the same one
the pipeline's push makes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from .errors import PipelineError
from .tags import plain_http

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class RegistryAuthError(PipelineError):
    """The registry refused the credentials."""


@dataclasses.dataclass
class Registry:
    host: str
    username: str | None = dataclasses.field(default=None)
    password: str | None = dataclasses.field(default=None, repr=False)
    timeout: float = 30.0
    insecure: bool = False  # known to speak plain HTTP only (see tags.plain_http)
    _token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def base(self) -> str:
        scheme = "http" if plain_http(self.host, self.insecure) else "https"
        return f"{scheme}://{self.host}/v2"

    def _basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch_token(self, challenge: str) -> None:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise PipelineError(f"registry {self.host}: bearer challenge without realm")
        request = urllib.request.Request(realm + "?" + urllib.parse.urlencode(params))
        if basic := self._basic():
            request.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = json.load(response)
        except urllib.error.HTTPError as err:
            raise RegistryAuthError(f"registry {self.host} refused the credentials (token service HTTP {err.code})") from None
        self._token = body.get("token") or body.get("access_token")

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, retry: bool = True) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        elif basic := self._basic():
            request.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code == 401 and retry and challenge.lower().startswith("bearer"):
                self._fetch_token(challenge)
                return self._call(method, path, body, headers, retry=False)
            if err.code == 401:
                who = f"user {self.username!r}" if self.username else "anonymous access"
                raise RegistryAuthError(f"registry {self.host} refused {who} (HTTP 401)") from None
            detail = err.read()[:300].decode("utf-8", "replace")
            raise PipelineError(f"registry {self.host}: {method} {path} answered HTTP {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            raise PipelineError(f"registry {self.host} is unreachable: {err.reason}") from None

    def check_auth(self) -> None:
        """Raise RegistryAuthError now rather than after a long build."""
        self._call("GET", "/")

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a tag or digest."""
        _, headers, body = self._call("GET", f"/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        lowered = {k.lower(): v for k, v in headers.items()}
        media_type = lowered.get("content-type") or json.loads(body).get("mediaType", "")
        digest = lowered.get("docker-content-digest", "")
        return body, media_type, digest

    def digest(self, repository: str, reference: str) -> str:
        return self.get_manifest(repository, reference)[2]

    def retag(self, repository: str, source: str, tag: str) -> str:
        """Point `tag` at the manifest `source` names; return the digest."""
        body, media_type, digest = self.get_manifest(repository, source)
        _, headers, _ = self._call("PUT", f"/{repository}/manifests/{tag}", body=body,
                                   headers={"Content-Type": media_type})
        lowered = {k.lower(): v for k, v in headers.items()}
        return lowered.get("docker-content-digest", digest)

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

    def blob(self, repository: str, digest: str) -> bytes:
        return self._call("GET", f"/{repository}/blobs/{digest}")[2]

    def tags(self, repository: str) -> list[str]:
        _, _, body = self._call("GET", f"/{repository}/tags/list")
        data: dict[str, Any] = json.loads(body)
        return sorted(data.get("tags") or [])
