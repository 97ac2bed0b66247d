"""Compare two images: are they the same bytes, and if not, exactly what differs?

Inputs: OCI layout directories or tarballs (`--output type=oci`), or registry references
(`host/repo:tag` or `host/repo@sha256:...`). The comparison goes top-down like diffoci:
index/manifest digests, then the platform manifest, then config fields, then each layer
file by file (path, type, mode, owner, size, content, mtime, link target).

Attestation manifests (provenance/SBOM) are skipped: they carry a fresh invocation id every
build. The digests compared and reported are those of the platform image manifest.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pathlib
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from .errors import InputError, PipelineError
from .registry import Registry

Kind = Literal["added", "removed", "content", "mode", "owner", "mtime", "link", "config", "manifest"]
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclasses.dataclass(frozen=True)
class Difference:
    layer: int | None
    path: str | None
    kind: Kind
    detail: str


@dataclasses.dataclass(frozen=True)
class Comparison:
    digest_a: str
    digest_b: str
    differences: tuple[Difference, ...]

    @property
    def identical(self) -> bool:
        return self.digest_a == self.digest_b and not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "digest_a": self.digest_a, "digest_b": self.digest_b,
                "differences": [dataclasses.asdict(d) for d in self.differences]}


class Source(Protocol):
    def root(self) -> tuple[str, str, bytes]: ...  # (media type, digest, body) of the top-level manifest/index

    def blob(self, digest: str) -> bytes: ...

    def manifest(self, digest: str) -> bytes: ...  # a manifest an index lists


class LayoutSource:
    """An OCI image layout directory."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        index_file = path / "index.json"
        if not index_file.is_file():
            raise InputError("IMAGE", f"{path} is not an OCI layout (no index.json)")
        self.index = json.loads(index_file.read_text())

    def root(self) -> tuple[str, str, bytes]:
        manifests = self.index.get("manifests") or []
        if not manifests:
            raise InputError("IMAGE", f"{self.path}: index.json lists no manifest")
        top = manifests[0]
        return top["mediaType"], top["digest"], self.blob(top["digest"])

    def blob(self, digest: str) -> bytes:
        algorithm, _, hexdigest = digest.partition(":")
        return (self.path / "blobs" / algorithm / hexdigest).read_bytes()

    def manifest(self, digest: str) -> bytes:
        return self.blob(digest)  # a layout keeps manifests among its blobs


class RegistrySource:
    def __init__(self, reference: str, username: str | None = None, password: str | None = None) -> None:
        host, _, rest = reference.partition("/")
        if not rest or ("." not in host and ":" not in host and host != "localhost"):
            raise InputError("IMAGE", f"{reference!r} is not host/repository:tag or host/repository@sha256:...")
        if "@" in rest:
            self.repository, self.reference = rest.split("@", 1)
        elif ":" in rest.rsplit("/", 1)[-1]:
            self.repository, self.reference = rest.rsplit(":", 1)
        else:
            self.repository, self.reference = rest, "latest"
        self.registry = Registry(host, username, password)

    def root(self) -> tuple[str, str, bytes]:
        body, media_type, digest = self.registry.get_manifest(self.repository, self.reference)
        return media_type, digest or "sha256:" + hashlib.sha256(body).hexdigest(), body

    def blob(self, digest: str) -> bytes:
        return self.registry.blob(self.repository, digest)

    def manifest(self, digest: str) -> bytes:
        """From the manifests endpoint: a registry keeps manifests apart from blobs
        (distribution answers BLOB_UNKNOWN for a manifest's digest at /blobs/)."""
        body, _, got = self.registry.get_manifest(self.repository, digest)
        if got != digest:
            raise PipelineError(f"registry {self.registry.host}: {self.repository}@{digest} answered {got}")
        return body


def open_source(spec: str, tmp: pathlib.Path, username: str | None = None, password: str | None = None) -> Source:
    path = pathlib.Path(spec)
    if path.is_dir():
        return LayoutSource(path)
    if path.is_file():
        dest = tmp / f"layout-{len(list(tmp.iterdir()))}"
        try:
            extract_files(path, dest)
        except tarfile.TarError as err:
            raise InputError("IMAGE", f"{spec}: not a readable OCI layout tarball ({err})") from None
        return LayoutSource(dest)
    if "/" in spec and not spec.startswith((".", "/")):
        return RegistrySource(spec, username, password)
    raise InputError("IMAGE", f"{spec!r} is neither an OCI layout (directory or tarball) nor a registry reference")


