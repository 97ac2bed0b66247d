"""The local driver: runs BuildRequests with `docker buildx` on this machine.

Used by `dimbybot-ci build-and-push` on laptops, to reproduce a CI build, by the tests and
by the benchmark. Registry credentials go into a private DOCKER_CONFIG directory (mode
0700, removed afterwards), never into argv.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping

from . import avoidance_registry, cache, package_cache_local, progress, render
from .errors import PipelineError
from .explain.snapshot import DirSnapshot
from .model import BuildRequest, Output
from .package_cache_store import PackageStore
from .pipeline import AvoidanceStatus, CacheStatus, ImagePlan, ImageResult, PipelineOptions, PipelineResult, cache_status, cold_retry, image_result
from .progress import BuildLog, parse_stream
from .registry import Registry
from .verify import Comparison

# Debian's docker client carries the buildx plugin; another `docker` may shadow it in PATH.
DOCKER = os.environ.get("DIMBYBOT_DOCKER", "/usr/bin/docker" if pathlib.Path("/usr/bin/docker").exists() else "docker")


@dataclasses.dataclass(frozen=True)
class BuildOutcome:
    request: BuildRequest
    log: BuildLog
    returncode: int
    seconds: float
    digest: str | None
    stderr_tail: str
    progress_file: pathlib.Path
    export_stopped_after: float | None = None  # the cache export was stopped at its timeout (seconds)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 or (self.export_stopped_after is not None and _image_exported(self.log))


def _image_exported(log: BuildLog) -> bool:
    """Every Dockerfile step and the image export (if any: `cacheonly` has none) finished
    without error: the push is done. Only asked once the cache export had started."""
    exports = [v for v in log.bookkeeping if v.name.startswith(("exporting to image", "exporting to oci", "exporting to docker"))]
    return bool(log.steps) and all(v.error is None and (v.cached or v.duration is not None) for v in (*log.steps, *exports))


# BuildKit enforces the timeout itself after HTTP 429 (and then reports why): the driver steps in
# only when BuildKit has not, a little later.
EXPORT_GRACE = 15.0


def export_timeout(request: BuildRequest) -> float | None:
    """The gha export's `timeout` in seconds. BuildKit applies it only to retries after HTTP 429:
    a cache service that answers slowly keeps the build waiting, so the driver enforces it."""
    for spec in request.cache_to:
        value = spec.attr("timeout") if spec.type == "gha" else None
        if value:
            number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", value).groups()  # type: ignore[union-attr]
            return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return None


def _wait(proc: subprocess.Popen[bytes], progress_file: pathlib.Path, timeout: float | None) -> float | None:
    """Wait for buildx; when the cache export outlives `timeout`, interrupt it (the image is
    already pushed by then: BuildKit exports the cache last). Returns the seconds it ran, if stopped."""
    export_started: float | None = None
    while True:
        try:
            proc.wait(timeout=0.5)
            return None
        except subprocess.TimeoutExpired:
            pass
        if timeout is None:
            continue
        if export_started is None:
            if any(name in progress_file.read_text(errors="replace") for name in cache.EXPORT_VERTICES):
                export_started = time.monotonic()
        elif time.monotonic() - export_started > timeout + EXPORT_GRACE:
            proc.send_signal(signal.SIGINT)  # buildx cancels the build's session: BuildKit stops exporting
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return time.monotonic() - export_started


@contextlib.contextmanager
def docker_config(auths: Mapping[str, tuple[str, str]] | None = None) -> Iterator[dict[str, str]]:
    """An environment whose DOCKER_CONFIG holds only the given registry credentials."""
    env = dict(os.environ)
    env["PATH"] = "/usr/bin:" + env.get("PATH", "")
    if not auths:
        yield env
        return
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dimbybot-docker-"))
    try:
        directory.chmod(0o700)
        entries = {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
                   for host, (user, password) in auths.items()}
        config = directory / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"auths": entries}))
        # Keep the user's buildx builders and plugins visible.
        home = pathlib.Path(os.environ.get("DOCKER_CONFIG", pathlib.Path.home() / ".docker"))
        for name in ("buildx", "cli-plugins"):
            if (home / name).exists():
                (directory / name).symlink_to(home / name)
        env["DOCKER_CONFIG"] = str(directory)
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_build(request: BuildRequest, root: pathlib.Path, work: pathlib.Path,
              env: Mapping[str, str] | None = None) -> BuildOutcome:
    """Run one build; BuildKit's rawjson progress is kept in `work` and parsed."""
    work.mkdir(parents=True, exist_ok=True)
    progress_file = work / f"{request.image}.progress.json"
    metadata_file = work / f"{request.image}.metadata.json"
    metadata_file.unlink(missing_ok=True)
    argv = render.buildx(request, root=str(root), metadata_file=str(metadata_file))
    argv[0] = DOCKER
    started = time.monotonic()
    with progress_file.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink, env=dict(env or os.environ),
                                stdin=subprocess.DEVNULL)
        stopped_after = _wait(proc, progress_file, export_timeout(request))
    seconds = time.monotonic() - started
    text = progress.redact_file(progress_file)  # the log is kept: no signed URL's signature in it
    try:
        with progress_file.open() as stream:
            log = parse_stream(stream)
    except ValueError:
        log = BuildLog(steps=(), bookkeeping=())
    digest = None
    if proc.returncode == 0 and metadata_file.exists():
        digest = json.loads(metadata_file.read_text()).get("containerimage.digest")
    tail = text[-2000:] if not text.lstrip().startswith("{") else (log.error or text[-2000:])
    return BuildOutcome(request, log, proc.returncode, seconds, digest, tail, progress_file, stopped_after)


