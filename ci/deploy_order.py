"""Is the commit being deployed newer than the one the host runs? Git history decides.

Builds of consecutive pushes run in parallel, so an older commit can reach the deploy step
last. The host records the commit it runs; the pipeline has the history. The rule:

- nothing deployed yet, the same commit again, or the deployed commit is an ancestor of the
  new one: go;
- the new commit is an ancestor of the deployed one (older): refused;
- neither is an ancestor of the other (diverged or unrelated histories, e.g. after a
  force-push), or the deployed commit is not in this checkout's history (shallow clone,
  a branch since deleted, a tag that is no commit): refused too, because "newer" cannot be
  shown. A person decides with --force; the host's history file says what ran before.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import re
import subprocess

_SHA = re.compile(r"^[0-9a-f]{40}$")


class Relation(enum.Enum):
    FIRST = "nothing deployed yet"
    SAME = "the same commit"
    NEWER = "newer than the deployed commit"
    OLDER = "older than the deployed commit"
    DIVERGED = "on a history that does not contain the deployed commit, nor is contained by it"
    UNKNOWN = "not comparable with the deployed commit"


@dataclasses.dataclass(frozen=True)
class OrderCheck:
    relation: Relation
    deployed: str
    new: str
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.relation in (Relation.FIRST, Relation.SAME, Relation.NEWER)

    def reason(self) -> str:
        if self.relation is Relation.FIRST:
            text = f"{self.new[:12]}: {self.relation.value}"
        elif self.relation is Relation.SAME:
            text = f"{self.new[:12]} is {self.relation.value} as deployed (a redeploy)"
        else:
            text = f"{self.new[:12]} is {self.relation.value} {self.deployed[:12]}"
        return text + (f" ({self.detail})" if self.detail else "")


def _is_ancestor(repo: pathlib.Path, older: str, newer: str) -> bool | None:
    """True/False from `git merge-base --is-ancestor`; None when git cannot tell (unknown commit)."""
    proc = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer],
                          capture_output=True, text=True)
    return {0: True, 1: False}.get(proc.returncode)


def _known(repo: pathlib.Path, commit: str) -> bool:
    proc = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return proc.returncode == 0


def check(repo: pathlib.Path | None, deployed: str | None, new: str) -> OrderCheck:
    """Where `new` stands against `deployed` (None or "none": nothing deployed)."""
    if not deployed or deployed == "none":
        return OrderCheck(Relation.FIRST, "none", new)
    if deployed == new:
        return OrderCheck(Relation.SAME, deployed, new)
    if not _SHA.match(deployed) or not _SHA.match(new):
        return OrderCheck(Relation.UNKNOWN, deployed, new, "not both commit SHAs")
    if repo is None:
        return OrderCheck(Relation.UNKNOWN, deployed, new, "no git history given")
    for commit in (new, deployed):
        if not _known(repo, commit):
            return OrderCheck(Relation.UNKNOWN, deployed, new, f"{commit[:12]} is not in the history of {repo}")
    if _is_ancestor(repo, deployed, new):
        return OrderCheck(Relation.NEWER, deployed, new)
    if _is_ancestor(repo, new, deployed):
        return OrderCheck(Relation.OLDER, deployed, new)
    return OrderCheck(Relation.DIVERGED, deployed, new)
