"""explain on a repository: pick the base and head, the images, and compare."""

from __future__ import annotations

import pathlib
import posixpath
import subprocess
from collections.abc import Mapping, Sequence

from .. import config as project_config
from ..errors import InputError
from .dockerfile import DockerfileError
from .ignore import IgnorePatternError
from .predict import BuildInput, ImagePrediction, compare
from .snapshot import DirSnapshot, GitSnapshot, Snapshot


def _git(repo: pathlib.Path, *args: str) -> str | None:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def default_base(repo: pathlib.Path) -> str:
    """The merge-base of HEAD with the default branch (origin/HEAD, main, master), else HEAD."""
    candidates = [_git(repo, "rev-parse", "--abbrev-ref", "origin/HEAD"), "origin/main", "main", "origin/master", "master"]
    for branch in filter(None, candidates):
        if base := _git(repo, "merge-base", "HEAD", branch):
            return base
    if _git(repo, "rev-parse", "--verify", "HEAD") is None:
        raise InputError("--base", f"{repo} has no commits to compare with")
    return "HEAD"


def snapshot(repo: pathlib.Path, revision: str | None, argument: str) -> Snapshot:
    if revision is None:
        return DirSnapshot(repo)
    if _git(repo, "rev-parse", "--verify", f"{revision}^{{commit}}") is None:
        raise InputError(argument, f"{revision!r} is not a commit in {repo}")
    return GitSnapshot(repo, revision)


def explain_repository(repo: pathlib.Path, base: str | None = None, head: str | None = None,
                       images: Sequence[str] = (), dockerfile: str | None = None, context: str | None = None,
                       target: str | None = None, build_args: Mapping[str, str] | None = None) -> list[ImagePrediction]:
    """Predict the configured images (or one --dockerfile/--context pair) from base to head.

    base: a revision (default: merge-base with the default branch); head: a revision, or the
    working tree when None.
    """
    repo = repo.resolve()
    base_rev = base or default_base(repo)
    base_snapshot = snapshot(repo, base_rev, "--base")
    head_snapshot = snapshot(repo, head, "--head")
    if (dockerfile is None) != (context is None):
        raise InputError("--dockerfile", "--dockerfile and --context go together")
    targets: list[tuple[str, str, str, str | None, dict[str, str]]]
    if dockerfile is not None and context is not None:
        targets = [("custom", _rel(repo, dockerfile, "--dockerfile"), _rel(repo, context, "--context"), target, {})]
    else:
        chosen = project_config.load(repo).select(list(images))
        targets = [(i.name, i.dockerfile, i.context, target or i.target, dict(i.build_args)) for i in chosen]
    results = []
    for name, file, ctx, stage, args in targets:
        if head_snapshot.read(file) is None:
            raise InputError("--dockerfile", f"{file} not found in the head ({head or 'working tree'})")
        merged = {**args, **(build_args or {})}
        try:
            results.append(compare(name, BuildInput(base_snapshot, file, ctx, merged, stage),
                                   BuildInput(head_snapshot, file, ctx, merged, stage)))
        except DockerfileError as err:
            raise InputError("--dockerfile", f"{file}: {err}") from None
        except IgnorePatternError as err:
            raise InputError("--context", f"{posixpath.join(ctx, '.dockerignore')}: {err}") from None
        except ValueError as err:
            raise InputError("--target", str(err).removeprefix("--target: ")) from None
    return results


def _rel(repo: pathlib.Path, path: str, argument: str) -> str:
    full = (repo / path).resolve()
    try:
        rel = full.relative_to(repo)
    except ValueError:
        raise InputError(argument, f"{path} is outside the repository {repo}") from None
    return "." if str(rel) == "." else rel.as_posix()
