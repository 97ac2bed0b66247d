"""How much of the GitHub Actions cache each BuildKit scope holds, and what can be pruned.

BuildKit's gha backend stores every layer as its own entry, `buildkit-blob-1-<digest>` (content
addressed, so images and scopes share them), plus one immutable index per export,
`index-<scope>-1-<ref hash>#<generation>`, listing the blobs that build's cache needs. A build
only ever reads the newest index of its scope (a prefix lookup returns the newest entry), so:

  current index   the newest generation per (scope, ref)
  superseded      older generations: nothing reads them again
  unreferenced    blobs that no current index lists (left behind by older builds)

Both of the last two only cost quota (10 GB per repository by default; GitHub then evicts the
least recently used entries, current ones included). Entries are listed and deleted through
GitHub's REST API (GITHUB_TOKEN); index contents are read through the cache service itself
(ACTIONS_RUNTIME_TOKEN, ACTIONS_RESULTS_URL), as BuildKit reads them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re

INDEX_KEY = re.compile(r"^index-(?P<scope>.+)-1-(?P<ref_hash>[0-9a-f]{8})#(?P<generation>\d+)$")
BLOB_PREFIX = "buildkit-blob-1-"
# The pipeline's own entries: a cache mount's contents (ci.package_cache), one per input key.
PACKAGE_KEY = re.compile(r"^pkgcache-(?P<name>.+)-(?P<key>[0-9a-f]{24})$")
# go-actions-cache's constant entry version (BuildKit passes no paths): sha256("|go-actionscache-1.0").
BUILDKIT_VERSION = hashlib.sha256(b"|go-actionscache-1.0").hexdigest()
DEFAULT_QUOTA = 10 * 1000**3  # GitHub's default repository cache quota (10 GB)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One entry as GitHub's REST API lists it."""

    id: int
    key: str
    ref: str
    size: int
    created_at: str
    last_accessed_at: str
    version: str = ""

    @classmethod
    def from_api(cls, item: dict[str, object]) -> CacheEntry:
        return cls(id=int(str(item["id"])), key=str(item["key"]), ref=str(item.get("ref", "")),
                   size=int(str(item.get("size_in_bytes", 0))), created_at=str(item.get("created_at", "")),
                   last_accessed_at=str(item.get("last_accessed_at", "")), version=str(item.get("version", "")))

    @property
    def blob_digest(self) -> str | None:
        return self.key[len(BLOB_PREFIX):] if self.key.startswith(BLOB_PREFIX) else None

    def age_seconds(self, now: datetime.datetime) -> float:
        created = datetime.datetime.fromisoformat(self.created_at.replace("Z", "+00:00")) if self.created_at else now
        return (now - created).total_seconds()


@dataclasses.dataclass(frozen=True)
class IndexKey:
    scope: str
    ref_hash: str
    generation: int

    @classmethod
    def parse(cls, key: str) -> IndexKey | None:
        match = INDEX_KEY.match(key)
        return cls(match["scope"], match["ref_hash"], int(match["generation"])) if match else None


def ref_hash(ref: str) -> str:
    """The 8 hex digits BuildKit puts in an index key for the ref the token writes to."""
    return hashlib.sha256(ref.encode()).hexdigest()[:8]


@dataclasses.dataclass
class ScopeUsage:
    scope: str
    index_entries: int = 0  # all generations, every ref
    current_indexes: list[str] = dataclasses.field(default_factory=list)
    blobs: set[str] = dataclasses.field(default_factory=set)  # digests its current indexes list
    bytes: int = 0  # its indexes plus the blobs it references (shared blobs count in each scope)
    share_of_quota: float = 0.0
    unreadable: list[str] = dataclasses.field(default_factory=list)  # current indexes the token could not read

    def to_dict(self) -> dict[str, object]:
        return {"scope": self.scope, "bytes": self.bytes, "entries": self.index_entries + len(self.blobs),
                "blobs": len(self.blobs), "index_entries": self.index_entries, "current_indexes": self.current_indexes,
                "share_of_quota": round(self.share_of_quota, 4), "unreadable_indexes": self.unreadable}


@dataclasses.dataclass
class PackageCacheUsage:
    """One cache mount's saved contents (`pkgcache-<scope>-<mount>`): the newest entry per ref
    is what a lookup restores; older ones are kept only until pruned."""

    name: str
    entries: int = 0
    bytes: int = 0
    current: list[str] = dataclasses.field(default_factory=list)  # the newest key per ref
    current_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Usage:
    quota_bytes: int
    total_bytes: int
    total_entries: int
    scopes: list[ScopeUsage]
    prunable: list[tuple[CacheEntry, str]]  # (entry, why)
    recommendations: list[str]
    other_entries: int = 0  # entries that are neither BuildKit's nor the pipeline's (actions/cache and friends)
    package_caches: list[PackageCacheUsage] = dataclasses.field(default_factory=list)

    @property
    def prunable_bytes(self) -> int:
        return sum(e.size for e, _ in self.prunable)

    def to_dict(self) -> dict[str, object]:
        return {"quota_bytes": self.quota_bytes, "total_bytes": self.total_bytes, "total_entries": self.total_entries,
                "share_of_quota": round(self.total_bytes / self.quota_bytes, 4) if self.quota_bytes else None,
                "scopes": [s.to_dict() for s in self.scopes], "other_entries": self.other_entries,
                "package_caches": [p.to_dict() for p in self.package_caches],
                "prunable": [{"id": e.id, "key": e.key, "ref": e.ref, "size": e.size, "why": why} for e, why in self.prunable],
                "prunable_bytes": self.prunable_bytes, "recommendations": self.recommendations}


