"""Package caches that survive fresh runners: the contents of each `RUN --mount=type=cache`.

BuildKit keeps a cache mount's contents (the bot's pip cache) in the builder's own state, so a
fresh CI runner starts with it empty and a lock change downloads every package again. This
module is the plain part of carrying it across runners (the drivers do the I/O):

  find_mounts()        the cache mounts a build uses, each with the key it is saved under: the
                       modelled cache key of its RUN step (ci.explain), so the key changes
                       exactly when that step's inputs change (for the bot: the lock file)
  restore_dockerfile() a one-step build that unpacks a saved archive into the mount
  extract_dockerfile() a one-step build that packs the mount into an archive (local output)
  contents_digest()    what an archive holds, without mtimes: "did the mount change?"

Saved under `pkgcache-<scope>-<mount id>-<step key>`; a lookup falls back to the newest entry
of the same mount (`restore_prefix`), so a lock change starts from the previous lock's cache
and the package manager fetches only what is new. The cache mount never reaches the image, so
restoring it cannot change a digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import tarfile

from .explain import predict
from .explain.dockerfile import DockerfileError, Instruction, mount_options
from .explain.snapshot import Snapshot

PREFIX = "pkgcache"
ARCHIVE = "cache.tar"
RESTORE_DIR = "/dimbybot2-pkgcache-restore"
PACK_DIR = "/dimbybot2-pkgcache-pack"
# A build arg of the helper builds' RUN step, new for every run: the step always runs. Not
# --no-cache: BuildKit gives a build without cache empty cache mounts too.
RUN_ID_ARG = "DIMBYBOT2_PKGCACHE_RUN"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass(frozen=True)
class CacheMount:
    """One `--mount=type=cache` of a RUN step, and what it is keyed by."""

    mount_id: str  # BuildKit's id for it (the target when no id is given)
    spec: str  # the --mount value as written: the helper builds mount the very same cache
    target: str
    base: str  # the FROM of its stage as written (the helper builds resolve it with the same args)
    step: str  # the step's label, e.g. "deps 4/4"
    step_key: str  # the modelled cache key of that RUN step

    def restore_prefix(self, scope: str) -> str:
        return f"{PREFIX}-{scope}-{_SAFE.sub('_', self.mount_id.strip('/'))[:40]}-"

    def key(self, scope: str) -> str:
        return self.restore_prefix(scope) + self.step_key[:24]


@dataclasses.dataclass(frozen=True)
class Mounts:
    """The cache mounts of one build, the global ARG lines the helper builds repeat, and why
    mounts were left out (a mount the helper builds could not reproduce is not saved)."""

    mounts: tuple[CacheMount, ...]
    global_args: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


def find_mounts(snapshot: Snapshot, dockerfile: str, context: str, build_args: dict[str, str],
                target: str | None) -> Mounts:
    """The cache mounts of the stages the build needs, in build order."""
    build = predict.BuildInput(snapshot, dockerfile, context, build_args, target)
    try:
        parsed, stages, _ = predict.needed_stages(build)
        steps = predict.model(build)
    except (DockerfileError, ValueError, OSError) as err:
        return Mounts((), left_out=(f"the Dockerfile cannot be read: {str(err)[:200]}",))
    by_text: dict[tuple[str, str], Instruction] = {}
    bases: dict[str, str] = {}
    for stage in stages:
        bases[stage.label_name] = stage.base
        for ins in stage.instructions:
            if ins.keyword == "RUN":
                by_text.setdefault((stage.label_name, ins.text), ins)
    found: list[CacheMount] = []
    left_out: list[str] = []
    for step in steps:
        run = by_text.get((step.stage, step.instruction)) if step.keyword == "RUN" else None
        for spec in run.flag_values("mount") if run is not None else ():
            options = mount_options(spec)
            if options.get("type") != "cache":
                continue
            if "$" in spec or options.get("from"):
                left_out.append(f"{step.label}: a cache mount with ARG values or from= is not saved")
                continue
            if parsed.stage(bases[step.stage]) is not None:
                left_out.append(f"{step.label}: its stage is built FROM another stage; not saved")
                continue
            target = options.get("target", "")
            found.append(CacheMount(options.get("id") or target, spec, target, bases[step.stage], step.label, step.key))
    unique = {m.mount_id: m for m in reversed(found)}  # one archive per mount id: the first use keys it
    return Mounts(tuple(m for m in found if unique[m.mount_id] is m), tuple(a.text for a in parsed.global_args),
                  tuple(left_out))


def restore_dockerfile(mounts: Mounts, mount: CacheMount) -> str:
    """Unpack `cache.tar` from the build context into the cache mount."""
    return "\n".join([*mounts.global_args, f"FROM {mount.base}", f"ARG {RUN_ID_ARG}",
                      f"RUN --mount={mount.spec} --mount=type=bind,source=.,target={RESTORE_DIR} "
                      f"tar -xf {RESTORE_DIR}/{ARCHIVE} -C {mount.target}", ""])


def extract_dockerfile(mounts: Mounts, mount: CacheMount) -> str:
    """Pack the cache mount into `/cache.tar` of a scratch image (for a local output).
    Sorted names and numeric owners: the same contents give the same archive."""
    return "\n".join([*mounts.global_args, f"FROM {mount.base} AS pack", f"ARG {RUN_ID_ARG}",
                      f"RUN --mount={mount.spec} mkdir -p {PACK_DIR} "
                      f"&& tar --sort=name --numeric-owner -cf {PACK_DIR}/{ARCHIVE} -C {mount.target} .",
                      "FROM scratch", f"COPY --from=pack {PACK_DIR}/{ARCHIVE} /{ARCHIVE}", ""])


def contents_digest(archive: bytes) -> str:
    """sha256 over every member's path, type, mode, owner, size, content and link target (not
    mtimes): equal when the mount holds the same files."""
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name)
        for member in members:
            content = b""
            if member.isfile():
                extracted = tar.extractfile(member)
                content = extracted.read() if extracted is not None else b""
            digest.update(repr((member.name.removeprefix("./"), member.type, member.mode, member.uid, member.gid,
                                member.size, member.linkname)).encode())
            digest.update(hashlib.sha256(content).digest())
    return "sha256:" + digest.hexdigest()
