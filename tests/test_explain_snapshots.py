"""Both snapshot kinds (a git revision and the working tree) on the same cases: the same paths
name the same files, whatever way the context is spelled (`.`, `./`, ``, `sub`, `./sub/`), so
`.dockerignore` is found and applied in every revision (issue 18, defect 1)."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Callable

import pytest

from ci.explain.predict import BuildInput, compare
from ci.explain.snapshot import DirSnapshot, GitSnapshot, Snapshot, normalise

FILES = {
    "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
    ".dockerignore": "**/__pycache__\n*.log\n",
    "app.py": "print(1)\n",
    "debug.log": "log\n",
    "pkg/__pycache__/m.pyc": "bytecode\n",
    "sub/Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
    "sub/.dockerignore": "*\n!keep.txt\n",
    "sub/keep.txt": "kept\n",
    "sub/drop.txt": "dropped\n",
}


def _git(root: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True)


def _repo(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    return root


KINDS: dict[str, Callable[[pathlib.Path], Snapshot]] = {
    "git revision": lambda root: GitSnapshot(root, "HEAD"),
    "working tree": DirSnapshot,
}


@pytest.mark.parametrize("spelling", [".", "./", "", "./."])
@pytest.mark.parametrize("kind", list(KINDS))
def test_dockerignore_found_at_the_repository_root(kind: str, spelling: str, tmp_path: pathlib.Path) -> None:
    snap = KINDS[kind](_repo(tmp_path, FILES))
    assert snap.read(spelling + "/.dockerignore" if spelling else ".dockerignore") == FILES[".dockerignore"]
    assert snap.read("./Dockerfile") == FILES["Dockerfile"]
    assert set(snap.listing(spelling)) == set(FILES)
    assert snap.digest("./app.py") == snap.digest("app.py")


@pytest.mark.parametrize("spelling", ["sub", "./sub", "sub/", "./sub/"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_subdirectory_context_spellings_agree(kind: str, spelling: str, tmp_path: pathlib.Path) -> None:
    snap = KINDS[kind](_repo(tmp_path, FILES))
    assert set(snap.listing(spelling)) == {p for p in FILES if p.startswith("sub/")}
    assert snap.read(spelling.rstrip("/") + "/.dockerignore") == FILES["sub/.dockerignore"]


def test_normalise() -> None:
    assert [normalise(p) for p in (".", "./", "", "./.", "./a/../b", "a//b/", "/a")] == ["", "", "", "", "b", "a/b", "a"]


CHANGES: dict[str, tuple[str, str]] = {
    "ignored bytecode changed": ("pkg/__pycache__/m.pyc", "other bytecode\n"),
    "ignored log changed": ("debug.log", "more log\n"),
}


@pytest.mark.parametrize("context", [".", "./", ""])
@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize(("base_kind", "head_kind"), [("git revision", "git revision"), ("git revision", "working tree")])
def test_ignored_change_hits_with_either_snapshot_kind(base_kind: str, head_kind: str, change: str, context: str,
                                                       tmp_path: pathlib.Path) -> None:
    """`explain --base A --head B` (two revisions) and `explain --base A` (working tree): a change
    of an ignored file hits, and nothing ignored shows as removed."""
    root = _repo(tmp_path, FILES)
    path, text = CHANGES[change]
    (root / path).write_text(text)
    if head_kind == "git revision":
        _git(root, "commit", "-q", "-am", "head")
    base = GitSnapshot(root, "HEAD~1" if head_kind == "git revision" else "HEAD")
    head = KINDS[head_kind](root)
    prediction = compare("t", BuildInput(base, "Dockerfile", context), BuildInput(head, "Dockerfile", context))
    assert [s.status for s in prediction.steps] == ["hit"], [s.reason for s in prediction.steps]


@pytest.mark.parametrize(("base_kind", "head_kind"), [("git revision", "git revision"), ("git revision", "working tree")])
def test_copied_change_misses_with_either_snapshot_kind(base_kind: str, head_kind: str, tmp_path: pathlib.Path) -> None:
    root = _repo(tmp_path, FILES)
    (root / "app.py").write_text("print(2)\n")
    if head_kind == "git revision":
        _git(root, "commit", "-q", "-am", "head")
    base = GitSnapshot(root, "HEAD~1" if head_kind == "git revision" else "HEAD")
    prediction = compare("t", BuildInput(base, "Dockerfile", "."), BuildInput(KINDS[head_kind](root), "Dockerfile", "."))
    assert [(s.status, s.reason) for s in prediction.steps] == [("miss", "files changed: app.py (content changed)")]


@pytest.mark.parametrize("kind", list(KINDS))
def test_allow_list_in_a_subdirectory_context(kind: str, tmp_path: pathlib.Path) -> None:
    root = _repo(tmp_path, FILES)
    (root / "sub" / "drop.txt").write_text("dropped, changed\n")
    _git(root, "commit", "-q", "-am", "head")
    head = KINDS[kind](root)
    for ctx in ("sub", "./sub/"):
        prediction = compare("t", BuildInput(GitSnapshot(root, "HEAD~1"), "sub/Dockerfile", ctx),
                             BuildInput(head, "./sub/Dockerfile", ctx))
        assert [s.status for s in prediction.steps] == ["hit"], [s.reason for s in prediction.steps]
