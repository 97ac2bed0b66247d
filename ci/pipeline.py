"""The build-and-push plan and its result, shared by the Dagger and local drivers.

plan()      validates every input and turns configuration + options into one ImagePlan per
            image (BuildRequest + the refs its tags will name). Nothing runs yet, so bad input
            fails before any side effect.
ImageResult what happened to one image: digest, refs, cache hits, cache import/export
            status, warnings. Drivers fill it from BuildKit's own progress output.
"""

from __future__ import annotations

import dataclasses
import pathlib

from . import cache, tags
from .config import ImageConfig, ProjectConfig
from .errors import InputError
from .model import BuildRequest, Output
from .progress import BuildLog

CACHE_HIT_GOAL = 0.70


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    registry: str | None
    tag_plan: tags.TagPlan | None
    cache: cache.CacheOptions = cache.CacheOptions()
    images: tuple[str, ...] = ()
    source_date_epoch: int | None = 0
    build_args: tuple[tuple[str, str], ...] = ()
    rewrite_timestamp: bool = False
    skip_unchanged: bool = True  # build avoidance (ci.avoidance); `--no-skip` turns it off


@dataclasses.dataclass(frozen=True)
class ImagePlan:
    image: ImageConfig
    request: BuildRequest
    refs: tuple[str, ...]  # SHA ref first, followers in the order they move

    @property
    def primary_ref(self) -> str | None:
        return self.refs[0] if self.refs else None


def parse_build_args(items: list[str] | tuple[str, ...], argument: str = "--build-arg") -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise InputError(argument, f"expected NAME=value, got {item!r}")
        pairs.append((key, value))
    return tuple(pairs)


def validate_epoch(value: int | None, argument: str = "--source-date-epoch") -> int | None:
    if value is not None and not 0 <= value < 2**32:
        raise InputError(argument, f"must be a Unix time in seconds, got {value}")
    return value


def plan(config: ProjectConfig, options: PipelineOptions, root: pathlib.Path | None = None,
         output: Output | None = None, images_argument: str = "--image") -> list[ImagePlan]:
    """One ImagePlan per selected image; raises InputError before anything runs.

    `images_argument` is how the calling skin names its image selection in errors.
    """
    images = config.select(options.images, images_argument)
    if root is not None:
        ProjectConfig(images=images).check_files(root, images_argument)
    validate_epoch(options.source_date_epoch)
    cache.resolve(options.cache)  # an explicit backend must have what it needs
    plans = []
    for image in images:
        refs: tuple[str, ...] = ()
        if options.tag_plan is not None:
            if not options.registry:
                raise InputError("--registry", "is required to push")
            refs = tuple(tags.image_ref(options.registry, image.repository, t) for t in options.tag_plan.all)
        imports, exports = cache.specs(image, options.cache)
        out = output or (Output("push", names=refs[:1], rewrite_timestamp=options.rewrite_timestamp)
                         if refs else Output("cacheonly"))
        request = BuildRequest(
            image=image.name, context=image.context, dockerfile=image.dockerfile, output=out,
            target=image.target, build_args=tuple(sorted({**dict(image.build_args), **dict(options.build_args)}.items())),
            source_date_epoch=options.source_date_epoch, cache_from=imports, cache_to=exports,
            no_cache=cache.no_cache(options.cache),
        )
        plans.append(ImagePlan(image=image, request=request, refs=refs))
    return plans


@dataclasses.dataclass(frozen=True)
class CacheStatus:
    """Did the cache import/export work? `None` ok means 'not attempted'."""

    ok: bool | None
    detail: str = ""

    @property
    def skipped(self) -> bool:
        """Done by not running: the export an all-hit build from its own scope leaves out."""
        return self.ok is True and self.detail.startswith("skipped:")


def cache_status(log: BuildLog, direction: str, attempted: bool) -> CacheStatus:
    """Read the import ('importing cache') or export ('exporting cache') outcome from a log."""
    if not attempted:
        return CacheStatus(None, "no cache configured")
    prefixes = cache.IMPORT_VERTICES if direction == "import" else cache.EXPORT_VERTICES
    vertices = tuple(v for prefix in prefixes for v in log.bookkeeping_matching(prefix))
    errors = [v.error for v in vertices if v.error]
    if errors:
        return CacheStatus(False, cache.describe_failure(errors[0]))
    if direction == "import" and not vertices:
        return CacheStatus(True, "nothing to import yet")
    return CacheStatus(True, "ok")


