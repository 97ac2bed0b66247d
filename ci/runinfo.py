"""Which run made a build report: commit, branch, time and workflow run, so reports can be trended.

On GitHub Actions the runner's variables say it (GITHUB_SHA, GITHUB_REF_NAME, GITHUB_RUN_ID, ...);
elsewhere the checkout's HEAD and branch, and the clock. Pure: the environment and the clock are
arguments.
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Mapping
from typing import Any

from . import gitinfo


def _branch(root: pathlib.Path) -> str | None:
    head = root / ".git" / "HEAD"
    ref = gitinfo.ref_of(head.read_text()) if head.is_file() else None
    return ref.removeprefix("refs/heads/") if ref else None


def current(root: pathlib.Path, env: Mapping[str, str], now: datetime.datetime, commit: str | None = None) -> dict[str, Any]:
    """The report's optional `run` object (schema dimbybot2.build-report/1); unknown fields are null."""
    on_github = env.get("GITHUB_ACTIONS") == "true"
    run_id = env.get("GITHUB_RUN_ID") if on_github else None
    server, repository = env.get("GITHUB_SERVER_URL", "https://github.com"), env.get("GITHUB_REPOSITORY")
    number = env.get("GITHUB_RUN_NUMBER", "") if on_github else ""
    return {
        "commit": commit or (env.get("GITHUB_SHA") if on_github else None) or gitinfo.read_head_sha(root),
        "branch": (env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME") if on_github else None) or _branch(root),
        "time": now.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "workflow": env.get("GITHUB_WORKFLOW") if on_github else None,
        "run_id": run_id,
        "run_number": int(number) if number.isdigit() else None,
        "url": f"{server}/{repository}/actions/runs/{run_id}" if run_id and repository else None,
    }