def builder_identity(env: Mapping[str, str] | None = None) -> str | None:
    """Which BuildKit `docker buildx build` runs on (driver, BuildKit version, and the daemon's
    version for the docker driver, whose BuildKit is vendored into dockerd): part of the input
    key, since another BuildKit or frontend may assemble the same inputs differently."""
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=30, env=dict(env or os.environ))
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    inspect = run("buildx", "inspect")
    driver = re.search(r"^Driver:\s*(\S+)", inspect or "", re.M)
    version = re.search(r"^BuildKit version:\s*(\S+)", inspect or "", re.M)
    if driver is None:
        return None
    identity = f"buildx-{driver[1]}:{version[1] if version else 'unknown'}"
    if driver[1] == "docker":
        server = run("version", "--format", "{{.Server.Version}}")
        if not server:
            return None
        identity += f":dockerd-{server.strip()}"
    return identity


@dataclasses.dataclass(frozen=True)
class Avoidance:
    """What build avoidance needs for one run: where to look and what builds."""

    registry: Registry
    namespace: str  # prepended to each image's repository
    builder: str | None
    resolve: avoidance_registry.RegistryResolver
    commit: str
    no_skip: bool = False


def _decide(plan: ImagePlan, root: pathlib.Path, avoid: Avoidance) -> avoidance_registry.Decision | AvoidanceStatus:
    if avoid.builder is None:
        return AvoidanceStatus(False, None, "built: no input key (the builder's BuildKit version could not be read)")
    return avoidance_registry.decide(DirSnapshot(root), plan.request, avoid.builder, avoid.resolve, avoid.registry,
                                     avoid.namespace + plan.image.repository, avoid.no_skip)


def _skipped(plan: ImagePlan, decision: avoidance_registry.Decision, avoid: Avoidance, started: float) -> ImageResult | str:
    """Point the image's tags at the recorded image; why not, when that fails."""
    if decision.record is None:
        return "built: no record to skip to"
    try:
        digest = avoidance_registry.skip(avoid.registry, avoid.namespace + plan.image.repository, decision.record,
                                         [ref.rsplit(":", 1)[1] for ref in plan.refs])
    except PipelineError as err:
        return f"built: the skip failed, built as without avoidance ({str(err)[:300]})"
    return ImageResult(plan.image.name, digest=digest, refs=list(plan.refs), duration=time.monotonic() - started,
                       cache_import=CacheStatus(None, "skipped: nothing built"), cache_export=CacheStatus(None, "skipped: nothing built"),
                       avoidance=AvoidanceStatus(True, decision.key.key, decision.detail))


@dataclasses.dataclass(frozen=True)
class PackageCaches:
    """Where cache mounts are carried across runners (package_cache_local), and under which scope."""

    store: PackageStore
    options: cache.CacheOptions


