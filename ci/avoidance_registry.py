"""Build avoidance in the registry: find, record and reuse an image by its input key.

The record is a tiny OCI artifact tagged `inputs-<key>` in the image's own repository: an
empty config and layer (OCI's empty descriptor) and annotations naming the image digest, the
commit it was built for and the cache scope its build exported to. Why an artifact and not
a tag on the image itself: the image is not changed (no annotation, no label), and one GET
answers everything a skip reports (`built for <commit>`), which a tag on the image could only
say through its name or a walk over every SHA tag. Registries that keep OCI 1.1 artifacts
(distribution >= 2.8, GHCR) store it like any manifest.

A skip points the SHA tag at the recorded digest by copying the image's manifest (then the
followers, `latest` last) and reads each back, as a push's tag moves do (ci.registry.promote).
Every registry failure on the way in is "build as usual, and say why"; never a failed build.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Sequence

from . import avoidance
from .errors import InputError, PipelineError
from .explain.snapshot import Snapshot
from .model import BuildRequest
from .progress import BuildLog
from .registry import Registry

ARTIFACT_TYPE = "application/vnd.dimbybot2.inputs.v1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
_NS = "dev.dimbybot2.inputs."


@dataclasses.dataclass(frozen=True)
class Record:
    key: str
    image: str  # the manifest digest built with these inputs
    commit: str
    cache: str  # where that build exported its cache ("" when it did not)


@dataclasses.dataclass(frozen=True)
class Decision:
    """Skip or build, and the sentence that says why."""

    key: avoidance.InputKey
    record: Record | None
    skip: bool
    detail: str


def cache_target(request: BuildRequest) -> str:
    """The scope a build exports its cache to ("" for none): `gha:<scope>`, `registry:<ref>`."""
    for spec in request.cache_to:
        if spec.type == "gha" and spec.attr("scope"):
            return f"gha:{spec.attr('scope')}"
        if spec.type == "registry" and spec.attr("ref"):
            return f"registry:{spec.attr('ref')}"
    return ""


def imports_own_scope(request: BuildRequest) -> bool:
    """The build imports the very scope it exports to."""
    target = cache_target(request)
    imports = {f"{s.type}:{s.attr('scope') if s.type == 'gha' else s.attr('ref')}" for s in request.cache_from}
    return bool(target) and target in imports


def defers_export(request: BuildRequest, recorded_cache: str | None) -> bool:
    """Part 3 of issue 19: the record says this scope's index was written from these very
    inputs, and the build imports that scope. Then build without the export, and export
    afterwards only if `export_needed` says so (both drivers)."""
    return (bool(request.cache_to) and bool(recorded_cache) and recorded_cache == cache_target(request)
            and imports_own_scope(request))


def export_needed(request: BuildRequest, log: BuildLog, imported: bool | None) -> bool:
    """An export only rewrites the scope's own index when every step hit and the import came
    from that very scope (`imported`: the import's status); anything else must be exported."""
    every_hit = bool(log.cacheable) and all(step.cached and not step.rerun_because for step in log.cacheable)
    return not (every_hit and imported is True and imports_own_scope(request))


def export_skipped_detail(request: BuildRequest) -> str:
    return f"skipped: every step hit and the import came from the scope's own index ({cache_target(request)})"


def manifest(record: Record) -> bytes:
    empty = {"mediaType": EMPTY_TYPE, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
             "size": len(EMPTY)}
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE, "config": empty, "layers": [empty],
        "annotations": {_NS + "key": record.key, _NS + "image": record.image, _NS + "commit": record.commit,
                        _NS + "cache": record.cache},
    }, sort_keys=True).encode()


def lookup(registry: Registry, repository: str, key: str) -> Record | None:
    """The record of `key`, if the repository has it and still has the image it names."""
    found = registry.manifest_or_none(repository, avoidance.TAG_PREFIX + key)
    if found is None:
        return None
    try:
        notes = json.loads(found[0]).get("annotations") or {}
    except (ValueError, AttributeError):
        return None
    record = Record(str(notes.get(_NS + "key", "")), str(notes.get(_NS + "image", "")),
                    str(notes.get(_NS + "commit", "")), str(notes.get(_NS + "cache", "")))
    if record.key != key or not record.image.startswith("sha256:"):
        return None
    image = registry.manifest_or_none(repository, record.image)
    return record if image is not None and image[2] == record.image else None


