"""The Dagger skin: thin functions that assemble lazy containers from the core, then await.

Lazy helpers (module-level, returning Containers/Services) are kept apart from the functions
that await them, so what they would run is checked without an engine (tests inspect their
recorded selections). Every decision — images, cache specs, tags, argv — comes from the core.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import dagger
from dagger import DefaultPath, Doc, Ignore, dag, field, function, object_type

from . import __version__, avoidance_registry, cache, debug, gitinfo, pins, progress, render, report, tags
from .config import ProjectConfig, check_inputs, from_pyproject_text
from .errors import InputError, PipelineError
from .model import BuildRequest, Output
from .pipeline import AvoidanceStatus, CacheStatus, ImagePlan, ImageResult, PipelineOptions, PipelineResult, cache_status, cold_retry, image_result, plan
from .progress import BuildLog

# What never reaches the pipeline from the repository (the Dockerfiles' own .dockerignore
# files then decide what reaches BuildKit). .git stays: HEAD gives the default SHA, explain
# reads revisions. .git/config never does: actions/checkout keeps the workflow token there.
SOURCE_IGNORE = [".venv", "sdk", "**/__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "bench/results",
                 ".work", ".git/logs", ".git/hooks", ".git/config"]
BUILDKIT_PORT = 1234
BUILDKIT_ALIAS = "buildkitd"
REGISTRY_ALIAS = "registry"
EMBEDDED_REGISTRY = f"{REGISTRY_ALIAS}:5000"
SRC = "/src"
OUT = "/out"
# Set right before every step with an effect outside the engine (see once_per_call).
CALL_ID_ENV = "DIMBYBOT2_CALL_ID"
BUILDKIT_DOC = ("An existing BuildKit instead of one started in the pipeline, as a service: "
                "tcp://localhost:1234 for one on the host running dagger")
DOCKERFILES = "/dockerfiles"

# Runs buildctl with registry credentials written to $DOCKER_CONFIG, a tmpfs (never into a
# layer or the engine cache), from secret environment variables (never argv).
BUILDCTL_WRAPPER = """set -eu
if [ -n "${REGISTRY_PASSWORD:-}" ]; then
  auth=$(printf '%s:%s' "$REGISTRY_USERNAME" "$REGISTRY_PASSWORD" | base64 | tr -d '\\n')
  printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY_HOST" "$auth" > "$DOCKER_CONFIG/config.json"
fi
exec "$@"
"""
DOCKER_CONFIG = "/root/.docker"


STATE_KEY = "dimbybot2-buildkit-state"


BUILDKITD_CONFIG = "/etc/buildkit/buildkitd.toml"


def buildkit_service(state_key: str | None = STATE_KEY, registry: dagger.Service | None = None,
                     config: dagger.File | None = None) -> dagger.Service:
    """buildkitd from the pinned image, its state on a cache volume (the `engine` cache), or on
    a tmpfs that goes with the service when `state_key` is None.

    `config` is a buildkitd.toml of the user's: registry mirrors (a pull-through cache, Docker
    Hub's pull limits), plain-HTTP or private-CA registries. The engine's own registry settings
    only apply to what the engine pulls; this buildkitd pulls the Dockerfiles' base images itself.

    The volume is mounted LOCKED: cache volumes are shared by default, and a second buildkitd
    on the same state (another call on the same engine) would fail on `buildkitd.lock`; locked,
    it waits for the first to stop. The registry binding is for buildkitd itself: it pushes.

    Only a build whose cache lives in the engine keeps state: buildkitd records every build's
    cache-import attributes, a gha runtime token included, in its history database (BuildKit
    v0.26 client/solve.go passes them as the frontend's `cache-imports`; shown for real in
    tests/test_pinned_buildkit.py), and a volume would keep that on the engine's disk.
    """
    ctr = dag.container().from_(pins.BUILDKIT_IMAGE)
    if state_key is None:
        ctr = ctr.with_mounted_temp("/var/lib/buildkit")
    else:
        ctr = ctr.with_mounted_cache("/var/lib/buildkit", dag.cache_volume(state_key), sharing=dagger.CacheSharingMode.LOCKED)
    ctr = ctr.with_exposed_port(BUILDKIT_PORT)
    if registry is not None:
        ctr = ctr.with_service_binding(REGISTRY_ALIAS, registry)
    args = ["buildkitd", "--addr", f"tcp://0.0.0.0:{BUILDKIT_PORT}"]
    if config is not None:
        ctr = ctr.with_file(BUILDKITD_CONFIG, config)
        args += ["--config", BUILDKITD_CONFIG]
    # buildkitd needs root capabilities to create its own containers and mounts.
    return ctr.as_service(args=args, insecure_root_capabilities=True)


def registry_service() -> dagger.Service:
    """The embedded registry used when no --registry is given. It keeps images inside its
    container: build-and-push starts it for the whole call (an idle service is stopped after
    about 10 s, and the next binding would meet a fresh, empty one)."""
    return dag.container().from_(pins.REGISTRY_IMAGE).with_exposed_port(5000).as_service(use_entrypoint=True)


# The one seam between a module call and an SDK client: inside `dagger call` the module's own
# source comes from the engine (dag.current_module()); a client session (the tests, which drive
# these functions on a real engine without the SDK's module runtime) has no current module and
# sets this to the same directory, filtered by dagger.json's include. Nothing else differs.
MODULE_SOURCE: contextvars.ContextVar[dagger.Directory | None] = contextvars.ContextVar("module_source", default=None)


def module_source() -> dagger.Directory:
    """The module's own source (ci/, deploy/), as the engine loaded it."""
    given = MODULE_SOURCE.get()
    return given if given is not None else dag.current_module().source()


def new_call_id() -> str:
    """A value no other call has: what makes a call's effectful steps run again."""
    return uuid.uuid4().hex


