"""The files of a repository at one point: a git revision, or the working tree on disk.

Paths are normalised the same way for both kinds (`normalise`): `./.dockerignore`, `.dockerignore`
and `sub/../.dockerignore` are one file in a revision as on disk.

Digests are git blob ids (sha1 of "blob <size>\\0<content>"), so a revision and the working
tree compare without reading the revision's files. Modes: git knows only 644/755 (and
symlinks); a directory on disk has full permission bits (see `comparable_mode`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import posixpath
import stat
import subprocess
from collections.abc import Callable
from typing import Literal, Protocol

Kind = Literal["file", "link"]


@dataclasses.dataclass(frozen=True)
class FileInfo:
    kind: Kind
    mode: int  # permission bits
    size: int
    link: str = ""


class Snapshot(Protocol):
    exact_modes: bool  # False for git (only the exec bit is known)

    def read(self, path: str) -> str | None: ...

    def listing(self, directory: str) -> dict[str, FileInfo]: ...

    def digest(self, path: str) -> str: ...


def normalise(path: str) -> str:
    """One spelling for a path inside a snapshot, for every snapshot kind: relative to the root,
    cleaned, no `./` and no trailing slash; the root itself is "" (`.`, `./`, `./.`, `/` and ``
    are all the root, `./a/../b/` is `b`)."""
    cleaned = posixpath.normpath(path.lstrip("/")) if path.strip("/") else "."
    return "" if cleaned == "." else cleaned


def _prefix(directory: str) -> str:
    """What every path below `directory` starts with ("" for the root)."""
    directory = normalise(directory)
    return directory + "/" if directory else ""


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class DirSnapshot:
    """Files on disk below `root` (the working tree, untracked files included, as BuildKit
    would send them)."""

    exact_modes = True

    def __init__(self, root: pathlib.Path, prune: tuple[str, Callable[[str], bool]] | None = None) -> None:
        """`prune`: (a directory, a test of paths relative to it): listing that directory
        does not enter subdirectories the test names (wholly .dockerignored trees)."""
        self.root = root
        self.prune = prune
        self._digests: dict[str, str] = {}
        self._index: dict[str, str] | None = None

    def _git_index(self) -> dict[str, str]:
        """Blob ids git already knows for tracked files that are unmodified on disk (git's
        stat cache decides, as for `git status`); other files are hashed when asked."""
        if self._index is None:
            self._index = {}
            staged = subprocess.run(["git", "ls-files", "-s", "-z"], capture_output=True, cwd=self.root)
            modified = subprocess.run(["git", "ls-files", "-m", "-z"], capture_output=True, cwd=self.root)
            if staged.returncode == 0 and modified.returncode == 0 and (self.root / ".git").exists():
                changed = set(modified.stdout.decode().split("\0"))
                for entry in filter(None, staged.stdout.decode().split("\0")):
                    meta, path = entry.split("\t", 1)
                    mode, blob, _ = meta.split()
                    if path not in changed and mode != "160000":
                        self._index[path] = blob
        return self._index

    def read(self, path: str) -> str | None:
        file = self.root / normalise(path)
        return file.read_text() if file.is_file() else None

    def listing(self, directory: str) -> dict[str, FileInfo]:
        prefix = _prefix(directory)
        base = self.root / prefix if prefix else self.root
        files: dict[str, FileInfo] = {}
        skip = self.prune[1] if self.prune is not None and normalise(self.prune[0]) == normalise(directory) else None
        for current, dirs, names in os.walk(base):
            rel_dir = os.path.relpath(current, base)
            dirs[:] = [d for d in dirs if d != ".git" and not (skip and skip(d if rel_dir == "." else f"{rel_dir}/{d}"))]
            for name in names + [d for d in dirs if os.path.islink(os.path.join(current, d))]:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                full = os.path.join(current, name)
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    files[prefix + rel] = FileInfo("link", 0o777, 0, os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    files[prefix + rel] = FileInfo("file", stat.S_IMODE(st.st_mode), st.st_size)
        return files

    def digest(self, path: str) -> str:
        path = normalise(path)
        if path not in self._digests:
            known = self._git_index().get(path)
            self._digests[path] = known or blob_id((self.root / path).read_bytes())
        return self._digests[path]


class GitSnapshot:
    """Files of a git revision, read with `git ls-tree` and `git show` (no checkout)."""

    exact_modes = False

    def __init__(self, repo: pathlib.Path, revision: str) -> None:
        self.repo = repo
        self.revision = revision
        self._tree: dict[str, tuple[FileInfo, str]] | None = None

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True, check=True).stdout

    def _load(self) -> dict[str, tuple[FileInfo, str]]:
        if self._tree is None:
            tree: dict[str, tuple[FileInfo, str]] = {}
            # No -l: sizes would make git open every blob; the blob id already says it all.
            out = subprocess.run(["git", "-C", str(self.repo), "ls-tree", "-r", "-z", "--full-tree", self.revision],
                                 capture_output=True, check=True).stdout.decode()
            links = []
            for entry in filter(None, out.split("\0")):
                meta, path = entry.split("\t", 1)
                mode, kind, blob = meta.split()
                if kind != "blob":
                    continue
                if mode == "120000":
                    links.append((path, blob))
                    tree[path] = (FileInfo("link", 0o777, 0), blob)
                else:
                    tree[path] = (FileInfo("file", 0o755 if mode == "100755" else 0o644, -1), blob)
            for path, blob in links:
                target = self._git("cat-file", "blob", blob)
                tree[path] = (FileInfo("link", 0o777, 0, target), blob)
            self._tree = tree
        return self._tree

    def read(self, path: str) -> str | None:
        tree = self._load()
        path = normalise(path)
        if path not in tree:
            return None
        return self._git("cat-file", "blob", tree[path][1])

    def listing(self, directory: str) -> dict[str, FileInfo]:
        prefix = _prefix(directory)
        return {path: info for path, (info, _) in self._load().items() if path.startswith(prefix)}

    def digest(self, path: str) -> str:
        return self._load()[normalise(path)][1]


def comparable_mode(mode: int, exact: bool) -> int:
    return mode if exact else (0o755 if mode & 0o111 else 0o644)