def record(registry: Registry, repository: str, rec: Record) -> None:
    """Tag the record of a pushed image as `inputs-<key>`."""
    registry.put_blob(repository, EMPTY)
    registry.put_manifest(repository, avoidance.TAG_PREFIX + rec.key, manifest(rec), MANIFEST_TYPE)


def skip(registry: Registry, repository: str, rec: Record, tags: Sequence[str]) -> str:
    """Point the SHA tag, then the followers, at the recorded image; each read back."""
    registry.retag(repository, rec.image, tags[0])
    return registry.promote(repository, tags[0], rec.image, tags[1:])


def decide(snapshot: Snapshot, request: BuildRequest, builder: str, resolve: avoidance.Resolver,
           registry: Registry, repository: str, no_skip: bool = False) -> Decision:
    """Compute the key and look it up. Every failure is a build, with the reason."""
    key = avoidance.input_key(snapshot, request, builder, resolve)
    if key.key is None:
        return Decision(key, None, False, f"built: no input key ({key.reason})")
    try:
        found = lookup(registry, repository, key.key)
    except PipelineError as err:
        return Decision(key, None, False, f"built: the input-key lookup failed, built as without avoidance ({str(err)[:300]})")
    if found is None:
        return Decision(key, None, False, f"built: no image with these inputs yet (key {key.key[:12]})")
    if no_skip:
        return Decision(key, found, False, f"built: --no-skip (same inputs as {found.image})")
    return Decision(key, found, True, f"skipped: same inputs as {found.image} (built for {found.commit or 'an unknown commit'})")


@dataclasses.dataclass(frozen=True)
class Mirror:
    """One registry mirror as buildkitd.toml names it: `host[:port][/path prefix]`."""

    host: str
    prefix: str = ""
    plain_http: bool = False


def mirrors_from_buildkitd_toml(text: str) -> dict[str, tuple[Mirror, ...]]:
    """The mirrors a buildkitd.toml gives each upstream registry (`[registry."docker.io"]
    mirrors = [...]`), and whether each mirror speaks plain HTTP (its own `http = true`). The
    key must resolve base images where BuildKit pulls them from, or a mirror's copy of a tag
    and the upstream's could disagree; BuildKit tries the mirrors first, then the upstream."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError("--buildkit-config", f"not TOML: {err}") from None
    registries = config.get("registry", {})
    if not isinstance(registries, dict):
        raise InputError("--buildkit-config", "[registry] must be a table of registries")
    found: dict[str, tuple[Mirror, ...]] = {}
    for upstream, settings in registries.items():
        names = settings.get("mirrors", []) if isinstance(settings, dict) else []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise InputError("--buildkit-config", f"registry.{upstream}.mirrors must be a list of host[:port][/path]")
        mirrors = []
        for name in names:
            host, _, prefix = name.partition("/")
            own = registries.get(host, {})
            mirrors.append(Mirror(host, prefix.strip("/"), bool(isinstance(own, dict) and own.get("http"))))
        if mirrors:
            found[upstream] = tuple(mirrors)
    return found


class RegistryResolver:
    """Base image digests from their registries, as BuildKit would resolve them now (through
    the mirrors it is configured with first). The target registry's credentials go only to
    the target registry's host."""

    def __init__(self, host: str | None = None, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, mirrors: dict[str, tuple[Mirror, ...]] | None = None) -> None:
        self._host, self._username, self._password, self._timeout = host, username, password, timeout
        self._mirrors = mirrors or {}
        self._clients: dict[str, Registry] = {}
        self._digests: dict[str, str] = {}

    def _client(self, api: str, own: bool, plain_http: bool = False) -> Registry:
        if api not in self._clients:
            self._clients[api] = Registry(api, self._username if own else None, self._password if own else None,
                                          timeout=self._timeout, attempts=2, insecure=plain_http)
        return self._clients[api]

    def __call__(self, ref: str) -> str:
        if ref not in self._digests:
            host, repository, reference = avoidance.split_ref(ref)
            for mirror in self._mirrors.get(host, ()):
                try:
                    path = f"{mirror.prefix}/{repository}" if mirror.prefix else repository
                    self._digests[ref] = self._client(mirror.host, mirror.host == self._host, mirror.plain_http).digest(path, reference)
                    return self._digests[ref]
                except PipelineError:
                    continue  # as BuildKit does: the next mirror, then the upstream
            api = avoidance.API_HOSTS.get(host, host)
            self._digests[ref] = self._client(api, host == self._host).digest(repository, reference)
        return self._digests[ref]