def once_per_call(call_id: str) -> Callable[[dagger.Container], dagger.Container]:
    """Makes the execs that follow unique to one call.

    `cache="never"` only disables the function-result cache: the engine still replays every
    `with_exec` whose inputs it has seen (secrets count by hash), so on a long-lived engine a
    push, a tag move, a credential check or a deploy would silently not happen again, and a
    failed step (expect=ANY) would fail again from the cache. Apply this right before such a
    step, after the pure steps (base image, apt) that should stay cached.
    """
    return lambda ctr: ctr.with_env_variable(CALL_ID_ENV, call_id)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Secrets as Dagger Secret objects: their values never pass through this module."""

    registry_host: str | None = None
    username: str | None = None
    password: dagger.Secret | None = None
    gha_token: dagger.Secret | None = None
    gha_results_url: dagger.Secret | None = None


def buildctl_container(request: BuildRequest, source: dagger.Directory, creds: Credentials,
                       buildkit: dagger.Service | None, buildkit_host: str | None = None, *,
                       call_id: str | None = None, dockerfiles: dagger.Directory | None = None) -> dagger.Container:
    """A container that runs one rendered buildctl build; progress and metadata land in /out.

    `buildkit` (bound as BUILDKIT_ALIAS) is the in-pipeline buildkitd or an external one (a host
    service); `buildkit_host` is the address buildctl dials (default: the in-pipeline port).
    Only buildkitd talks to the registry (it pushes), so no registry is bound here. `call_id`
    makes the build run again on every call: give it when the build pushes or is verified.
    `dockerfiles`: generated Dockerfiles (a debug cut) at DOCKERFILES, outside the source, so
    the build context stays exactly the real build's."""
    ctr = (
        dag.container()
        .from_(pins.BUILDKIT_IMAGE)
        .with_directory(SRC, source)
        .with_mounted_temp(DOCKER_CONFIG)
        .with_env_variable("DOCKER_CONFIG", DOCKER_CONFIG)
        .with_env_variable("BUILDKIT_HOST", buildkit_host or f"tcp://{BUILDKIT_ALIAS}:{BUILDKIT_PORT}")
    )
    if dockerfiles is not None:
        ctr = ctr.with_directory(DOCKERFILES, dockerfiles)
    if buildkit is not None:
        ctr = ctr.with_service_binding(BUILDKIT_ALIAS, buildkit)
    if creds.password is not None and creds.registry_host:
        ctr = (ctr.with_env_variable("REGISTRY_HOST", creds.registry_host)
               .with_env_variable("REGISTRY_USERNAME", creds.username or "")
               .with_secret_variable("REGISTRY_PASSWORD", creds.password))
    if "ACTIONS_RUNTIME_TOKEN" in request.client_env and creds.gha_token is not None and creds.gha_results_url is not None:
        # buildctl fills gha's `token` and `url_v2` from these (the specs say version=2); they
        # never enter argv.
        ctr = (ctr.with_secret_variable("ACTIONS_RUNTIME_TOKEN", creds.gha_token)
               .with_secret_variable("ACTIONS_RESULTS_URL", creds.gha_results_url))
    ctr = ctr.with_exec(["mkdir", "-p", OUT])
    if call_id is not None:
        ctr = ctr.with_(once_per_call(call_id))
    return with_buildctl(ctr, request)


def with_buildctl(ctr: dagger.Container, request: BuildRequest) -> dagger.Container:
    """Runs the rendered buildctl build; stderr (rawjson progress, then buildctl's own
    error lines) goes to /out/progress.json and never fails the exec: the caller reads it."""
    return ctr.with_exec(buildctl_command(request), redirect_stderr=f"{OUT}/progress.json", expect=dagger.ReturnType.ANY)


def buildctl_command(request: BuildRequest, root: str = SRC, out: str = OUT) -> list[str]:
    """The exec that builds one image on the Dagger path: the credential wrapper around the
    rendered buildctl build. Pure, so the pinned BuildKit runs exactly this in the tests
    (tests/test_pinned_buildkit.py) with the source at `root` and results in `out`."""
    argv = render.buildctl(request, root=root, metadata_file=f"{out}/metadata.json")
    return ["sh", "-c", BUILDCTL_WRAPPER, "buildctl-wrapper", *argv]


def push_plans(config: ProjectConfig, options: PipelineOptions, plain_http: bool) -> list[ImagePlan]:
    """The plans build-and-push runs: validated (InputError before anything runs), each push
    told whether its registry speaks plain HTTP."""
    return [dataclasses.replace(p, request=dataclasses.replace(
        p.request, output=dataclasses.replace(p.request.output, insecure=plain_http)))
        for p in plan(config, options, images_argument="--images")]


# BuildKit's progress as a log and buildctl's last words, signed URLs' signatures removed: the
# same reader the local driver uses (ci.progress), so no report or summary repeats a signature.
read_progress = progress.read


def explain_container(source: dagger.Directory, module_source: dagger.Directory, base: str, head: str,
                      images: list[str]) -> dagger.Container:
    """Runs the core's explain (stdlib only) on the repository, with git for reading revisions."""
    argv = ["python", "-m", "ci.explain", "--repo", "/repo"]
    if base:
        argv += ["--base", base]
    if head:
        argv += ["--head", head]
    for image in images:
        argv += ["--image", image]
    return (
        core_container(module_source, apt=("git",))
        .with_directory("/repo", source)
        .with_env_variable("PYTHONPATH", "/pipeline")
        .with_exec(["git", "config", "--global", "--add", "safe.directory", "/repo"])
        .with_exec(argv, expect=dagger.ReturnType.ANY)
    )


def compare_container(module_source: dagger.Directory, image_a: dagger.File, image_b: dagger.File, call_id: str) -> dagger.Container:
    """Runs the core's image comparison (stdlib only) on two OCI tarballs."""
    return (
        core_container(module_source)
        .with_file("/images/a.tar", image_a)
        .with_file("/images/b.tar", image_b)
        .with_(once_per_call(call_id))
        .with_exec(["python", "-m", "ci.verify", "/images/a.tar", "/images/b.tar"], expect=dagger.ReturnType.ANY)
    )


def deploy_container(module_source: dagger.Directory, compose: dagger.File, ssh_key: dagger.Secret, known_hosts: dagger.Secret,
                     password: dagger.Secret | None, args: list[str], timeout: int, call_id: str,
                     repo: dagger.Directory | None = None, webhook: dagger.Secret | None = None,
                     latest_password: dagger.Secret | None = None, smoke_track: dagger.Secret | None = None) -> dagger.Container:
    """Runs the core's deploy client with ssh; the key, known_hosts, webhook URL and smoke track are
    secrets (the track travels in the environment, never in argv). The repository (with .git) at
    /repo orders commits; the report files land in /out. The client writes its copy of the key
    under $TMPDIR: a tmpfs there, so the key never reaches the container's disk (nor a layer)."""
    ctr = (
        core_container(module_source, apt=("openssh-client", "git"))
        .with_file("/pipeline/deploy/remote-deploy.sh", module_source.file("deploy/remote-deploy.sh"))
        .with_file("/pipeline/compose.yaml", compose)
        .with_mounted_secret("/run/secrets/ssh_key", ssh_key, mode=0o600)
        .with_mounted_secret("/run/secrets/known_hosts", known_hosts, mode=0o600)
        .with_env_variable("DEPLOY_SSH_KEY_FILE", "/run/secrets/ssh_key")
        .with_env_variable("DEPLOY_KNOWN_HOSTS_FILE", "/run/secrets/known_hosts")
        .with_env_variable("DEPLOY_COMPOSE_PATH", "/pipeline/compose.yaml")
        .with_env_variable("DEPLOY_TIMEOUT", str(timeout))
    )
    if password is not None:
        ctr = ctr.with_secret_variable("REGISTRY_PASSWORD", password)
    if webhook is not None:
        ctr = ctr.with_secret_variable("DISCORD_WEBHOOK_URL", webhook)
    if latest_password is not None:
        ctr = ctr.with_secret_variable("LATEST_REGISTRY_PASSWORD", latest_password)
    if smoke_track is not None:
        ctr = ctr.with_secret_variable("SMOKE_TRACK", smoke_track)
    if repo is not None:
        ctr = ctr.with_directory("/repo", repo).with_exec(["git", "config", "--global", "--add", "safe.directory", "/repo"])
    ctr = ctr.with_env_variable("TMPDIR", DEPLOY_KEY_DIR).with_mounted_temp(DEPLOY_KEY_DIR)
    return ctr.with_(once_per_call(call_id)).with_exec(["python", "-m", "ci.deploy", *args], expect=dagger.ReturnType.ANY)


