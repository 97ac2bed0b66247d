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

from . import cache, progress, render
from .errors import PipelineError
from .model import BuildRequest, Output
from .pipeline import CacheStatus, ImagePlan, ImageResult, PipelineOptions, PipelineResult, cold_retry, image_result
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


def build_image(plan: ImagePlan, root: pathlib.Path, work: pathlib.Path, env: Mapping[str, str]) -> ImageResult:
    """Build (and push the SHA ref of) one image; a cache failure falls back to a cold build."""
    request = plan.request
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


def build_and_push(plans: list[ImagePlan], options: PipelineOptions, root: pathlib.Path, work: pathlib.Path,
                   username: str | None = None, password: str | None = None,
                   on_done: Callable[[ImageResult], None] | None = None) -> PipelineResult:
    """Build all images concurrently; push SHA tags; then move the other tags."""
    started = time.monotonic()
    auths: dict[str, tuple[str, str]] = {}
    registry = None
    if options.registry and options.tag_plan is not None:
        host = options.registry.split("/", 1)[0]
        registry = Registry(host, username, password)
        registry.check_auth()  # wrong credentials fail here, before any build or push
        if username and password:
            auths[host] = (username, password)
    namespace = options.registry.split("/", 1)[1] + "/" if options.registry and "/" in options.registry else ""
    results: list[ImageResult] = []
    with docker_config(auths) as env:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
            futures = {pool.submit(build_image, p, root, work, env): p for p in plans}
            for future in concurrent.futures.as_completed(futures):
                plan = futures[future]
                result = future.result()
                if registry is not None:
                    move_followers(dataclasses.replace(plan, image=dataclasses.replace(
                        plan.image, repository=namespace + plan.image.repository)), result, registry)
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
