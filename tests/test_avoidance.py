"""Build avoidance's input key (ci.avoidance), without Docker: what changes it, what does not,
and where there is no key. The real-BuildKit checks are in tests/agreement.py (every explain
scenario: a miss means a different key) and tests/test_avoidance_push.py."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from ci import avoidance
from ci.errors import PipelineError
from ci.explain.snapshot import DirSnapshot
from ci.model import BuildRequest, Output

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DOCKERFILE = """\
ARG BASE=registry.test/base:1
FROM ${BASE} AS deps
COPY requirements.txt /deps/
RUN cat /deps/requirements.txt > /deps/installed

FROM ${BASE} AS docs
COPY docs/ /docs/

FROM ${BASE} AS final
ARG GREETING=hello
COPY --from=deps /deps/installed /opt/installed
COPY app/ /app/
# a comment
RUN echo "$GREETING" \\
    # a comment inside the RUN
    > /greeting
CMD ["/app/run"]
"""
FILES = {"requirements.txt": "flask==3.0\n", "app/main.py": "print(1)\n", "app/run": "#!/bin/sh\n", "docs/index.md": "# docs\n",
         "notes.md": "ignored\n", "other.txt": "not copied\n", ".dockerignore": "notes.md\n"}


def tree(root: pathlib.Path, dockerfile: str = DOCKERFILE, files: dict[str, str] = FILES) -> pathlib.Path:
    root.mkdir()
    for name, text in {**files, "Dockerfile": dockerfile}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def resolver(digests: dict[str, str]) -> Callable[[str], str]:
    def resolve(ref: str) -> str:
        if ref not in digests:
            raise PipelineError(f"registry {ref.split('/')[0]} is unreachable: Name or service not known")
        return digests[ref]
    return resolve


BASES = {"registry.test/base:1": DIGEST_A}


def key_of(root: pathlib.Path, args: dict[str, str] | None = None, target: str | None = "final", builder: str = "buildkit-1",
           bases: dict[str, str] = BASES, epoch: int | None = 0, rewrite: bool = False) -> avoidance.InputKey:
    request = BuildRequest(image="t", context=".", dockerfile="Dockerfile", output=Output("push", rewrite_timestamp=rewrite),
                           target=target, build_args=tuple(sorted((args or {}).items())), source_date_epoch=epoch)
    return avoidance.input_key(DirSnapshot(root), request, builder, resolver(bases))


def test_the_same_inputs_give_the_same_key_and_name_the_resolved_base(tmp_path: pathlib.Path) -> None:
    first, second = key_of(tree(tmp_path / "a")), key_of(tree(tmp_path / "b"))
    assert first.key is not None and len(first.key) == 64
    assert first.key == second.key
    assert first.tag == f"inputs-{first.key}"
    assert first.bases == (avoidance.BaseImage("registry.test/base:1", DIGEST_A),)


CHANGES: dict[str, Callable[[pathlib.Path], None]] = {
    "copied file content": lambda r: (r / "app/main.py").write_text("print(2)\n"),
    "copied file mode": lambda r: (r / "app/run").chmod(0o755),
    "file added to a copied directory": lambda r: (r / "app/new.py").write_text(""),
    "empty directory added to a copied directory": lambda r: (r / "app/empty").mkdir(),
    "dependency stage input": lambda r: (r / "requirements.txt").write_text("flask==3.1\n"),
    "ARG default": lambda r: (r / "Dockerfile").write_text(DOCKERFILE.replace("GREETING=hello", "GREETING=hi")),
    "CMD (image config only, every step still hits)": lambda r: (r / "Dockerfile").write_text(DOCKERFILE.replace('"/app/run"', '"/app/main.py"')),
    "indentation inside a RUN": lambda r: (r / "Dockerfile").write_text(DOCKERFILE.replace("    > /greeting", "  > /greeting")),
    ".dockerignore now lets a copied file out": lambda r: (r / ".dockerignore").write_text("notes.md\napp/main.py\n"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_input_change_changes_the_key(change: str, tmp_path: pathlib.Path) -> None:
    base = key_of(tree(tmp_path / "base"))
    head_root = tree(tmp_path / "head")
    CHANGES[change](head_root)
    head = key_of(head_root)
    assert base.key and head.key and base.key != head.key


def test_a_symlink_target_is_in_the_key(tmp_path: pathlib.Path) -> None:
    keys = []
    for name, target in (("a", "main.py"), ("b", "run"), ("c", "main.py")):
        root = tree(tmp_path / name)
        (root / "app" / "link").symlink_to(target)
        keys.append(key_of(root).key)
    assert keys[0] == keys[2] != keys[1]


SAME: dict[str, Callable[[pathlib.Path], None]] = {
    "comment line": lambda r: (r / "Dockerfile").write_text(DOCKERFILE.replace("# a comment\n", "# another comment\n")),
    "comment inside a RUN": lambda r: (r / "Dockerfile").write_text(DOCKERFILE.replace("inside the RUN", "in the RUN")),
    "ignored file": lambda r: (r / "notes.md").write_text("new notes\n"),
    "file no COPY selects": lambda r: (r / "other.txt").write_text("changed\n"),
    "stage the target does not build": lambda r: (r / "docs/index.md").write_text("# docs v2\n"),
    "mtime only": lambda r: [os.utime(p, (1_000_000, 1_000_000)) for p in r.rglob("*")],
}


@pytest.mark.parametrize("change", list(SAME))
def test_what_cannot_reach_the_image_keeps_the_key(change: str, tmp_path: pathlib.Path) -> None:
    base = key_of(tree(tmp_path / "base"))
    head_root = tree(tmp_path / "head")
    SAME[change](head_root)
    assert base.key is not None and key_of(head_root).key == base.key


def test_build_settings_and_the_builder_are_in_the_key(tmp_path: pathlib.Path) -> None:
    root = tree(tmp_path / "a")
    keys = {key_of(root).key, key_of(root, {"GREETING": "salut"}).key, key_of(root, target="deps").key,
            key_of(root, epoch=1_700_000_000).key, key_of(root, builder="buildkit-2").key, key_of(root, rewrite=True).key,
            key_of(root, bases={"registry.test/base:1": DIGEST_B}).key}
    assert None not in keys and len(keys) == 7


def test_a_digest_pinned_base_needs_no_lookup(tmp_path: pathlib.Path) -> None:
    pinned = f"registry.test/base@{DIGEST_B}"
    key = key_of(tree(tmp_path / "a"), {"BASE": pinned}, bases={})
    assert key.key is not None and key.bases == (avoidance.BaseImage(pinned, DIGEST_B),)


NO_KEY: dict[str, tuple[str, str]] = {
    "syntax directive": ("# syntax=docker/dockerfile:1\n" + DOCKERFILE, "names a frontend explain cannot see"),
    "ADD of a URL": (DOCKERFILE.replace("COPY app/ /app/", "ADD https://example.test/app.tgz /app/"), "adds a remote source"),
    "ADD of a git repository": (DOCKERFILE.replace("COPY app/ /app/", "ADD git@example.test:app.git /app/"), "adds a remote source"),
    "secret mount": (DOCKERFILE.replace("RUN echo", "RUN --mount=type=secret,id=token echo"), "mounts a secret"),
    "ssh mount": (DOCKERFILE.replace("RUN echo", "RUN --mount=type=ssh echo"), "mounts a ssh"),
    "unreadable Dockerfile": (DOCKERFILE.replace("CMD", "FROBNICATE"), "explain cannot read the build"),
}


@pytest.mark.parametrize("case", list(NO_KEY))
def test_inputs_the_model_cannot_see_mean_no_key(case: str, tmp_path: pathlib.Path) -> None:
    dockerfile, reason = NO_KEY[case]
    key = key_of(tree(tmp_path / "a", dockerfile))
    assert key.key is None and key.tag is None
    assert reason in key.reason


def test_a_secret_mount_in_a_stage_the_target_skips_keeps_the_key(tmp_path: pathlib.Path) -> None:
    dockerfile = DOCKERFILE.replace("COPY docs/ /docs/", "RUN --mount=type=secret,id=t cat /run/secrets/t")
    assert key_of(tree(tmp_path / "a", dockerfile)).key is not None


def test_an_unresolvable_base_means_no_key_and_says_which(tmp_path: pathlib.Path) -> None:
    key = key_of(tree(tmp_path / "a"), bases={})
    assert key.key is None
    assert key.reason.startswith("base image registry.test/base:1 could not be resolved (registry registry.test is unreachable")


def test_a_remote_context_means_no_key(tmp_path: pathlib.Path) -> None:
    request = BuildRequest(image="t", context="https://example.test/repo.git", dockerfile="Dockerfile", output=Output("push"))
    key = avoidance.input_key(DirSnapshot(tree(tmp_path / "a")), request, "b", resolver(BASES))
    assert key.key is None and key.reason == "the build context is remote"


@pytest.mark.parametrize(("ref", "parts"), [
    ("python:3.11", ("docker.io", "library/python", "3.11")),
    ("python", ("docker.io", "library/python", "latest")),
    ("team/app:1", ("docker.io", "team/app", "1")),
    ("127.0.0.1:5000/a/b:c", ("127.0.0.1:5000", "a/b", "c")),
    ("localhost/x", ("localhost", "x", "latest")),
    ("ghcr.io/o/lavalink:4@" + DIGEST_A, ("ghcr.io", "o/lavalink", DIGEST_A)),
    ("registry.test:443/p", ("registry.test:443", "p", "latest")),
])
def test_references_split_as_docker_names_them(ref: str, parts: tuple[str, str, str]) -> None:
    assert avoidance.split_ref(ref) == parts


@pytest.mark.parametrize(("patterns", "directory", "pruned"), [
    ("*\n!app\n!requirements.txt\n", ".venv", True),
    ("*\n!app\n", "app", False),
    ("*\n!app/sub/keep.txt\n", "app", False),  # ignored itself, but an exception reaches below it
    ("*\n!**/*.py\n", ".venv", False),  # an exception that can match anywhere
    ("node_modules\n", "node_modules", True),
    ("node_modules\n!node_modules/keep\n", "node_modules", False),
    ("notes.md\n", "app", False),  # not ignored at all
])
def test_a_walk_skips_only_trees_nothing_below_can_reach(patterns: str, directory: str, pruned: bool) -> None:
    from ci.explain.ignore import IgnoreRules

    assert IgnoreRules.parse(patterns).excludes_tree(directory) is pruned


def test_skipping_ignored_trees_leaves_the_key_as_a_full_walk_makes_it(tmp_path: pathlib.Path) -> None:
    allow_list = {**FILES, ".dockerignore": "*\n!app\n!requirements.txt\n!app/deep/keep.py\n"}
    root = tree(tmp_path / "a", files=allow_list)
    for name in (".venv/lib/site", "app/deep", "cache/empty"):
        (root / name).mkdir(parents=True)
    (root / ".venv/lib/site/x.py").write_text("")
    (root / "app/deep/keep.py").write_text("")
    request = BuildRequest(image="t", context=".", dockerfile="Dockerfile", output=Output("push"), target="final")
    full = avoidance.input_key(DirSnapshot(root, (".", lambda _: False)), request, "b", resolver(BASES))
    assert full.key is not None and avoidance.input_key(DirSnapshot(root), request, "b", resolver(BASES)).key == full.key