# Where the deploy client writes the SSH key (tempfile under $TMPDIR): a tmpfs in the container.
DEPLOY_KEY_DIR = "/tmp"


def core_container(module_source: dagger.Directory, apt: tuple[str, ...] = ()) -> dagger.Container:
    """The pinned Python image with the core's `ci/` package (stdlib-only entry points), plus
    any Debian packages a step needs."""
    ctr = dag.container().from_(pins.PYTHON_IMAGE)
    if apt:
        ctr = ctr.with_exec(["sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                             f"{' '.join(apt)} >/dev/null"])
    return ctr.with_directory("/pipeline/ci", module_source.directory("ci")).with_workdir("/pipeline")


def with_registry(creds: Credentials, registry: dagger.Service | None = None) -> Callable[[dagger.Container], dagger.Container]:
    """Registry user and password (a secret variable) for the core's registry client, and the
    embedded registry's binding when there is one."""
    def apply(ctr: dagger.Container) -> dagger.Container:
        ctr = ctr.with_env_variable("REGISTRY_USERNAME", creds.username or "")
        if creds.password is not None:
            ctr = ctr.with_secret_variable("REGISTRY_PASSWORD", creds.password)
        if registry is not None:
            ctr = ctr.with_service_binding(REGISTRY_ALIAS, registry)
        return ctr
    return apply


def registry_check_container(module_source: dagger.Directory, host: str, creds: Credentials, call_id: str,
                             plain_http: bool = False, repositories: tuple[str, ...] = ()) -> dagger.Container:
    """Checks the registry credentials (or anonymous access) before anything is built, with
    the core's registry client, and push access to each of `repositories` (a token registry
    answers the API root for any good credentials, a pull-only user's included)."""
    return (core_container(module_source).with_(with_registry(creds)).with_(once_per_call(call_id))
            .with_exec(["python", "-m", "ci.registry_cli", "check", *(["--plain-http"] if plain_http else []), host,
                        *repositories], expect=dagger.ReturnType.ANY))


def retag_container(image_plan: ImagePlan, request: BuildRequest, digest: str, creds: Credentials,
                    module_source: dagger.Directory, call_id: str, registry: dagger.Service | None = None) -> dagger.Container:
    """Confirms the pushed SHA tag resolves to `digest`, then moves the follower tags (latest
    last) to it, with the core's registry client. Plain HTTP exactly when the push used it
    (`request.output.insecure`, set from tags.plain_http)."""
    host, _, path = image_plan.refs[0].partition("/")
    repository, _, pushed_tag = path.rpartition(":")
    followers = [ref.rsplit(":", 1)[1] for ref in image_plan.refs[1:]]
    flags = ["--plain-http"] if request.output.insecure else []
    return (core_container(module_source).with_(with_registry(creds, registry)).with_(once_per_call(call_id))
            .with_exec(["python", "-m", "ci.registry_cli", "retag", *flags, host, repository, pushed_tag, digest, *followers],
                       expect=dagger.ReturnType.ANY))


def _repository_of(image_plan: ImagePlan) -> tuple[str, str, str]:
    """(host, repository, SHA tag) of a plan's first ref."""
    host, _, path = image_plan.refs[0].partition("/")
    repository, _, pushed_tag = path.rpartition(":")
    return host, repository, pushed_tag


def avoidance_container(image_plan: ImagePlan, request: BuildRequest, source: dagger.Directory, creds: Credentials,
                        module_source: dagger.Directory, call_id: str, registry: dagger.Service | None = None,
                        buildkit_config: dagger.File | None = None, no_skip: bool = False) -> dagger.Container:
    """Computes the image's input key with the core (ci.avoidance) and looks it up in the target
    repository: one JSON line. Base images resolve through `buildkit_config`'s mirrors first,
    where the in-pipeline BuildKit pulls them."""
    host, repository, _ = _repository_of(image_plan)
    argv = ["python", "-m", "ci.avoidance_cli", "decide", *(["--plain-http"] if request.output.insecure else []),
            *(["--no-skip"] if no_skip else []), host, repository, "--root", SRC, "--dockerfile", request.dockerfile,
            "--context", request.context, "--builder", pins.BUILDKIT_IMAGE]
    argv += ["--target", request.target] if request.target else []
    argv += [arg for name, value in request.build_args for arg in ("--build-arg", f"{name}={value}")]
    argv += ["--source-date-epoch", str(request.source_date_epoch)] if request.source_date_epoch is not None else []
    argv += ["--rewrite-timestamp"] if request.output.rewrite_timestamp else []
    # git: the key reads the source as explain does (a DirSnapshot asks git what is tracked).
    ctr = (core_container(module_source, apt=("git",)).with_directory(SRC, source)
           .with_exec(["git", "config", "--global", "--add", "safe.directory", SRC]).with_(with_registry(creds, registry)))
    if buildkit_config is not None:
        ctr = ctr.with_file(BUILDKITD_CONFIG, buildkit_config)
        argv += ["--buildkitd-config", BUILDKITD_CONFIG]
    return ctr.with_(once_per_call(call_id)).with_exec(argv, expect=dagger.ReturnType.ANY)


def avoidance_step(verb: str, args: list[str], plain_http: bool, creds: Credentials, module_source: dagger.Directory,
                   call_id: str, registry: dagger.Service | None = None) -> dagger.Container:
    """`skip` (point the tags at the recorded image) or `record` (the key beside a pushed image)."""
    return (core_container(module_source).with_(with_registry(creds, registry)).with_(once_per_call(call_id))
            .with_exec(["python", "-m", "ci.avoidance_cli", verb, *(["--plain-http"] if plain_http else []), *args],
                       expect=dagger.ReturnType.ANY))


@dataclasses.dataclass(frozen=True)
class AvoidanceSettings:
    """How one build-and-push call avoids builds: off with an external BuildKit (its version,
    part of the key, is not known here)."""

    enabled: bool
    no_skip: bool = False
    buildkit_config: dagger.File | None = None


@object_type
class ImageOutcome:
    """What happened to one image."""

    name: str = field()
    digest: str = field(default="")
    refs: list[str] = field(default=list)
    cached_steps: int = field(default=0)
    total_steps: int = field(default=0)
    hit_ratio: float = field(default=0.0)
    duration: float = field(default=0.0)
    cache_import: Annotated[str, Doc("ok, off, 'skipped: <why>' or 'failed: <why>'")] = field(default="off")
    cache_export: Annotated[str, Doc("ok, off, 'skipped: <why>' or 'failed: <why>'")] = field(default="off")
    warnings: list[str] = field(default=list)
    avoidance: Annotated[str, Doc("skipped: same inputs as <digest> (built for <commit>), or why it was built")] = field(default="")
    error: str = field(default="")


def artifacts_directory(summary: str, report_json: str, exit_code: int) -> dagger.Directory:
    """What a workflow exports in one step: the step summary, the report and the exit code."""
    return (dag.directory().with_new_file("summary.md", summary).with_new_file("report.json", report_json)
            .with_new_file("exit-code", f"{exit_code}\n"))


@object_type
class BuildAndPushResult:
    """The result of build-and-push: per-image outcomes plus a summary and a JSON report."""

    images: list[ImageOutcome] = field()
    cache_backend: str = field()
    ok: bool = field()
    report_json: Annotated[str, Doc("The JSON report (same as `report`)")] = field()
    summary_markdown: Annotated[str, Doc("The markdown summary (same as `summary`)")] = field()

    @function
    def summary(self) -> str:
        """Markdown for $GITHUB_STEP_SUMMARY: hit ratios, cache status, per-step timings."""
        return self.summary_markdown

    @function
    def report(self) -> str:
        """The JSON report (schema dimbybot2.build-report/1)."""
        return self.report_json

    @function
    def artifacts(self) -> dagger.Directory:
        """summary.md, report.json and exit-code (0 or 1) in one directory, for one `export`."""
        return artifacts_directory(self.summary_markdown, self.report_json, 0 if self.ok else 1)


@object_type
class DeployOutcome:
    """The result of a deploy: the report as text, markdown and JSON, and its exit code."""

    summary_markdown: Annotated[str, Doc("The deploy section for $GITHUB_STEP_SUMMARY")] = field()
    report_json: Annotated[str, Doc("The JSON report (schema dimbybot2.deploy-report/1)")] = field()
    text: Annotated[str, Doc("The report as 'key: value' lines")] = field()
    exit_code: Annotated[int, Doc("0 deployed, 1 failed (rolled back), 2 refused, 3 rollback failed, 4 unknown")] = field()

    @function
    def summary(self) -> str:
        """Markdown for $GITHUB_STEP_SUMMARY."""
        return self.summary_markdown

    @function
    def report(self) -> str:
        """The JSON report."""
        return self.report_json

    @function
    def artifacts(self) -> dagger.Directory:
        """summary.md, report.json and exit-code in one directory, for one `export`."""
        return artifacts_directory(self.summary_markdown, self.report_json, self.exit_code)


T = TypeVar("T")


def _make(cls: type[T], **values: Any) -> T:
    """Construct an @object_type. mypy does not apply the SDK's dataclass_transform through the
    `dagger.object_type` alias, so it would not see the generated keyword constructor."""
    return cls(**values)


def _status_text(status: CacheStatus) -> str:
    if status.ok is None:
        return "off"
    if status.skipped:  # succeeded by not running: say so, not just "ok"
        return status.detail
    return "ok" if status.ok else f"failed: {status.detail}"


def _outcome(result: ImageResult) -> ImageOutcome:
    return _make(
        ImageOutcome,
        name=result.name, digest=result.digest or "", refs=list(result.refs), cached_steps=result.cached_steps,
        total_steps=result.total_steps, hit_ratio=round(result.hit_ratio, 4), duration=round(result.duration, 3),
        cache_import=_status_text(result.cache_import),
        cache_export=_status_text(result.cache_export),
        warnings=list(result.warnings), error=result.error or "",
        avoidance=result.avoidance.detail if result.avoidance is not None else "",
    )


@object_type
class Dimbybot2:
    """Build, cache, tag, push, verify and deploy the dimbybot2 images."""

    source: Annotated[
        dagger.Directory,
        Doc("The repository to build (default: the repository this module lives in)"),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
    ]
    buildkit_config: Annotated[
        dagger.File | None,
        Doc("A buildkitd.toml for the BuildKit started in the pipeline: registry mirrors (a pull-through cache), "
            "plain-HTTP or private registries. Not used with --buildkit (that one has its own)"),
    ] = None

    @function
    def version(self) -> str:
        """The version of this pipeline module."""
        return __version__

    async def _config(self) -> ProjectConfig:
        if await self.source.exists("pyproject.toml"):
            return from_pyproject_text(await self.source.file("pyproject.toml").contents())
        return ProjectConfig()

    async def _head_sha(self) -> str | None:
        if not await self.source.exists(".git/HEAD"):
            return None
        head = await self.source.file(".git/HEAD").contents()
        ref = gitinfo.ref_of(head)
        ref_text = await self.source.file(f".git/{ref}").contents() if ref and await self.source.exists(f".git/{ref}") else None
        packed = await self.source.file(".git/packed-refs").contents() if await self.source.exists(".git/packed-refs") else None
        return gitinfo.head_sha(head, ref_text, packed)

    @function
    async def explain(
        self,
        base: Annotated[str, Doc("Base revision (default: merge-base with the default branch)")] = "",
        head: Annotated[str, Doc("Head revision (default: the source as given, uncommitted changes included)")] = "",
        images: Annotated[list[str] | None, Doc("Which images (default: all)")] = None,
    ) -> str:
        """Predict which Dockerfile steps will hit or miss the cache from base to head, and why (JSON)."""
        check_inputs({"--base": base, "--head": head, "--images": images})  # the same checks as the CLI's
        ctr = explain_container(self.source, module_source(), base, head, images or [])
        if await ctr.exit_code() != 0:
            raise InputError("--base", (await ctr.stderr()).strip().removeprefix("error: "))
        return await ctr.stdout()

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]
    async def verify_determinism(
        self,
        image: Annotated[str, Doc("Which image: bot or lavalink")],
        build_arg: Annotated[list[str] | None, Doc("Extra build args, NAME=value")] = None,
        source_date_epoch: Annotated[int, Doc("SOURCE_DATE_EPOCH for both builds")] = 0,
    ) -> str:
        """Build the image from the cache and with --no-cache and compare them file by file (JSON); fails when they differ."""
        check_inputs({"--image": image, "--build-arg": build_arg})
        config = await self._config()
        options = PipelineOptions(registry=None, tag_plan=None, images=(config.image(image).name,),
                                  cache=cache.CacheOptions(backend=cache.Backend.ENGINE), source_date_epoch=source_date_epoch,
                                  build_args=_build_args(build_arg))
        (image_plan,) = plan(config, options)
        call_id = new_call_id()  # every build and the comparison run again: a replay would verify nothing
        buildkit = buildkit_service(state_key="dimbybot2-buildkit-determinism", config=self.buildkit_config)
        warm_request = dataclasses.replace(image_plan.request, output=Output("cacheonly"))
        warm = buildctl_container(warm_request, self.source, Credentials(), buildkit, call_id=call_id)
        await _check_build(warm, f"warm-up build of {image}")  # fills the cache, so the next build really comes from it
        exports, logs = {}, {}
        for name, no_cache in (("cached", False), ("uncached", True)):
            request = dataclasses.replace(image_plan.request, no_cache=no_cache,
                                          output=Output("oci", dest=f"{OUT}/image.tar", rewrite_timestamp=True))
            ctr = with_buildctl(warm, request) if name == "cached" else buildctl_container(
                request, self.source, Credentials(), buildkit, call_id=call_id)
            logs[name] = await _check_build(ctr, f"{name} build of {image}")
            exports[name] = ctr.file(f"{OUT}/image.tar")
        compared = compare_container(module_source(), exports["cached"], exports["uncached"], call_id)
        code = await compared.exit_code()
        if code == 2:
            raise InputError("--image", (await compared.stderr()).strip())
        cached = logs["cached"]
        result = {"image": image, "cached_build_hits": f"{cached.cached_count}/{len(cached.cacheable)}",
                  **json.loads(await compared.stdout())}
        if code != 0:
            raise PipelineError(f"{image}: the cached and --no-cache builds differ: {json.dumps(result)}")
        return json.dumps(result, indent=2)

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]
    async def deploy(
        self,
        host: Annotated[str, Doc("Host to deploy to")],
        user: Annotated[str, Doc("SSH user (in the host's docker group)")],
        ssh_key: Annotated[dagger.Secret, Doc("SSH private key (env://DEPLOY_SSH_KEY)")],
        known_hosts: Annotated[dagger.Secret, Doc("known_hosts line(s) for the host: host key checking is always on")],
        tag: Annotated[str, Doc("Image tag to roll out (the commit SHA)")],
        registry: Annotated[str, Doc("Registry/namespace the images were pushed to")],
        remote_dir: Annotated[str, Doc("Directory on the host with compose.yaml and the .env holding app secrets")],
        port: Annotated[int, Doc("SSH port")] = 22,
        username: Annotated[str, Doc("Registry user name for the host's pull")] = "",
        password: Annotated[dagger.Secret | None, Doc("Registry password or token for the host's pull")] = None,
        timeout: Annotated[int, Doc("Seconds to wait for every service to be healthy")] = 180,
        digests: Annotated[str, Doc("Run by digest: 'bot=sha256:...,lavalink=sha256:...' (build-and-push's report)")] = "",
        commit: Annotated[str, Doc("Commit the tag was built from (default: the tag)")] = "",
        force: Annotated[bool, Doc("Deploy even when the commit is older than, or unrelated to, the deployed one")] = False,
        environment: Annotated[str, Doc("Environment name for the report: staging, production")] = "production",
        smoke_track: Annotated[dagger.Secret | None, Doc("A track identifier Lavalink must be able to load (smoke test; a secret: "
                                                         "env://SMOKE_TRACK, never in argv; empty skips it)")] = None,
        discord_webhook: Annotated[dagger.Secret | None, Doc("Discord webhook URL: the result is posted there")] = None,
        latest_password: Annotated[dagger.Secret | None, Doc("Registry password that may push: after a deploy, move `latest` to the deployed digests")] = None,
    ) -> DeployOutcome:
        """Roll the host to TAG with Docker Compose over SSH; roll back to the previous version on any failure."""
        from .deploy import DeployRequest, parse_pins

        config = await self._config()
        pins = parse_pins([d for d in digests.replace(",", " ").split() if d],
                          {image.name: image.repository for image in config.images})
        DeployRequest(host=host, user=user, port=port, tag=tag, registry=registry, remote_dir=remote_dir, username=username,
                      timeout=timeout, commit=commit, pins=pins, force=force,
                      environment=environment)  # validates before anything runs (the smoke track: in the container)
        args = ["--host", host, "--user", user, "--port", str(port), "--tag", tag, "--registry", registry,
                "--remote-dir", remote_dir, "--username", username, "--timeout", str(timeout), "--environment", environment,
                "--repo", "/repo", "--out", OUT] + (["--commit", commit] if commit else []) + (["--force"] if force else [])
        args += [arg for pin in pins for arg in ("--digest", f"{pin.name}={pin.digest}")]
        args += ["--move-latest"] if latest_password is not None else []
        ctr = deploy_container(module_source(), self.source.file("compose.yaml"), ssh_key, known_hosts,
                               password, args, timeout, new_call_id(), repo=self.source, webhook=discord_webhook,
                               latest_password=latest_password, smoke_track=smoke_track)
        await ctr.exit_code()
        if not await ctr.exists(f"{OUT}/exit-code"):  # stopped before deploying: bad input or a missing secret
            stderr = (await ctr.stderr()).strip()
            raise PipelineError(stderr.splitlines()[-1] if stderr else "deploy did not run")
        out = ctr.directory(OUT)
        return _make(DeployOutcome, summary_markdown=await out.file("summary.md").contents(),
                     report_json=await out.file("report.json").contents(), text=(await ctr.stdout()).strip(),
                     exit_code=int((await out.file("exit-code").contents()).strip()))

    @function
    async def images(self) -> list[str]:
        """The names of the images this repository builds (from [tool.dimbybot2] or the defaults)."""
        return list((await self._config()).names)

    @function
    async def build(
        self,
        image: Annotated[str, Doc("Which image: bot or lavalink (see `images`)")],
        build_arg: Annotated[list[str] | None, Doc("Extra build args, NAME=value")] = None,
        buildkit: Annotated[dagger.Service | None, Doc(BUILDKIT_DOC)] = None,
    ) -> dagger.Container:
        """Build one image and return it as a Container (try `terminal` on it to debug)."""
        check_inputs({"--image": image, "--build-arg": build_arg})
        config = await self._config()
        options = PipelineOptions(registry=None, tag_plan=None, images=(config.image(image).name,),
                                  cache=cache.CacheOptions(backend=cache.Backend.ENGINE),
                                  build_args=_build_args(build_arg))
        (image_plan,) = plan(config, options, output=Output("oci", dest=f"{OUT}/image.tar"))
        builder = await _buildkit(buildkit, config=self.buildkit_config)
        ctr = await _pure_build(lambda call_id: buildctl_container(image_plan.request, self.source, Credentials(), *builder,
                                                                   call_id=call_id), f"build of {image}")
        return dag.container().import_(ctr.file(f"{OUT}/image.tar"))

    # cache="never": it pushes. (dagger-io 0.21's typing overloads of `function` omit the
    # `cache` keyword that its implementation takes and registers; hence the ignore.)
    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]
    async def build_and_push(
        self,
        registry: Annotated[str, Doc("Registry/namespace to push to, e.g. ghcr.io/owner (default: a registry started in the pipeline)")] = "",
        username: Annotated[str, Doc("Registry user name")] = "",
        password: Annotated[dagger.Secret | None, Doc("Registry password or token (env://VAR)")] = None,
        sha: Annotated[str, Doc("Full commit SHA to tag (default: the checkout's HEAD)")] = "",
        latest: Annotated[bool, Doc("Also move `latest` (after the SHA tag was pushed); off for pull requests")] = True,
        tag: Annotated[list[str] | None, Doc("Extra tags")] = None,
        cache_backend: Annotated[str, Doc("auto, gha, registry, engine or none"), dagger.Name("cache")] = "auto",
        cache_mode: Annotated[str, Doc("max (also intermediate stages) or min (final stage only, for quota pressure)")] = "max",
        cache_ref: Annotated[str, Doc("Registry repository for the registry cache, e.g. ghcr.io/owner/dimbybot2-cache")] = "",
        cache_bust: Annotated[str, Doc("Suffix for the cache scopes: change it to start a fresh cache")] = "",
        cache_timeout: Annotated[str, Doc("How long a gha export may keep retrying after HTTP 429 (e.g. 90s, 10m); "
                                          "the images are pushed before it starts")] = "10m",
        gha_token: Annotated[dagger.Secret | None, Doc("ACTIONS_RUNTIME_TOKEN (env://ACTIONS_RUNTIME_TOKEN)")] = None,
        gha_results_url: Annotated[dagger.Secret | None, Doc("ACTIONS_RESULTS_URL (env://ACTIONS_RESULTS_URL)")] = None,
        images: Annotated[list[str] | None, Doc("Which images (default: all)")] = None,
        build_arg: Annotated[list[str] | None, Doc("Extra build args, NAME=value")] = None,
        source_date_epoch: Annotated[int, Doc("SOURCE_DATE_EPOCH (fixed by default, so caches survive commits)")] = 0,
        buildkit: Annotated[dagger.Service | None, Doc(BUILDKIT_DOC + "; needs --registry")] = None,
        no_skip: Annotated[bool, Doc("Build even when the registry holds an image built from the same inputs")] = False,
    ) -> BuildAndPushResult:
        """Build the images concurrently, export/import their layer cache, push the SHA tag, then move `latest`."""
        check_inputs({"--registry": registry, "--username": username, "--sha": sha, "--tag": tag, "--cache": cache_backend,
                      "--cache-mode": cache_mode, "--cache-ref": cache_ref, "--cache-bust": cache_bust, "--cache-timeout": cache_timeout,
                      "--images": images,
                      "--build-arg": build_arg})
        if registry:  # before the engine is asked anything, as the CLI does
            tags.validate_registry(registry)
        if cache_ref:
            cache.validate_cache_ref(cache_ref)
        started = time.monotonic()
        config = await self._config()
        embedded = not registry
        registry = EMBEDDED_REGISTRY if embedded else tags.validate_registry(registry)
        commit = sha or await self._head_sha()
        if not commit:
            raise InputError("--sha", "not given and the source has no .git/HEAD to read it from")
        options = PipelineOptions(
            registry=registry, tag_plan=tags.plan(commit, latest, tag or ()), images=tuple(images or ()),
            cache=cache.CacheOptions(backend=_backend(cache_backend), mode=cache_mode, bust=cache_bust,
                                     cache_ref=cache_ref or None, gha_tokens=gha_token is not None and gha_results_url is not None,
                                     export_timeout=cache_timeout),
            build_args=_build_args(build_arg), source_date_epoch=source_date_epoch,
            # Standalone BuildKit can clamp file times on push (the docker driver cannot: it
            # conflicts with unpacking into the image store): the pushed image is reproducible.
            rewrite_timestamp=True, skip_unchanged=not no_skip,
        )
        host = tags.registry_host(registry)
        # One decision for the push (registry.insecure) and every registry call after it.
        plain_http = tags.plain_http(host, insecure=embedded)
        plans = push_plans(config, options, plain_http)  # every input is validated before anything runs
        if embedded and buildkit is not None:
            raise InputError("--buildkit", f"an external BuildKit cannot push to the registry started in the pipeline "
                                           f"({EMBEDDED_REGISTRY} resolves only inside it): give --registry too")
        creds = Credentials(registry_host=host, username=username or None, password=password,
                            gha_token=gha_token, gha_results_url=gha_results_url)
        call_id = new_call_id()
        own_source = module_source()
        if not embedded:  # wrong credentials (or anonymous access refused) fail here, before any build or push
            check = registry_check_container(own_source, host, creds, call_id, plain_http,
                                             tuple(_repository_of(p)[1] for p in plans))
            if await check.exit_code() != 0:
                raise InputError("--password" if password is not None else "--registry",
                                 _last_line(await check.stderr()).removeprefix("--password: "))
        # Started for the whole call: it keeps the pushed images inside its container, and an
        # idle service is stopped after ~10 s (a slow step would meet a fresh, empty one).
        registry_svc = await registry_service().start() if embedded else None
        try:
            builder = await _buildkit(buildkit, registry_svc, cache.resolve(options.cache), self.buildkit_config)
            avoid = AvoidanceSettings(enabled=buildkit is None, no_skip=no_skip, buildkit_config=self.buildkit_config)
            results: dict[str, ImageResult] = {}

            async def one(image_plan: ImagePlan) -> None:
                results[image_plan.image.name] = await _build_one(
                    image_plan, self.source, creds, builder, registry_svc, own_source, call_id, avoid)

            async with anyio.create_task_group() as group:
                for image_plan in plans:
                    group.start_soon(one, image_plan)
        finally:
            if registry_svc is not None:
                await registry_svc.stop()
        ordered = [results[p.image.name] for p in plans]
        outcome = PipelineResult(images=ordered, cache_backend=cache.resolve(options.cache).value,
                                 duration=time.monotonic() - started)
        return _make(BuildAndPushResult, images=[_outcome(r) for r in ordered], cache_backend=outcome.cache_backend,
                                  ok=outcome.ok, report_json=report.to_json(outcome),
                                  summary_markdown=report.to_markdown(outcome))

    @function
    async def debug(
        self,
        image: Annotated[str, Doc("Which image: bot or lavalink (see `images`)")],
        step: Annotated[str, Doc("A step label as explain and BuildKit print it ('deps 4/4'), or first-miss: the first step "
                                 "explain predicts will miss from --base to the source")],
        at: Annotated[str, Doc("before: the state the step starts from; after: the state it leaves")] = "before",
        base: Annotated[str, Doc("Base revision for first-miss and for what changed (default: merge-base with the default branch)")] = "",
        build_arg: Annotated[list[str] | None, Doc("Extra build args, NAME=value, as the real build gets them")] = None,
        cache_backend: Annotated[str, Doc("The cache the real build imports: auto, gha, registry, engine or none (nothing is exported)"),
                                 dagger.Name("cache")] = "auto",
        cache_ref: Annotated[str, Doc("Registry repository of the registry cache, as for build-and-push")] = "",
        cache_bust: Annotated[str, Doc("Cache scope suffix, as for build-and-push")] = "",
        gha_token: Annotated[dagger.Secret | None, Doc("ACTIONS_RUNTIME_TOKEN (env://ACTIONS_RUNTIME_TOKEN)")] = None,
        gha_results_url: Annotated[dagger.Secret | None, Doc("ACTIONS_RESULTS_URL (env://ACTIONS_RESULTS_URL)")] = None,
        username: Annotated[str, Doc("User name for a private registry cache")] = "",
        password: Annotated[dagger.Secret | None, Doc("Password or token for a private registry cache (env://VAR)")] = None,
        source_date_epoch: Annotated[int, Doc("SOURCE_DATE_EPOCH, as the real build gets it")] = 0,
        buildkit: Annotated[dagger.Service | None, Doc(BUILDKIT_DOC)] = None,
    ) -> dagger.Container:
        """The build's state just before (or after) one Dockerfile step, from the real build's cache: chain `terminal`."""
        check_inputs({"--image": image, "--step": step, "--at": at, "--base": base, "--build-arg": build_arg, "--cache": cache_backend,
                      "--cache-ref": cache_ref, "--cache-bust": cache_bust, "--username": username})
        if cache_ref:
            cache.validate_cache_ref(cache_ref)
        config = await self._config()
        options = PipelineOptions(registry=None, tag_plan=None, images=(config.image(image).name,), source_date_epoch=source_date_epoch,
                                  cache=cache.CacheOptions(backend=_backend(cache_backend), bust=cache_bust, cache_ref=cache_ref or None,
                                                           gha_tokens=gha_token is not None and gha_results_url is not None),
                                  build_args=_build_args(build_arg))
        (image_plan,) = plan(config, options)
        planned = debug_plan_container(self.source, module_source(), image, step, at, base, build_arg or [])
        if await planned.exit_code() != 0:
            raise _tool_error(await planned.stderr())
        prepared = debug.DebugPlan.from_dict(json.loads(await planned.stdout()))
        for line in prepared.summary():  # shown in the call's output, above the shell
            print(line, file=sys.stderr)
        creds = Credentials(registry_host=cache_ref.split("/", 1)[0] if cache_ref else None, username=username or None,
                            password=password, gha_token=gha_token, gha_results_url=gha_results_url)
        builder = await _buildkit(buildkit, backend=cache.resolve(options.cache), config=self.buildkit_config)
        ctr = await _pure_build(lambda call_id: debug_build_container(image_plan.request, prepared, self.source, creds, *builder,
                                                                      call_id=call_id), f"the build up to {prepared.cut.label}")
        state = dag.container().import_(ctr.file(f"{OUT}/image.tar"))
        for key, value in prepared.cut.run_env:  # what a RUN sees besides the image's ENV
            state = state.with_env_variable(key, value)
        return state


