"""Cache backends: which BuildKit cache imports and exports a build uses.

  gha       GitHub Actions cache, v2 service. One scope per image, so images never
            overwrite each other's index. Credentials stay in the environment
            (ACTIONS_RUNTIME_TOKEN, ACTIONS_RESULTS_URL): buildctl and buildx fill
            `token` and `url_v2` from there, so they never appear in argv or logs.
  registry  an OCI image-manifest cache per scope in a registry (`<ref>:<scope>`).
  engine    no import/export: BuildKit's own state (a Dagger cache volume, or the local
            builder) is the cache. Right for laptops.
  none      no cache at all (`--no-cache`).
  auto      gha when the GitHub tokens are given, else registry when a cache registry is
            given, else engine.

Exports never fail a build (`ignore-error=true`); a failed import only means a cold build.
Whether either worked is read back from BuildKit's progress (see progress.py).
"""

from __future__ import annotations

import dataclasses
import enum
import re

from . import tags
from .config import ImageConfig
from .errors import InputError
from .model import CacheSpec
from .progress import redact

GHA_ENV = ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL")
_BUST = re.compile(r"[A-Za-z0-9._-]{0,40}")
_TIMEOUT = re.compile(r"\d{1,9}(ms|s|m|h)")


class Backend(enum.StrEnum):
    AUTO = "auto"
    GHA = "gha"
    REGISTRY = "registry"
    ENGINE = "engine"
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class CacheOptions:
    backend: Backend = Backend.AUTO
    mode: str = "max"
    bust: str = ""
    cache_ref: str | None = None  # registry backend: repository for cache manifests
    gha_tokens: bool = False  # whether ACTIONS_* values were given (never the values)
    export_timeout: str = "10m"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise InputError("--cache-mode", f"must be 'max' or 'min', got {self.mode[:40]!r}")
        if not _BUST.fullmatch(self.bust):
            raise InputError("--cache-bust", f"letters, digits, '.', '_' and '-' only (40 at most), got {self.bust[:60]!r}")
        if not _TIMEOUT.fullmatch(self.export_timeout):
            raise InputError("--cache-timeout", f"a duration like 10m or 90s, got {self.export_timeout[:40]!r}")
        if self.cache_ref is not None:
            validate_cache_ref(self.cache_ref)


def validate_cache_ref(ref: str, argument: str = "--cache-ref") -> str:
    """A registry repository (`host[:port]/path`, no tag): it lands in BuildKit's comma-separated
    cache spec (`type=registry,ref=<ref>:<scope>`), so nothing but a repository may pass
    (`x,registry.insecure=true,ref=evil.invalid/steal` must not add attributes)."""
    repository = tags.validate_registry(ref, argument)
    if repository != ref or "/" not in repository:
        raise InputError(argument, "a registry repository such as ghcr.io/owner/dimbybot2-cache (host/path, no tag or scheme)")
    return repository


def resolve(options: CacheOptions) -> Backend:
    """The backend `auto` stands for; an explicit choice must have what it needs."""
    if options.backend == Backend.AUTO:
        if options.gha_tokens:
            return Backend.GHA
        if options.cache_ref:
            return Backend.REGISTRY
        return Backend.ENGINE
    if options.backend == Backend.GHA and not options.gha_tokens:
        raise InputError("--cache", "gha needs the GitHub cache token and results URL (ACTIONS_RUNTIME_TOKEN, ACTIONS_RESULTS_URL)")
    if options.backend == Backend.REGISTRY and not options.cache_ref:
        raise InputError("--cache", "registry needs --cache-ref (e.g. ghcr.io/owner/dimbybot2-cache)")
    return options.backend


def scope(image: ImageConfig, options: CacheOptions) -> str:
    """The per-image cache scope; a bust suffix starts a fresh cache."""
    return f"{image.scope}-{options.bust}" if options.bust else image.scope


def specs(image: ImageConfig, options: CacheOptions) -> tuple[tuple[CacheSpec, ...], tuple[CacheSpec, ...]]:
    """(imports, exports) for one image."""
    backend = resolve(options)
    name = scope(image, options)
    if backend == Backend.GHA:
        common = (("scope", name), ("version", "2"))
        imports = CacheSpec("gha", common, env=GHA_ENV)
        export_attrs = [*common, ("mode", options.mode), ("ignore-error", "true"), ("timeout", options.export_timeout)]
        return (imports,), (CacheSpec("gha", tuple(export_attrs), env=GHA_ENV),)
    if backend == Backend.REGISTRY:
        ref = f"{options.cache_ref}:{name}"
        imports = CacheSpec("registry", (("ref", ref),))
        export = CacheSpec("registry", (("ref", ref), ("mode", options.mode), ("image-manifest", "true"),
                                        ("oci-mediatypes", "true"), ("ignore-error", "true")))
        return (imports,), (export,)
    return (), ()


def no_cache(options: CacheOptions) -> bool:
    return resolve(options) == Backend.NONE


# BuildKit's progress names for cache import/export (registry: "exporting cache to registry";
# gha: "exporting to GitHub Actions Cache").
IMPORT_VERTICES = ("importing cache",)
EXPORT_VERTICES = ("exporting cache", "exporting to GitHub Actions Cache")

_MISSING_BLOB = re.compile(r"BlobNotFound|The specified blob does not exist|blob sha256:[0-9a-f]{64}: not found")
# Twirp error codes the v2 cache service answers with (BuildKit's client reports the code).
_TWIRP_MEANING = (
    ("resource_exhausted", "throttled by the cache service (HTTP 429: GitHub allows 200 cache uploads a minute per repository)"),
    ("maximum timeout reached", "gave up after the export timeout"),
    ("unavailable", "the cache service was unavailable (HTTP 503)"),
    (": internal", "the cache service failed (HTTP 500)"),
    ("permission_denied", "the token may not write this cache (HTTP 403)"),
    ("unauthenticated", "the cache token was refused (HTTP 401)"),
    ("connection refused", "the cache service was unreachable"),
    ("no such host", "the cache service was unreachable"),
    ("context deadline exceeded", "the cache service did not answer in time"),
)


def is_missing_blob(error: str) -> bool:
    """A layer the cache index lists whose blob is gone (evicted, or lost from storage)."""
    return bool(_MISSING_BLOB.search(error))


# Signed URLs lose their signature in ci.progress (both drivers read BuildKit through it);
# the name stays for callers of the cache module.
redact_signed_urls = redact


def describe_failure(error: str) -> str:
    """BuildKit's cache error in words, with the original text: why the cache failed."""
    # Signed blob URLs carry a signature in their query: never repeat it.
    error = redact(error)
    first = " ".join(line.strip() for line in error.strip().splitlines()[:1])
    if is_missing_blob(error):
        digest = re.search(r"sha256:[0-9a-f]{64}", error)
        what = f"blob {digest[0]}" if digest else "a blob"
        return f"{what} listed by the cache index is missing (evicted or deleted): {first[:300]}"
    reasons = [meaning for marker, meaning in _TWIRP_MEANING if marker in error or error.endswith(marker.lstrip(": "))]
    return f"{'; '.join(dict.fromkeys(reasons))}: {first[:300]}" if reasons else first[:400]
