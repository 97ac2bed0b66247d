"""Package caches with the local driver: restore each cache mount before the build, save it after.

What moves when (ci.package_cache has the keys and the helper Dockerfiles):
  before  the store is asked for the mount's key. Found under the key itself: the RUN step's
          inputs are unchanged since it was saved, so its layer comes from the layer cache and
          nothing is restored. Found under the mount's prefix (other inputs, e.g. the previous
          lock): downloaded and unpacked into the mount by a one-step build.
  after   only when the RUN step ran (it missed) and its key is not saved: the mount is packed
          by a one-step build, and uploaded unless it holds exactly the files restored.
Every failure is a sentence in the report and a warning; the build goes on as without it.
The helper builds run on the same builder as the image build, with its build args (so their
FROM resolves to the same base), and never produce an image; a build arg new each time makes
their one RUN step run (ci.package_cache.RUN_ID_ARG).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping

from . import cache
from .cache_usage import human
from .errors import PipelineError
from .explain.snapshot import DirSnapshot
from .model import BuildRequest
from .package_cache import ARCHIVE, RUN_ID_ARG, CacheMount, Mounts, contents_digest, extract_dockerfile, find_mounts, restore_dockerfile
from .package_cache_store import GhaPackageStore, PackageStore, RegistryPackageStore
from .pipeline import PackageCacheStatus, PipelineOptions
from .progress import BuildLog
from .registry import Registry


def store_for(options: PipelineOptions, env: Mapping[str, str], username: str | None = None,
              password: str | None = None) -> PackageStore | None:
    """The build's cache backend as a package store; None for engine/none (nothing to carry)."""
    backend = cache.resolve(options.cache)
    if backend == cache.Backend.GHA and env.get("ACTIONS_RUNTIME_TOKEN") and env.get("ACTIONS_RESULTS_URL"):
        return GhaPackageStore(env["ACTIONS_RUNTIME_TOKEN"], env["ACTIONS_RESULTS_URL"])
    if backend == cache.Backend.REGISTRY and options.cache.cache_ref:
        host, repository = options.cache.cache_ref.split("/", 1)
        same_host = bool(options.registry) and options.registry.split("/", 1)[0] == host  # type: ignore[union-attr]
        return RegistryPackageStore(Registry(host, username if same_host else None, password if same_host else None), repository)
    return None


@dataclasses.dataclass
class Restored:
    """One mount before the build: what was found and put in place."""

    mounts: Mounts  # all of the build's (their global ARG lines are the helper builds' too)
    mount: CacheMount
    key: str
    prefix: str
    found: str | None = None
    exact: bool = False
    digest: str | None = None  # contents_digest of what was unpacked
    size: int = 0
    seconds: float = 0.0
    sentences: list[str] = dataclasses.field(default_factory=list)
    ok: bool = True


def _helper_build(docker: str, dockerfile: str, context: pathlib.Path, request: BuildRequest, output: str,
                  env: Mapping[str, str]) -> None:
    path = context.parent / "Dockerfile"
    path.write_text(dockerfile)
    argv = [docker, "buildx", "build", "--progress=plain", "-f", str(path), "--output", output,
            "--build-arg", f"{RUN_ID_ARG}={uuid.uuid4().hex}"]
    for key, value in request.all_build_args:
        argv += ["--build-arg", f"{key}={value}"]
    done = subprocess.run([*argv, str(context)], capture_output=True, text=True, env=dict(env), stdin=subprocess.DEVNULL,
                          timeout=900)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise PipelineError(lines[-1][:300] if lines else f"{docker} buildx build exited {done.returncode}")


def mounts_of(request: BuildRequest, root: pathlib.Path) -> Mounts:
    return find_mounts(DirSnapshot(root), request.dockerfile, request.context, dict(request.all_build_args), request.target)


def restore(docker: str, request: BuildRequest, root: pathlib.Path, work: pathlib.Path, env: Mapping[str, str],
            store: PackageStore, scope: str, mounts: Mounts) -> list[Restored]:
    out = []
    work.mkdir(parents=True, exist_ok=True)
    for mount in mounts.mounts:
        state = Restored(mounts, mount, mount.key(scope), mount.restore_prefix(scope))
        started = time.monotonic()
        try:
            found = store.find(state.key, state.prefix)
            if found is None:
                state.sentences.append(f"nothing saved yet in {store.name}")
            elif found.key == state.key:
                state.found, state.exact = found.key, True
                state.sentences.append(f"{mount.step}'s inputs are unchanged since `{found.key}` was saved: "
                                       f"its layer comes from the layer cache, nothing restored")
            else:
                data = found.read()
                with tempfile.TemporaryDirectory(prefix="dimbybot2-pkgcache-", dir=work) as tmp:
                    context = pathlib.Path(tmp) / "context"
                    context.mkdir()
                    (context / ARCHIVE).write_bytes(data)
                    _helper_build(docker, restore_dockerfile(mounts, mount), context, request, "type=cacheonly", env)
                state.found, state.digest, state.size = found.key, contents_digest(data), len(data)
                state.sentences.append(f"restored {human(len(data))} from `{found.key}` (saved for other inputs of "
                                       f"{mount.step}) in {time.monotonic() - started:.1f} s")
        except (PipelineError, OSError, ValueError) as err:
            state.ok = False
            state.sentences.append(f"restore failed, built without it: {str(err)[:300]}")
        state.seconds = time.monotonic() - started
        out.append(state)
    return out


def save(docker: str, restored: list[Restored], request: BuildRequest, work: pathlib.Path, env: Mapping[str, str],
         store: PackageStore, log: BuildLog | None, built: bool) -> list[PackageCacheStatus]:
    """After the image build: save each mount its step changed; one status per mount."""
    statuses = []
    steps = log.by_label() if log is not None else {}
    for state in restored:
        started = time.monotonic()
        saved_as, saved_bytes, ok = None, 0, state.ok
        step = steps.get(state.mount.step)
        if not built or step is None:
            state.sentences.append("the build did not finish: nothing saved")
        elif step.cached:
            state.sentences.append(f"{state.mount.step} hit the layer cache: the mount was not used, nothing to save")
        elif state.exact:
            state.sentences.append("already saved under this key")
        else:
            try:
                with tempfile.TemporaryDirectory(prefix="dimbybot2-pkgcache-", dir=work) as tmp:
                    directory = pathlib.Path(tmp)
                    (directory / "context").mkdir()
                    _helper_build(docker, extract_dockerfile(state.mounts, state.mount), directory / "context",
                                  request, f"type=local,dest={directory / 'out'}", env)
                    data = (directory / "out" / ARCHIVE).read_bytes()
                    shutil.rmtree(directory / "out")
                if state.digest is not None and contents_digest(data) == state.digest:
                    state.sentences.append(f"{state.mount.step} left the files as restored: not saved again")
                elif store.save(state.key, state.prefix, data):
                    saved_as, saved_bytes = state.key, len(data)
                    state.sentences.append(f"saved {human(len(data))} as `{state.key}` in {time.monotonic() - started:.1f} s")
                else:
                    state.sentences.append(f"`{state.key}` was saved meanwhile by another build")
            except (PipelineError, OSError, ValueError) as err:
                ok = False
                state.sentences.append(f"not saved (the next change of its inputs downloads again): {str(err)[:300]}")
        statuses.append(PackageCacheStatus(
            mount=state.mount.mount_id, ok=ok, restored_from=state.found, exact=state.exact, restored_bytes=state.size,
            saved_as=saved_as, saved_bytes=saved_bytes, seconds=state.seconds + time.monotonic() - started,
            detail="; ".join(state.sentences)))
    return statuses