async def _build_one(image_plan: ImagePlan, source: dagger.Directory, creds: Credentials,
                     builder: tuple[dagger.Service, str | None], registry: dagger.Service | None,
                     module_source: dagger.Directory, call_id: str, avoid: AvoidanceSettings | None = None) -> ImageResult:
    """Build and push one image, then confirm its SHA tag and move the others. Any failure,
    the engine's included, becomes this image's error: the other image goes on, and the
    report and artifacts are still written."""
    started = time.monotonic()
    name, request = image_plan.image.name, image_plan.request
    try:
        decision = await _decide(image_plan, request, source, creds, registry, module_source, call_id, avoid)
        if decision is not None and decision.get("skip"):
            result = await _skip(image_plan, request, creds, registry, module_source, call_id, decision)
        else:
            deferred = decision is not None and avoidance_registry.defers_export(request, decision.get("cache"))
            result = await _push_and_tag(image_plan, request, source, creds, builder, registry, module_source, call_id,
                                         defer_export=deferred)
            if decision is not None:
                await _record(image_plan, request, creds, registry, module_source, call_id, decision, result)
    except dagger.QueryError as err:
        first = (progress.redact(str(err)).strip().splitlines() or ["the engine gave no reason"])[0]
        result = ImageResult(name=name, error=f"build of {name} failed: {first[:400]}")
    result.duration = time.monotonic() - started
    return result