def extract_files(tarball: pathlib.Path, dest: pathlib.Path) -> None:
    """Unpack a tarball of directories and regular files only (an OCI layout as BuildKit writes
    it, a source distribution) without trusting its member names.

    Why not `extractall(filter="data")`: the filter arrived in Python 3.11.4, and Debian 12's
    own python3 is 3.11.2. An OCI layout never needs links, devices or paths outside itself, so
    anything else is refused as a bad tarball on every interpreter alike.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with tarfile.open(tarball) as archive:
        for member in archive:
            parts = pathlib.PurePosixPath(member.name).parts
            if not parts or member.name.startswith("/") or ".." in parts:
                raise tarfile.TarError(f"unsafe path {member.name!r}")
            target = root.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                with target.open("wb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out)
            else:
                raise tarfile.TarError(f"{member.name!r} is not a regular file or directory")


def platform_manifest(source: Source) -> tuple[str, dict[str, Any]]:
    """(digest, manifest) of the image manifest, descending through indexes past attestations."""
    media_type, digest, body = source.root()
    data = json.loads(body)
    while (data.get("mediaType") or media_type) in INDEX_TYPES:
        candidates = [m for m in data.get("manifests", [])
                      if (m.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]
        if not candidates:
            raise InputError("IMAGE", "index holds no image manifest")
        chosen = next((m for m in candidates if (m.get("platform") or {}).get("architecture") == "amd64"), candidates[0])
        digest, media_type = chosen["digest"], chosen.get("mediaType", "")
        data = json.loads(source.manifest(digest))
    return digest, data


@dataclasses.dataclass(frozen=True)
class Entry:
    type: str
    mode: int
    owner: str
    size: int
    sha256: str
    mtime: int
    link: str


def layer_entries(blob: bytes) -> dict[str, Entry]:
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    entries: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/") or "."
            digest = ""
            if member.isfile():
                handle = archive.extractfile(member)
                digest = hashlib.sha256(handle.read() if handle else b"").hexdigest()
            kind = "file" if member.isfile() else "dir" if member.isdir() else "symlink" if member.issym() else \
                "hardlink" if member.islnk() else "other"
            entries[name] = Entry(kind, member.mode, f"{member.uid}:{member.gid}", member.size, digest, int(member.mtime),
                                  member.linkname)
    return entries


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _compare_layers(index: int, a: dict[str, Entry], b: dict[str, Entry]) -> list[Difference]:
    found: list[Difference] = []
    for path in sorted(set(a) | set(b)):
        x, y = a.get(path), b.get(path)
        if x is None:
            found.append(Difference(index, path, "added", f"only in B ({y.type if y else ''})"))
        elif y is None:
            found.append(Difference(index, path, "removed", f"only in A ({x.type})"))
        elif x.type != y.type or x.sha256 != y.sha256 or x.size != y.size:
            found.append(Difference(index, path, "content", f"{x.type} {x.size} B sha256:{x.sha256[:12]} -> "
                                                            f"{y.type} {y.size} B sha256:{y.sha256[:12]}"))
        elif x.link != y.link:
            found.append(Difference(index, path, "link", f"{x.link} -> {y.link}"))
        elif x.mode != y.mode:
            found.append(Difference(index, path, "mode", f"{oct(x.mode)} -> {oct(y.mode)}"))
        elif x.owner != y.owner:
            found.append(Difference(index, path, "owner", f"{x.owner} -> {y.owner}"))
        elif x.mtime != y.mtime:
            found.append(Difference(index, path, "mtime", f"{x.mtime} -> {y.mtime}"))
    return found


def compare(a: Source, b: Source) -> Comparison:
    digest_a, manifest_a = platform_manifest(a)
    digest_b, manifest_b = platform_manifest(b)
    if digest_a == digest_b:
        return Comparison(digest_a, digest_b, ())
    differences: list[Difference] = []
    config_a = json.loads(a.blob(manifest_a["config"]["digest"]))
    config_b = json.loads(b.blob(manifest_b["config"]["digest"]))
    flat_a, flat_b = dict(_flatten(config_a)), dict(_flatten(config_b))
    for key in sorted(set(flat_a) | set(flat_b)):
        if key.startswith("rootfs.diff_ids"):
            continue  # the layers say it, file by file
        if flat_a.get(key) != flat_b.get(key):
            differences.append(Difference(None, None, "config", f"{key}: {flat_a.get(key)!r} -> {flat_b.get(key)!r}"))
    layers_a, layers_b = manifest_a.get("layers", []), manifest_b.get("layers", [])
    if len(layers_a) != len(layers_b):
        differences.append(Difference(None, None, "manifest", f"{len(layers_a)} layers -> {len(layers_b)} layers"))
    for index in range(max(len(layers_a), len(layers_b))):
        la = layers_a[index] if index < len(layers_a) else None
        lb = layers_b[index] if index < len(layers_b) else None
        if la and lb and la["digest"] == lb["digest"]:
            continue
        entries_a = layer_entries(a.blob(la["digest"])) if la else {}
        entries_b = layer_entries(b.blob(lb["digest"])) if lb else {}
        by_files = _compare_layers(index, entries_a, entries_b)
        if not by_files and la and lb:
            by_files = [Difference(index, None, "manifest", f"layer {la['digest'][:19]} -> {lb['digest'][:19]}: same files, "
                                                            "different bytes (compression or tar headers)")]
        differences.extend(by_files)
    for key in ("mediaType", "annotations"):
        if manifest_a.get(key) != manifest_b.get(key):
            differences.append(Difference(None, None, "manifest", f"{key}: {manifest_a.get(key)!r} -> {manifest_b.get(key)!r}"))
    return Comparison(digest_a, digest_b, tuple(differences))


def compare_specs(spec_a: str, spec_b: str, username: str | None = None, password: str | None = None) -> Comparison:
    with tempfile.TemporaryDirectory(prefix="dimbybot-verify-") as tmp:
        return compare(open_source(spec_a, pathlib.Path(tmp), username, password),
                       open_source(spec_b, pathlib.Path(tmp), username, password))


def main(argv: list[str]) -> int:
    """`python -m ci.verify A B`: JSON on stdout; exit 0 identical, 1 different, 2 error
    (standard library only, for running inside a pipeline container)."""
    import sys

    if len(argv) != 2:
        print("usage: python -m ci.verify A B", file=sys.stderr)
        return 2
    try:
        result = compare_specs(argv[0], argv[1])
    except (InputError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.identical else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
