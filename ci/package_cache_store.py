"""Where saved package caches live: the build's own cache backend.

  gha       an entry of GitHub's cache (v2 service) per mount and key: `pkgcache-<scope>-<mount>-<key>`,
            looked up with the mount's prefix as restore key (the newest entry of that mount wins
            when the key is new), as actions/cache does
  registry  an OCI artifact in the cache repository, tagged with the key, and the mount's prefix
            + `latest` moved to the newest one (registries list tags without dates)
  engine    nothing to do: BuildKit's state persists, and the cache mount with it

Credentials: the gha token and the registry password are the ones the build already has; they
go only into Authorization headers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Protocol

from .avoidance_registry import EMPTY, EMPTY_TYPE, MANIFEST_TYPE
from .cache_client import RuntimeCache
from .errors import PipelineError
from .registry import Registry

# GitHub scopes an entry by (key, version); this version keeps package archives apart from
# BuildKit's entries and from other tools' (bumped when the archive format changes).
GHA_VERSION = hashlib.sha256(b"dimbybot2-package-cache-tar-1").hexdigest()
ARTIFACT_TYPE = "application/vnd.dimbybot2.package-cache.v1"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
KEY_ANNOTATION = "dimbybot2.package-cache.key"


@dataclasses.dataclass(frozen=True)
class Found:
    """A saved archive: the key it is under, and how to read it (reading is the costly part)."""

    key: str
    read: Callable[[], bytes]


class PackageStore(Protocol):
    name: str

    def find(self, key: str, restore_prefix: str) -> Found | None:
        """The exact key, else the newest entry of the prefix; None if there is none."""

    def save(self, key: str, restore_prefix: str, archive: bytes) -> bool:
        """Store the archive under key; False if that key was taken already."""


class GhaPackageStore:
    name = "gha"

    def __init__(self, token: str, results_url: str) -> None:
        self._cache = RuntimeCache(token, results_url)

    def find(self, key: str, restore_prefix: str) -> Found | None:
        found = self._cache.lookup(key, [restore_prefix], version=GHA_VERSION)
        if found is None:
            return None
        matched, url = found
        return Found(matched, lambda: RuntimeCache.read_url(url, matched))

    def save(self, key: str, restore_prefix: str, archive: bytes) -> bool:
        return self._cache.upload(key, archive, GHA_VERSION)


class RegistryPackageStore:
    name = "registry"

    def __init__(self, registry: Registry, repository: str) -> None:
        self.registry, self.repository = registry, repository

    def find(self, key: str, restore_prefix: str) -> Found | None:
        for tag in (key, restore_prefix + "latest"):
            found = self.registry.manifest_or_none(self.repository, tag)
            if found is None:
                continue
            manifest = json.loads(found[0])
            layers = manifest.get("layers") or []
            if manifest.get("artifactType") != ARTIFACT_TYPE or len(layers) != 1:
                raise PipelineError(f"{self.repository}:{tag} is not a package cache")
            source = str(manifest.get("annotations", {}).get(KEY_ANNOTATION, tag))
            return Found(source, functools.partial(self._blob, str(layers[0]["digest"])))
        return None

    def _blob(self, digest: str) -> bytes:
        data = self.registry.blob(self.repository, digest)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise PipelineError(f"{self.repository}: the package cache blob does not match its digest {digest}")
        return data

    def save(self, key: str, restore_prefix: str, archive: bytes) -> bool:
        if self.registry.manifest_or_none(self.repository, key) is not None:
            return False
        layer = self.registry.put_blob(self.repository, archive)
        config = self.registry.put_blob(self.repository, EMPTY)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "digest": config, "size": len(EMPTY)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer, "size": len(archive)}],
            "annotations": {KEY_ANNOTATION: key},
        }, separators=(",", ":")).encode()
        self.registry.put_manifest(self.repository, key, manifest, MANIFEST_TYPE)
        self.registry.put_manifest(self.repository, restore_prefix + "latest", manifest, MANIFEST_TYPE)
        return True