async def _decide(image_plan: ImagePlan, request: BuildRequest, source: dagger.Directory, creds: Credentials,
                  registry: dagger.Service | None, module_source: dagger.Directory, call_id: str,
                  avoid: AvoidanceSettings | None) -> dict[str, Any] | None:
    """The avoidance decision (ci.avoidance_cli decide), or None when avoidance is off. A step
    that cannot decide is a build, never a failure."""
    if avoid is None or not avoid.enabled:
        return None
    ctr = avoidance_container(image_plan, request, source, creds, module_source, call_id, registry,
                              avoid.buildkit_config, avoid.no_skip)
    if await ctr.exit_code() != 0:
        return {"skip": False, "key": None, "detail": f"built: the input-key step failed ({_last_line(await ctr.stderr())})"}
    lines = (await ctr.stdout()).strip().splitlines()
    try:
        decision = json.loads(lines[-1]) if lines else None
    except ValueError:
        decision = None
    if not isinstance(decision, dict) or not isinstance(decision.get("detail"), str):
        return {"skip": False, "key": None, "detail": "built: the input-key step answered no decision"}
    return decision


async def _skip(image_plan: ImagePlan, request: BuildRequest, creds: Credentials, registry: dagger.Service | None,
                module_source: dagger.Directory, call_id: str, decision: dict[str, Any]) -> ImageResult:
    """No BuildKit: the SHA tag, then the followers, pointed at the recorded image, each read back."""
    host, repository, _ = _repository_of(image_plan)
    moved = avoidance_step("skip", [host, repository, decision["image"], *(r.rsplit(":", 1)[1] for r in image_plan.refs)],
                           request.output.insecure, creds, module_source, call_id, registry)
    result = ImageResult(name=image_plan.image.name, digest=decision["image"],
                         avoidance=AvoidanceStatus(True, decision["key"], decision["detail"]))
    if await moved.exit_code() == 0:
        result.refs = list(image_plan.refs)
    else:
        result.error = _last_line(await moved.stderr()) or "pointing the tags at the recorded image failed with no message"
    return result