def build_image(plan: ImagePlan, root: pathlib.Path, work: pathlib.Path, env: Mapping[str, str],
                avoid: Avoidance | None = None, packages: PackageCaches | None = None) -> ImageResult:
    """Build (and push the SHA ref of) one image; a cache failure falls back to a cold build.
    With `avoid`, an image whose inputs the registry already holds is not built at all; with
    `packages`, its cache mounts are restored before the build and saved after it."""
    started = time.monotonic()
    decision = _decide(plan, root, avoid) if avoid is not None and plan.refs else None
    status = decision if isinstance(decision, AvoidanceStatus) or decision is None else \
        AvoidanceStatus(False, decision.key.key, decision.detail)
    if isinstance(decision, avoidance_registry.Decision) and decision.skip and avoid is not None:
        done = _skipped(plan, decision, avoid, started)
        if isinstance(done, ImageResult):
            return done
        status = AvoidanceStatus(False, decision.key.key, done)
    # The record says this scope's index was written from these very inputs: build without the
    # export, and export afterwards only if the build shows it is needed.
    deferred = (isinstance(decision, avoidance_registry.Decision) and decision.record is not None
                and avoidance_registry.defers_export(plan.request, decision.record.cache))
    request = dataclasses.replace(plan.request, cache_to=()) if deferred else plan.request
    restored = []
    if packages is not None and not request.no_cache:
        restored = package_cache_local.restore(DOCKER, plan.request, root, work, env, packages.store,
                                               cache.scope(plan.image, packages.options),
                                               package_cache_local.mounts_of(plan.request, root))
    result = _build(plan, request, root, work, env)
    result.avoidance = status
    if packages is not None and restored:
        result.package_caches = package_cache_local.save(DOCKER, restored, plan.request, work, env, packages.store,
                                                         result.log, result.ok)
        result.duration += sum(p.seconds for p in result.package_caches)
        result.warnings += [f"package cache {p.mount}: {p.detail}" for p in result.package_caches if not p.ok]
    if deferred and result.ok and result.log is not None:
        if avoidance_registry.export_needed(plan.request, result.log, result.cache_import.ok):
            # Every step is in this BuildKit now: the second build only exports (own progress log).
            export = run_build(dataclasses.replace(plan.request, image=f"{plan.image.name}.export", output=Output("cacheonly")),
                               root, work, env)
            result.cache_export = cache_status(export.log, "export", True)
            result.duration += export.seconds
        else:
            result.cache_export = CacheStatus(True, avoidance_registry.export_skipped_detail(plan.request))
    return result


def _build(plan: ImagePlan, request: BuildRequest, root: pathlib.Path, work: pathlib.Path, env: Mapping[str, str]) -> ImageResult:
    outcome = run_build(request, root, work, env)
    retried_because = None
    if (cold := cold_retry(request, outcome.log, outcome.ok)) is not None:
        retried_because, request = cold.reason, cold.request
        # Keep the attempt the cache broke beside the cold build's log: it shows why.
        outcome.progress_file.replace(outcome.progress_file.with_name(f"{plan.image.name}.cache-failed.progress.json"))
        outcome = run_build(request, root, work, env)
    result = image_result(plan.image.name, request, outcome.log, retried_because)
    result.digest, result.duration = outcome.digest, outcome.seconds
    if outcome.export_stopped_after is not None and outcome.ok:
        detail = (f"the cache service answered too slowly: export stopped after {outcome.export_stopped_after:.0f} s "
                  f"(timeout {export_timeout(request):.0f} s); the image was pushed before")
        result.cache_export = CacheStatus(False, detail)
        result.warnings = [w for w in result.warnings if not w.startswith("cache export failed")]
        result.warnings.append(f"cache export failed, build continued: {detail}")
    if not outcome.ok:
        result.error = f"build of {plan.image.name} failed: {outcome.stderr_tail.strip().splitlines()[-1] if outcome.stderr_tail.strip() else 'no output'}"
    elif plan.refs:
        result.refs = [plan.refs[0]]
    return result


def move_followers(plan: ImagePlan, result: ImageResult, registry: Registry) -> None:
    """After the SHA push: point every other tag at its digest (latest last), then verify."""
    if not result.ok or not plan.refs:
        return
    repository = plan.image.repository
    sha_tag = plan.refs[0].rsplit(":", 1)[1]
    try:
        pushed = registry.digest(repository, sha_tag)
        if result.digest and pushed != result.digest:
            raise PipelineError(f"{plan.refs[0]} resolves to {pushed}, the build produced {result.digest}")
        result.digest = pushed
        for ref in plan.refs[1:]:
            registry.move_tag(repository, pushed, ref.rsplit(":", 1)[1])
            result.refs.append(ref)
    except PipelineError as err:
        result.error = str(err)


