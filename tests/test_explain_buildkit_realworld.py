"""explain against real BuildKit on shapes from public Dockerfiles and Docker's guides (issue 18):
bind-mounted context files, `COPY . .` with the Dockerfile and .dockerignore in the context,
allow-list ignore files, `COPY --chmod/--chown`, `ADD` of a local archive, global ARGs in FROM,
SHELL/USER/ENV-from-ARG, heredocs, `COPY --link`, globs, symlinks, deleted files, metadata-only
edits, `COPY --from=<image>`, cache-mount options, relative WORKDIR, `--target`, an ARG of the
parent stage, and the single-stage label rule (`stage-0` once a RUN has a --mount).

Each scenario is its own small context: a nonce unique to the test run goes into its first step,
so nothing from other runs, scenarios or engineers on the same daemon is reused; base then head
are built (cacheonly: no image is tagged) and explain must list exactly BuildKit's labels and
every step's hit/miss, except steps BuildKit decides by the bytes a rebuilt stage produced,
which explain marks content-decided (recorded apart in tests.agreement.CONTENT_DECIDED).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import shutil
import tarfile
import uuid
from collections.abc import Callable

import pytest

from ci.explain.predict import BuildInput, compare
from ci.explain.snapshot import DirSnapshot
from tests.agreement import CONTENT_DECIDED, assert_agreement, assert_avoidance, build
from tests.conftest import BASE_PREFIX

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

DEBIAN = f"{BASE_PREFIX}/debian:bookworm"
PYTHON = f"{BASE_PREFIX}/python:3.11"
Mutation = Callable[[pathlib.Path], None]


@dataclasses.dataclass(frozen=True)
class Scenario:
    dockerfile: str  # NONCE is replaced by the run's nonce; {DEBIAN} by the local base image
    files: dict[str, str]
    mutate: Mutation | None
    head_args: dict[str, str] = dataclasses.field(default_factory=dict)
    target: str | None = None
    setup: Mutation | None = None  # modes, symlinks, archives of the base
    content_decided: bool = False  # explain must mark some step content-decided


def edit(path: str, text: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return apply


def delete(path: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        (root / path).unlink()
    return apply


def dockerfile(old: str, new: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        text = (root / "Dockerfile").read_text()
        assert old in text, old
        (root / "Dockerfile").write_text(text.replace(old, new, 1))
    return apply


def chmod(path: str, mode: int) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        (root / path).chmod(mode)
    return apply


def symlink(path: str, target: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        (root / path).unlink(missing_ok=True)
        (root / path).symlink_to(target)
    return apply


def archive(path: str, members: dict[str, str]) -> Mutation:
    """A gzipped tar with fixed mtimes (its bytes depend on the members only)."""
    def apply(root: pathlib.Path) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, text in sorted(members.items()):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1_000_000, 0o644
                tar.addfile(info, io.BytesIO(data))
        import gzip

        (root / path).write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return apply


def both(*mutations: Mutation) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        for m in mutations:
            m(root)
    return apply


def touch_all(root: pathlib.Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, (2_000_000, 2_000_000), follow_symlinks=False)


SINGLE_BIND = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
RUN --mount=type=bind,source=scripts,target=/mnt/scripts sh /mnt/scripts/build.sh > /built.txt
RUN echo after > /after.txt
"""
WHOLE_CONTEXT_BIND = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
WORKDIR /src
RUN --mount=type=bind,target=/src cat /src/app.txt > /app.copy
"""
SINGLE_CACHE = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
COPY app.txt /app.txt
RUN --mount=type=cache,target=/root/.cache,id=demo-cache echo cached > /cached.txt
RUN echo after > /after.txt
"""
COPY_ALL = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
WORKDIR /app
COPY . .
RUN ls -a /app > /listing.txt
LABEL org.opencontainers.image.title=demo
EXPOSE 8080
HEALTHCHECK --interval=30s CMD true
CMD ["cat", "/listing.txt"]
"""
COPY_ALL_FILES = {"app.txt": "app\n", "lib/util.txt": "util\n", "notes.md": "notes\n", ".dockerignore": "notes.md\n"}
ALLOW_LIST = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
WORKDIR /app
COPY . .
RUN find /app -type f | sort > /files.txt
"""
ALLOW_LIST_FILES = {
    ".dockerignore": "# allow-list\n*\n!src\n!requirements.txt\nsrc/**/*_test.py\nsrc/**/__pycache__\n",
    "requirements.txt": "flask\n",
    "src/app.py": "print(1)\n",
    "src/pkg/mod.py": "x = 1\n",
    "src/pkg/mod_test.py": "def test(): pass\n",
    "src/pkg/__pycache__/mod.pyc": "bytecode\n",
    "README.md": "readme\n",
    "Makefile": "all:\n",
}
CHMOD_CHOWN = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
COPY --chmod=755 run.sh /usr/local/bin/run.sh
COPY --chown=1000:1000 data/ /data/
RUN ls -ln /data /usr/local/bin/run.sh > /perms.txt
"""
ADD_ARCHIVE = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
ADD vendor.tar.gz /opt/vendor/
RUN ls /opt/vendor > /vendor.txt
"""
GLOBAL_ARG_FROM = """\
ARG REGISTRY={BASE_PREFIX}
ARG DEBIAN_TAG=bookworm
ARG UNUSED=1
FROM ${{REGISTRY}}/debian:${{DEBIAN_TAG}}
ARG DEBIAN_TAG
RUN echo NONCE > /nonce
RUN echo "tag $DEBIAN_TAG" > /tag.txt
"""
SHELL_USER_ENV = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
ARG APP_VERSION=1.0
ENV APP_VERSION=${{APP_VERSION}} PATH=/opt/app/bin:$PATH
SHELL ["/bin/sh", "-c"]
RUN echo "version $APP_VERSION" > /version.txt
USER root
COPY app.txt /home/app.txt
RUN id -u > /tmp/uid.txt
"""
HEREDOC = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
RUN <<EOT
#!/bin/sh
set -e
echo one > /one.txt
EOT
COPY <<-EOF /etc/motd
	hello
	EOF
RUN cat /etc/motd > /motd.copy
"""
LINK = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
RUN echo parent > /parent.txt
COPY --link app/ /app/
RUN cat /app/main.txt > /main.copy
"""
GLOB = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
COPY *.txt /texts/
COPY conf/*.ini /conf/
RUN ls /texts /conf > /ls.txt
"""
GLOB_FILES = {"a.txt": "a\n", "b.txt": "b\n", "c.md": "c\n", "conf/x.ini": "x\n", "conf/y.cfg": "y\n"}
LINKS_AND_DELETES = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
COPY tree/ /tree/
RUN ls -l /tree > /tree.txt
"""
LINK_FILES = {"tree/a.txt": "a\n", "tree/b.txt": "b\n", "tree/sub/c.txt": "c\n"}
FROM_IMAGE = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
COPY app.txt /app.txt
COPY --from={DEBIAN} /etc/debian_version /debian_version
RUN cat /debian_version > /v.txt
"""
CACHE_OPTIONS = """\
FROM {DEBIAN} AS build
RUN echo NONCE > /nonce
RUN --mount=type=cache,target=/var/cache/build,id=build,sharing=shared echo built > /built.txt
RUN --mount=type=tmpfs,target=/scratch echo tmp > /tmp.txt

FROM {DEBIAN} AS final
RUN echo NONCE > /nonce
COPY --from=build /built.txt /built.txt
"""
WORKDIRS = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
WORKDIR /srv
WORKDIR app
COPY app.txt ./
WORKDIR sub
RUN pwd > /pwd.txt
"""
TARGET = """\
FROM {DEBIAN} AS base
RUN echo NONCE > /nonce