async def _record(image_plan: ImagePlan, request: BuildRequest, creds: Credentials, registry: dagger.Service | None,
                  module_source: dagger.Directory, call_id: str, decision: dict[str, Any], result: ImageResult) -> None:
    """The key beside the image just pushed, for the next call; a failure is a warning only."""
    result.avoidance = AvoidanceStatus(False, decision.get("key"), decision["detail"])
    if not decision.get("key") or not result.digest or result.error:
        return
    host, repository, commit = _repository_of(image_plan)
    scope = avoidance_registry.cache_target(request) if result.cache_export.ok else ""
    recorded = avoidance_step("record", [host, repository, decision["key"], result.digest, commit, *([scope] if scope else [])],
                              request.output.insecure, creds, module_source, call_id, registry)
    if await recorded.exit_code() != 0:
        result.warnings.append(f"the input key was not recorded: {_last_line(await recorded.stderr())}")


async def _push_and_tag(image_plan: ImagePlan, request: BuildRequest, source: dagger.Directory, creds: Credentials,
                        builder: tuple[dagger.Service, str | None], registry: dagger.Service | None,
                        module_source: dagger.Directory, call_id: str, *, defer_export: bool = False) -> ImageResult:
    """Build and push the SHA tag, then move the others. `defer_export`: the avoidance record
    says the scope's index came from these very inputs, so the build runs without the cache
    export, and a second, export-only build runs only if some step missed (issue 19 part 3)."""
    name, full_request = image_plan.image.name, request
    if defer_export:
        request = dataclasses.replace(request, cache_to=())
    ctr = buildctl_container(request, source, creds, *builder, call_id=call_id)
    code = await ctr.exit_code()
    log, tail = read_progress(await ctr.file(f"{OUT}/progress.json").contents())
    retried_because = None
    if (cold := cold_retry(request, log, code == 0)) is not None:
        retried_because, request = cold.reason, cold.request
        ctr = buildctl_container(request, source, creds, *builder, call_id=call_id)
        code = await ctr.exit_code()
        log, tail = read_progress(await ctr.file(f"{OUT}/progress.json").contents())
    result = image_result(name, request, log, retried_because)
    if code != 0:
        result.error = f"build of {name} failed: {log.error or tail or f'buildctl exited with {code} and printed nothing'}"
        return result
    metadata = json.loads(await ctr.file(f"{OUT}/metadata.json").contents())
    result.digest = metadata.get("containerimage.digest")
    if not result.digest:
        result.error = f"build of {name} reported no image digest; no tag was moved"
        return result
    if defer_export:
        # After a cold retry the import is what broke: the export-only build does without it.
        exporting = full_request if retried_because is None else dataclasses.replace(full_request, cache_from=())
        result.cache_export = await _export_if_needed(exporting, log, result, source, creds, builder, call_id)
    result.refs = list(image_plan.refs[:1])
    # Even with no tag to move: confirms the SHA tag resolves to what was built.
    moved = retag_container(image_plan, request, result.digest, creds, module_source, call_id, registry)
    if await moved.exit_code() == 0:
        result.refs = list(image_plan.refs)
    else:
        result.error = _last_line(await moved.stderr()) or "moving tags failed with no message"
    return result