def analyse(entries: list[CacheEntry], index_blobs: dict[int, set[str] | None], quota_bytes: int = DEFAULT_QUOTA,
            now: datetime.datetime | None = None, min_age_seconds: float = 3600, scope_share: float | None = None) -> Usage:
    """Usage per scope and the prunable entries.

    `index_blobs` maps a current index entry's id to the blob digests it lists (None: it could
    not be read). Entries younger than `min_age_seconds` are never prunable: a build may be
    exporting right now (blobs first, its index last). While any current index is unreadable,
    no blob is called unreferenced (it may be that index's), only superseded indexes are.
    `scope_share` is the part of the quota one scope may use before `--cache-mode=min` is
    recommended (default: an equal share per scope).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    indexes = [(e, k) for e in entries if (k := IndexKey.parse(e.key)) is not None]
    newest: dict[tuple[str, str, str], tuple[CacheEntry, IndexKey]] = {}
    for entry, key in indexes:
        slot = (key.scope, key.ref_hash, entry.ref)
        if slot not in newest or (key.generation, entry.id) > (newest[slot][1].generation, newest[slot][0].id):
            newest[slot] = (entry, key)
    current_ids = {entry.id for entry, _ in newest.values()}
    scopes: dict[str, ScopeUsage] = {}
    for entry, key in indexes:
        usage = scopes.setdefault(key.scope, ScopeUsage(key.scope))
        usage.index_entries += 1
        usage.bytes += entry.size
    any_unreadable = False
    for entry, key in newest.values():
        usage = scopes[key.scope]
        usage.current_indexes.append(entry.key)
        listed = index_blobs.get(entry.id)
        if listed is None:
            usage.unreadable.append(entry.key)
            any_unreadable = True
        else:
            usage.blobs |= listed
    blobs = {e.blob_digest: e for e in entries if e.blob_digest}
    for usage in scopes.values():
        usage.bytes += sum(blobs[d].size for d in usage.blobs if d in blobs)
    total = sum(e.size for e in entries)
    share = scope_share if scope_share is not None else (1 / len(scopes) if scopes else 1.0)
    recommendations = []
    for usage in sorted(scopes.values(), key=lambda u: u.scope):
        usage.share_of_quota = usage.bytes / quota_bytes if quota_bytes else 0.0
        if usage.share_of_quota > share:
            recommendations.append(f"scope {usage.scope} holds {_human(usage.bytes)}, {usage.share_of_quota:.0%} of the "
                                   f"{_human(quota_bytes)} quota (its share: {share:.0%}): build it with --cache-mode=min")
    referenced = set().union(*(u.blobs for u in scopes.values())) if scopes else set()
    prunable: list[tuple[CacheEntry, str]] = []
    for entry in entries:
        if entry.age_seconds(now) < min_age_seconds:
            continue
        parsed = IndexKey.parse(entry.key)
        if parsed is not None and entry.id not in current_ids:
            prunable.append((entry, f"superseded index of scope {parsed.scope} (generation {parsed.generation})"))
        elif entry.blob_digest and not any_unreadable and entry.blob_digest not in referenced:
            prunable.append((entry, "blob no current index references"))
    packages, superseded = _package_caches(entries)
    prunable += [(e, f"superseded package cache of {name}: a newer one is restored instead")
                 for e, name in superseded if e.age_seconds(now) >= min_age_seconds]
    if total > quota_bytes * 0.9:
        recommendations.append(f"the cache holds {total / quota_bytes:.0%} of its quota: GitHub evicts the least recently used "
                               "entries past it; prune, or use --cache-mode=min")
    other = sum(1 for e in entries if not e.blob_digest and IndexKey.parse(e.key) is None and not PACKAGE_KEY.match(e.key))
    return Usage(quota_bytes, total, len(entries), sorted(scopes.values(), key=lambda u: u.scope), prunable, recommendations,
                 other, packages)


def _package_caches(entries: list[CacheEntry]) -> tuple[list[PackageCacheUsage], list[tuple[CacheEntry, str]]]:
    """Usage per cache mount, and the entries no lookup restores any more (older than the
    newest of their mount and ref)."""
    mounts: dict[str, PackageCacheUsage] = {}
    newest: dict[tuple[str, str], CacheEntry] = {}
    found = [(e, m["name"]) for e in entries if (m := PACKAGE_KEY.match(e.key))]
    for entry, name in found:
        usage = mounts.setdefault(name, PackageCacheUsage(name))
        usage.entries += 1
        usage.bytes += entry.size
        slot = (name, entry.ref)
        if slot not in newest or (entry.created_at, entry.id) > (newest[slot].created_at, newest[slot].id):
            newest[slot] = entry
    for (name, _), entry in sorted(newest.items()):
        mounts[name].current.append(entry.key)
        mounts[name].current_bytes += entry.size
    current = {e.id for e in newest.values()}
    return [mounts[n] for n in sorted(mounts)], [(e, n) for e, n in found if e.id not in current]


def index_layers(index_json: dict[str, object]) -> set[str]:
    """The blob digests a BuildKit cache index (v1 CacheConfig) lists."""
    layers = index_json.get("layers")
    if not isinstance(layers, list):
        return set()
    return {str(layer["blob"]) for layer in layers if isinstance(layer, dict) and "blob" in layer}


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def human(size: float) -> str:
    return _human(size)