@dataclasses.dataclass(frozen=True)
class AvoidanceStatus:
    """Build avoidance for one image: was BuildKit skipped, the input key, and why (one sentence)."""

    skipped: bool
    key: str | None
    detail: str


@dataclasses.dataclass(frozen=True)
class PackageCacheStatus:
    """One cache mount's contents carried across runners (ci.package_cache): where they came
    from, whether they were saved, their size, and one sentence saying so."""

    mount: str
    ok: bool  # False: restoring or saving failed (the build went on without it)
    restored_from: str | None = None  # the key found (None: nothing saved yet)
    exact: bool = False  # found under this build's own key
    restored_bytes: int = 0
    saved_as: str | None = None
    saved_bytes: int = 0
    seconds: float = 0.0  # spent restoring and saving
    detail: str = ""


@dataclasses.dataclass
class ImageResult:
    name: str
    digest: str | None = None
    refs: list[str] = dataclasses.field(default_factory=list)
    cached_steps: int = 0
    total_steps: int = 0
    duration: float = 0.0
    cache_import: CacheStatus = CacheStatus(None)
    cache_export: CacheStatus = CacheStatus(None)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    log: BuildLog | None = dataclasses.field(default=None, repr=False)
    avoidance: AvoidanceStatus | None = None  # None: not attempted (no registry to look in)
    package_caches: list[PackageCacheStatus] = dataclasses.field(default_factory=list)

    @property
    def hit_ratio(self) -> float:
        return self.cached_steps / self.total_steps if self.total_steps else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class PipelineResult:
    images: list[ImageResult]
    cache_backend: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.images)


def cache_failure(log: BuildLog) -> str | None:
    """Why the cache made this build fail, if it did: a cache import/export vertex's error, or a
    layer the cache index listed but whose blob could not be fetched (evicted or lost)."""
    for vertex in log.bookkeeping:
        if vertex.error and vertex.name.startswith((*cache.IMPORT_VERTICES, *cache.EXPORT_VERTICES)):
            return cache.describe_failure(vertex.error)
    for vertex in (*log.steps, *log.bookkeeping):
        if vertex.error and cache.is_missing_blob(vertex.error):
            return cache.describe_failure(vertex.error)
    return None


def cache_failed(log: BuildLog) -> bool:
    return cache_failure(log) is not None


@dataclasses.dataclass(frozen=True)
class ColdRetry:
    """The same request without external cache, and why the cached one failed."""

    request: BuildRequest
    reason: str


def cold_retry(request: BuildRequest, log: BuildLog, ok: bool) -> ColdRetry | None:
    """What to build instead when a cache is what made the build fail: a cache never fails a
    build, it only makes it cold. Both drivers take the request and its reason from here."""
    reason = None if ok or not (request.cache_from or request.cache_to) else cache_failure(log)
    if reason is None:
        return None
    return ColdRetry(dataclasses.replace(request, cache_from=(), cache_to=()), reason)


def image_result(name: str, request: BuildRequest, log: BuildLog, retried_because: str | None = None) -> ImageResult:
    """What BuildKit's progress says about one image's build (digest, refs and error are the
    driver's to fill): hits, cache import/export status, and every warning."""
    result = ImageResult(name=name, cached_steps=log.cached_count, total_steps=len(log.cacheable), log=log,
                         cache_import=cache_status(log, "import", bool(request.cache_from)),
                         cache_export=cache_status(log, "export", bool(request.cache_to)))
    if retried_because is not None:
        result.warnings.append(f"cache failed ({retried_because}); rebuilt without external cache")
    for step in log.cacheable:
        if step.rerun_because:
            result.warnings.append(f"{step.label} ran again: its cached layer could not be loaded "
                                   f"({cache.describe_failure(step.rerun_because)})")
    result.warnings.extend(log.warnings)
    for status, what in ((result.cache_import, "import"), (result.cache_export, "export")):
        if status.ok is False:
            result.warnings.append(f"cache {what} failed, build continued: {status.detail}")
    return result