async def _export_if_needed(request: BuildRequest, log: BuildLog, result: ImageResult, source: dagger.Directory,
                            creds: Credentials, builder: tuple[dagger.Service, str | None], call_id: str) -> CacheStatus:
    """The export the build left out, when it is needed: every step is in this BuildKit now,
    so an export-only build (no image output) answers from it."""
    if not avoidance_registry.export_needed(request, log, result.cache_import.ok):
        return CacheStatus(True, avoidance_registry.export_skipped_detail(request))
    export_only = dataclasses.replace(request, output=Output("cacheonly"))
    ctr = buildctl_container(export_only, source, creds, *builder, call_id=call_id)
    await ctr.exit_code()
    exported, _ = read_progress(await ctr.file(f"{OUT}/progress.json").contents())
    status = cache_status(exported, "export", True)
    if status.ok is False:
        result.warnings.append(f"cache export failed, build continued: {status.detail}")
    return status


async def _buildkit(external: dagger.Service | None, registry: dagger.Service | None = None,
                   backend: cache.Backend = cache.Backend.ENGINE, config: dagger.File | None = None) -> tuple[dagger.Service, str | None]:
    """The BuildKit to bind and the address buildctl dials: the in-pipeline one (which
    reaches `registry`; its state kept only for the engine cache; configured by `config`), or
    an external one given as a service (its first port: it has its own configuration)."""
    if external is None:
        return buildkit_service(state_key=STATE_KEY if backend is cache.Backend.ENGINE else None, registry=registry,
                                config=config), None
    port = (await external.endpoint()).rsplit(":", 1)[-1]
    return external, f"tcp://{BUILDKIT_ALIAS}:{port}"


