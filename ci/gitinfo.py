"""The commit SHA of a checkout, read from .git files (no git binary needed).

The Dagger skin cannot run git in the module's runtime, but it can read files of the
repository directory; the CLI uses the same function on the host.
"""

from __future__ import annotations

import pathlib
import re

_SHA = re.compile(r"^[0-9a-f]{40}$")


def head_sha(head: str, ref_file: str | None = None, packed_refs: str | None = None) -> str | None:
    """Resolve .git/HEAD: a detached SHA, or a ref found in its file or in packed-refs."""
    head = head.strip()
    if _SHA.match(head):
        return head
    if not head.startswith("ref: "):
        return None
    ref = head.removeprefix("ref: ").strip()
    if ref_file and _SHA.match(ref_file.strip()):
        return ref_file.strip()
    for line in (packed_refs or "").splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA.match(sha):
            return sha
    return None


def ref_of(head: str) -> str | None:
    head = head.strip()
    return head.removeprefix("ref: ").strip() if head.startswith("ref: ") else None


def read_head_sha(repo: pathlib.Path) -> str | None:
    git = repo / ".git"
    if not (git / "HEAD").is_file():
        return None
    head = (git / "HEAD").read_text()
    ref = ref_of(head)
    ref_file = git / ref if ref else None
    packed = git / "packed-refs"
    return head_sha(head, ref_file.read_text() if ref_file and ref_file.is_file() else None,
                    packed.read_text() if packed.is_file() else None)