FROM base AS test
COPY tests.txt /tests.txt
RUN cat /tests.txt

FROM base AS release
COPY app.txt /app.txt
RUN cat /app.txt > /release.txt
"""
PARENT_ARG = """\
FROM {DEBIAN} AS base
RUN echo NONCE > /nonce
RUN echo base > /base.txt
ARG CHANNEL=stable

FROM base AS runtime
COPY app.txt /app.txt
RUN echo runtime > /runtime.txt
RUN echo done > /done.txt
"""
FROM_STAGE = """\
FROM {DEBIAN} AS build
RUN echo NONCE > /nonce
COPY src.txt /src.txt
RUN cut -c1 /src.txt > /out.txt

FROM {DEBIAN} AS final
RUN echo NONCE > /nonce
COPY --from=build /out.txt /out.txt
RUN cat /out.txt > /final.txt
"""
SINGLE_SECRET_SSH = """\
FROM {DEBIAN}
RUN echo NONCE > /nonce
RUN --mount=type=secret,id=token,required=false cat /run/secrets/token 2>/dev/null > /t.txt || true
COPY app.txt /app.txt
"""

APP = {"app.txt": "app\n"}
SCENARIOS: dict[str, Scenario] = {
    "single stage: no mounts, no change (no label prefix)": Scenario(SINGLE_CACHE.replace(
        "--mount=type=cache,target=/root/.cache,id=demo-cache ", ""), APP, None),
    "single stage, RUN --mount=type=bind: mounted file changed (stage-0 labels)": Scenario(
        SINGLE_BIND, {"scripts/build.sh": "echo one\n", "other.txt": "x\n"}, edit("scripts/build.sh", "echo two\n")),
    "single stage, RUN --mount=type=bind: file outside the mount changed": Scenario(
        SINGLE_BIND, {"scripts/build.sh": "echo one\n", "other.txt": "x\n"}, edit("other.txt", "y\n")),
    "whole-context bind mount: ignored file changed": Scenario(
        WHOLE_CONTEXT_BIND, {**APP, "junk.log": "1\n", ".dockerignore": "*.log\n"}, edit("junk.log", "2\n")),
    "whole-context bind mount: any context file changed": Scenario(
        WHOLE_CONTEXT_BIND, {**APP, "other.txt": "1\n", ".dockerignore": "*.log\n"}, edit("other.txt", "2\n")),
    "single stage, cache mount: id changed": Scenario(SINGLE_CACHE, APP, dockerfile("id=demo-cache", "id=demo-cache2")),
    "single stage, cache mount: sharing=locked added": Scenario(SINGLE_CACHE, APP, dockerfile("id=demo-cache", "id=demo-cache,sharing=locked")),
    "single stage, default cache mount: sharing=locked added (clears id and sharing from the key)": Scenario(
        SINGLE_BIND.replace("--mount=type=bind,source=scripts,target=/mnt/scripts sh /mnt/scripts/build.sh", "--mount=type=cache,target=/var/cache/x echo x"),
        {}, dockerfile("target=/var/cache/x", "target=/var/cache/x,sharing=locked")),
    "single stage, cache mount: copied file changed": Scenario(SINGLE_CACHE, APP, edit("app.txt", "app 2\n")),
    "single stage, secret mount: nothing changed": Scenario(SINGLE_SECRET_SSH, APP, None),
    "COPY . . : CMD-only edit of the Dockerfile (it is in the context)": Scenario(
        COPY_ALL, COPY_ALL_FILES, dockerfile('CMD ["cat", "/listing.txt"]', 'CMD ["cat", "/app/app.txt"]')),
    "COPY . . : CMD-only edit, Dockerfile and .dockerignore ignored": Scenario(
        COPY_ALL, {**COPY_ALL_FILES, ".dockerignore": "notes.md\nDockerfile\n.dockerignore\n"},
        dockerfile('CMD ["cat", "/listing.txt"]', 'CMD ["cat", "/app/app.txt"]')),
    "COPY . . : .dockerignore edited (it is in the context)": Scenario(
        COPY_ALL, COPY_ALL_FILES, edit(".dockerignore", "notes.md\n*.tmp\n")),
    "COPY . . : ignored file changed": Scenario(COPY_ALL, COPY_ALL_FILES, edit("notes.md", "new notes\n")),
    "metadata-only edits (LABEL, EXPOSE, HEALTHCHECK) with Dockerfile ignored": Scenario(
        COPY_ALL, {**COPY_ALL_FILES, ".dockerignore": "notes.md\nDockerfile\n"},
        both(dockerfile("image.title=demo", "image.title=demo2"), dockerfile("EXPOSE 8080", "EXPOSE 9090"),
             dockerfile("--interval=30s", "--interval=10s"))),
    "allow-list: file outside it changed": Scenario(ALLOW_LIST, ALLOW_LIST_FILES, edit("README.md", "readme 2\n")),
    "allow-list: re-included file changed": Scenario(ALLOW_LIST, ALLOW_LIST_FILES, edit("src/pkg/mod.py", "x = 2\n")),
    "allow-list: nested exclude (test file) changed": Scenario(ALLOW_LIST, ALLOW_LIST_FILES, edit("src/pkg/mod_test.py", "def test(): 1\n")),
    "allow-list: nested exclude (__pycache__) changed": Scenario(ALLOW_LIST, ALLOW_LIST_FILES, edit("src/pkg/__pycache__/mod.pyc", "b2\n")),
    "allow-list: new file in the re-included directory": Scenario(ALLOW_LIST, ALLOW_LIST_FILES, edit("src/new.py", "n\n")),
    "COPY --chmod value changed": Scenario(CHMOD_CHOWN, {"run.sh": "echo\n", "data/d.txt": "d\n"}, dockerfile("--chmod=755", "--chmod=750")),
    "COPY --chown changed": Scenario(CHMOD_CHOWN, {"run.sh": "echo\n", "data/d.txt": "d\n"}, dockerfile("--chown=1000:1000", "--chown=1001:1001")),
    "COPY --chmod: source exec bit changed": Scenario(CHMOD_CHOWN, {"run.sh": "echo\n", "data/d.txt": "d\n"}, chmod("run.sh", 0o755)),
    "ADD local archive: member changed": Scenario(ADD_ARCHIVE, {}, archive("vendor.tar.gz", {"lib/a.txt": "a2\n"}),
                                                  setup=archive("vendor.tar.gz", {"lib/a.txt": "a\n"})),
    "ADD local archive: mtime only": Scenario(ADD_ARCHIVE, {}, touch_all, setup=archive("vendor.tar.gz", {"lib/a.txt": "a\n"})),
    "global ARG in FROM: unused global default changed": Scenario(GLOBAL_ARG_FROM, {}, dockerfile("ARG UNUSED=1", "ARG UNUSED=2")),
    "global ARG in FROM: --build-arg with the default's value": Scenario(GLOBAL_ARG_FROM, {}, None, {"DEBIAN_TAG": "bookworm"}),
    "global ARG in FROM: registry spelled through the ARG changed to the same image": Scenario(
        GLOBAL_ARG_FROM, {}, None, {"REGISTRY": BASE_PREFIX}),
    "ENV from ARG: ARG default changed": Scenario(SHELL_USER_ENV, APP, dockerfile("APP_VERSION=1.0", "APP_VERSION=1.1")),
    "ENV from ARG: --build-arg": Scenario(SHELL_USER_ENV, APP, None, {"APP_VERSION": "2.0"}),
    "SHELL changed": Scenario(SHELL_USER_ENV, APP, dockerfile('SHELL ["/bin/sh", "-c"]', 'SHELL ["/bin/bash", "-c"]')),
    "USER changed": Scenario(SHELL_USER_ENV, APP, dockerfile("USER root", "USER nobody")),
    "RUN heredoc with a shebang: body changed": Scenario(HEREDOC, {}, dockerfile("echo one >", "echo uno >")),
    "COPY <<- heredoc: body changed": Scenario(HEREDOC, {}, dockerfile("\thello\n", "\thello!\n")),
    "COPY --link: parent step rebuilt": Scenario(LINK, {"app/main.txt": "m\n"}, dockerfile("echo parent", "echo parent2")),
    "COPY --link: file added to the copied directory": Scenario(LINK, {"app/main.txt": "m\n"}, edit("app/new.txt", "n\n")),
    "glob gains a match": Scenario(GLOB, GLOB_FILES, edit("d.txt", "d\n")),
    "glob loses a match (file deleted)": Scenario(GLOB, GLOB_FILES, delete("b.txt")),
    "new file matching no glob": Scenario(GLOB, GLOB_FILES, edit("e.md", "e\n")),
    "second glob gains a match in its directory": Scenario(GLOB, GLOB_FILES, edit("conf/z.ini", "z\n")),
    "symlink target changed": Scenario(LINKS_AND_DELETES, LINK_FILES, symlink("tree/link", "b.txt"),
                                       setup=symlink("tree/link", "a.txt")),
    "symlink added": Scenario(LINKS_AND_DELETES, LINK_FILES, symlink("tree/link2", "a.txt"), setup=symlink("tree/link", "a.txt")),
    "file deleted from a copied directory": Scenario(LINKS_AND_DELETES, LINK_FILES, delete("tree/sub/c.txt")),
    "mtime-only change of a copied tree": Scenario(LINKS_AND_DELETES, LINK_FILES, touch_all),
    "COPY --from=<image> (single stage gets stage-0 labels)": Scenario(FROM_IMAGE, APP, edit("app.txt", "app 2\n")),
    "cache mount sharing mode changed": Scenario(CACHE_OPTIONS, {}, dockerfile("sharing=shared", "sharing=private")),
    "tmpfs mount target changed (final copies the rebuilt stage's unchanged file: content-decided)": Scenario(
        CACHE_OPTIONS, {}, dockerfile("target=/scratch", "target=/scratch2"), content_decided=True),
    "relative WORKDIR: first absolute WORKDIR changed": Scenario(WORKDIRS, APP, dockerfile("WORKDIR /srv", "WORKDIR /opt")),
    "relative WORKDIR: last relative one renamed": Scenario(WORKDIRS, APP, dockerfile("WORKDIR sub", "WORKDIR sub2")),
    "--target skips the changed stage": Scenario(TARGET, {**APP, "tests.txt": "t\n"}, edit("tests.txt", "t2\n"), target="release"),
    "--target builds the changed stage": Scenario(TARGET, {**APP, "tests.txt": "t\n"}, edit("tests.txt", "t2\n"), target="test"),
    "ARG at the end of the parent stage: default changed": Scenario(PARENT_ARG, APP, dockerfile("CHANNEL=stable", "CHANNEL=edge")),
    "ARG at the end of the parent stage: --build-arg": Scenario(PARENT_ARG, APP, None, {"CHANNEL": "beta"}),
    "COPY --from a rebuilt stage with byte-identical output (content-decided)": Scenario(
        FROM_STAGE, {"src.txt": "abc\n"}, edit("src.txt", "axy\n"), content_decided=True),
    "COPY --from a rebuilt stage with different output (content-decided)": Scenario(
        FROM_STAGE, {"src.txt": "abc\n"}, edit("src.txt", "xbc\n"), content_decided=True),
}


def _materialise(root: pathlib.Path, scenario: Scenario, nonce: str) -> None:
    root.mkdir(parents=True)
    for name, text in scenario.files.items():
        edit(name, text)(root)
    if scenario.setup:
        scenario.setup(root)
    text = scenario.dockerfile.format(DEBIAN=DEBIAN, BASE_PREFIX=BASE_PREFIX).replace("NONCE", nonce)
    (root / "Dockerfile").write_text(text)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_explain_agrees_with_buildkit_on_real_world_shapes(name: str, tmp_path: pathlib.Path) -> None:
    scenario = SCENARIOS[name]
    base = tmp_path / "base"
    _materialise(base, scenario, uuid.uuid4().hex)
    head = tmp_path / "head"
    shutil.copytree(base, head, symlinks=True)
    if scenario.mutate is not None:
        scenario.mutate(head)
    base_input = BuildInput(DirSnapshot(base), "Dockerfile", ".", {}, scenario.target)
    head_input = BuildInput(DirSnapshot(head), "Dockerfile", ".", scenario.head_args, scenario.target)
    prediction = compare("realworld", base_input, head_input)

    build(base, tmp_path / "work", {}, "realworld", scenario.target)
    actual = build(head, tmp_path / "work", scenario.head_args, "realworld", scenario.target)

    assert_avoidance(name, base_input, head_input, actual, unchanged=scenario.mutate is None and not scenario.head_args)
    assert_agreement(name, prediction, actual, unchanged=scenario.mutate is None and not scenario.head_args)
    assert (name in CONTENT_DECIDED) is scenario.content_decided, [(s.label, s.reason) for s in prediction.steps]
    if name in CONTENT_DECIDED:
        steps, cached = CONTENT_DECIDED[name]
        print(f"content-decided: {name}: {steps} steps, BuildKit cached {cached}")