def record_inputs(plan: ImagePlan, result: ImageResult, avoid: Avoidance) -> None:
    """After a build whose tags all moved: record its input key beside the image. A failure
    costs only the next skip, so it is a warning."""
    if not result.ok or result.avoidance is None or result.avoidance.skipped or not result.avoidance.key or not result.digest:
        return
    cache_to = avoidance_registry.cache_target(plan.request) if result.cache_export.ok else ""
    rec = avoidance_registry.Record(result.avoidance.key, result.digest, avoid.commit, cache_to)
    try:
        avoidance_registry.record(avoid.registry, avoid.namespace + plan.image.repository, rec)
    except PipelineError as err:
        result.warnings.append(f"input key not recorded (the next build with the same inputs builds again): {str(err)[:300]}")


def build_and_push(plans: list[ImagePlan], options: PipelineOptions, root: pathlib.Path, work: pathlib.Path,
                   username: str | None = None, password: str | None = None,
                   on_done: Callable[[ImageResult], None] | None = None) -> PipelineResult:
    """Build all images concurrently; push SHA tags; then move the other tags. An image whose
    input key the registry already records is not built: its tags point at that image."""
    started = time.monotonic()
    auths: dict[str, tuple[str, str]] = {}
    registry = None
    namespace = options.registry.split("/", 1)[1] + "/" if options.registry and "/" in options.registry else ""
    if options.registry and options.tag_plan is not None:
        host = options.registry.split("/", 1)[0]
        registry = Registry(host, username, password)
        # Wrong credentials, and a user or token that may only pull, fail here: before any build.
        registry.check_auth([namespace + p.image.repository for p in plans])
        if username and password:
            auths[host] = (username, password)
    results: list[ImageResult] = []
    with docker_config(auths) as env:
        avoid = None
        if registry is not None and options.tag_plan is not None:
            avoid = Avoidance(registry, namespace, builder_identity(env), avoidance_registry.RegistryResolver(
                registry.host, username, password), options.tag_plan.sha, no_skip=not options.skip_unchanged)
        store = package_cache_local.store_for(options, env, username, password)
        packages = PackageCaches(store, options.cache) if store is not None else None
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
            futures = {pool.submit(build_image, p, root, work, env, avoid, packages): p for p in plans}
            for future in concurrent.futures.as_completed(futures):
                plan = futures[future]
                result = future.result()
                if registry is not None and not (result.avoidance and result.avoidance.skipped):
                    move_followers(dataclasses.replace(plan, image=dataclasses.replace(
                        plan.image, repository=namespace + plan.image.repository)), result, registry)
                if avoid is not None:
                    record_inputs(plan, result, avoid)
                if on_done:
                    on_done(result)
                results.append(result)
    order = {p.image.name: i for i, p in enumerate(plans)}
    results.sort(key=lambda r: order[r.name])
    return PipelineResult(images=results, cache_backend=cache.resolve(options.cache).value,
                          duration=time.monotonic() - started)


@dataclasses.dataclass(frozen=True)
class DeterminismResult:
    image: str
    cached_steps: int  # of the cached build: shows it really came from the cache
    total_steps: int
    comparison: Comparison

    def to_dict(self) -> dict[str, object]:
        return {"image": self.image, "cached_build_hits": f"{self.cached_steps}/{self.total_steps}", **self.comparison.to_dict()}


def verify_determinism(plan: ImagePlan, root: pathlib.Path, work: pathlib.Path) -> DeterminismResult:
    """Build the image from the cache and with --no-cache, both as OCI layouts with
    timestamps rewritten to SOURCE_DATE_EPOCH, and compare them file by file."""
    from .verify import compare_specs

    work.mkdir(parents=True, exist_ok=True)
    base = dataclasses.replace(plan.request, cache_to=(), output=Output("cacheonly"))
    warm = run_build(base, root, work)  # fills the cache, so the next build is a cached one
    if not warm.ok:
        raise PipelineError(f"build of {plan.image.name} failed: {warm.log.error or warm.stderr_tail.strip()[-300:]}")
    outcomes = []
    for name, no_cache in (("cached", False), ("uncached", True)):
        dest = work / f"{plan.image.name}-{name}.oci.tar"
        request = dataclasses.replace(base, no_cache=no_cache, image=f"{plan.image.name}-{name}",
                                      output=Output("oci", dest=str(dest), rewrite_timestamp=True))
        outcome = run_build(request, root, work)
        if not outcome.ok:
            raise PipelineError(f"{name} build of {plan.image.name} failed: {outcome.log.error or outcome.stderr_tail.strip()[-300:]}")
        outcomes.append((outcome, dest))
    (cached, cached_dest), (_, uncached_dest) = outcomes
    return DeterminismResult(plan.image.name, cached.log.cached_count, len(cached.log.cacheable),
                             compare_specs(str(cached_dest), str(uncached_dest)))