async def _pure_build(make: Callable[[str | None], dagger.Container], what: str) -> dagger.Container:
    """Run a build with no outside effect, letting the engine answer it from its cache; if it
    failed, run it once more with a call id before believing the failure.

    Why: with `expect=ANY` the engine caches a failed exec like any other, so a transient failure
    (an unreachable BuildKit, a registry's 429) would be replayed on every later call with the
    same inputs, without anything running. The retry's call id makes it a new exec.
    """
    ctr = make(None)
    if await ctr.exit_code() != 0:
        ctr = make(new_call_id())
        await _check_build(ctr, what)
    return ctr


async def _check_build(ctr: dagger.Container, what: str) -> BuildLog:
    """The build's progress, or PipelineError with BuildKit's error or buildctl's last words."""
    code = await ctr.exit_code()
    log, tail = read_progress(await ctr.file(f"{OUT}/progress.json").contents())
    if code != 0:
        raise PipelineError(f"{what} failed: {log.error or tail or f'buildctl exited with {code} and printed nothing'}")
    return log


def _last_line(text: str) -> str:
    lines = [line.strip() for line in progress.redact(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _build_args(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    from .pipeline import parse_build_args

    return parse_build_args(items or [])


def _backend(name: str) -> cache.Backend:
    try:
        return cache.Backend(name)
    except ValueError:
        raise InputError("--cache", f"unknown backend {name!r} (auto, gha, registry, engine, none)") from None


def debug_plan_container(source: dagger.Directory, module_source: dagger.Directory, image: str, step: str, at: str, base: str,
                         build_args: list[str]) -> dagger.Container:
    """Runs the core's debug planner (stdlib only; git for revisions): the step, the cut
    Dockerfile and what the step's cache key saw change, as JSON."""
    argv = ["python", "-m", "ci.debug", "--repo", "/repo", "--image", image, "--step", step, "--at", at]
    if base:
        argv += ["--base", base]
    for item in build_args:
        argv += ["--build-arg", item]
    return (
        core_container(module_source, apt=("git",))
        .with_directory("/repo", source)
        .with_env_variable("PYTHONPATH", "/pipeline")
        .with_exec(["git", "config", "--global", "--add", "safe.directory", "/repo"])
        .with_exec(argv, expect=dagger.ReturnType.ANY)
    )


def debug_build_container(request: BuildRequest, prepared: debug.DebugPlan, source: dagger.Directory, creds: Credentials,
                          buildkit: dagger.Service, buildkit_host: str | None = None,
                          call_id: str | None = None) -> dagger.Container:
    """The real build's buildctl run (same source, build args and cache imports, no export)
    on the cut Dockerfile, exporting the state there as an OCI tarball."""
    dockerfile = debug.cut_path(request.dockerfile, DOCKERFILES)
    name = dockerfile.rsplit("/", 1)[1]
    files = dag.directory().with_new_file(name, prepared.cut.dockerfile)
    if prepared.dockerignore is not None:
        files = files.with_new_file(f"{name}.dockerignore", prepared.dockerignore)
    cut = debug.cut_request(request, dockerfile, Output("oci", dest=f"{OUT}/image.tar"))
    return buildctl_container(cut, source, creds, buildkit, buildkit_host, call_id=call_id, dockerfiles=files)


def _tool_error(stderr: str) -> InputError:
    """`error: --step: problem` from a core entry point, as the same one-line InputError."""
    argument, _, problem = stderr.strip().removeprefix("error: ").partition(": ")
    return InputError(argument, problem) if problem else InputError("--step", argument)
