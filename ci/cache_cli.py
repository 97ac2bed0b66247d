"""`dimbybot-ci cache usage|prune`: the GitHub Actions cache per BuildKit scope.

Reads the environment a workflow step has (GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL,
and for the index contents ACTIONS_RUNTIME_TOKEN / ACTIONS_RESULTS_URL, exported with
crazy-max/ghaction-github-runtime). Tokens are never taken from argv.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from typing import Annotated

import typer

from . import cache_usage
from .cache_client import RestCache, RuntimeCache
from .errors import InputError, PipelineError

app = typer.Typer(help="See the GitHub Actions cache per scope (bytes, entries, quota) and prune what no current index references.",
                  no_args_is_help=True)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|KiB|MiB|GiB)?$")
_UNITS = {"B": 1, None: 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_AGE = re.compile(r"^(\d+)(s|m|h|d)$")


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def _size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise InputError("--quota", f"a size like 10GB or 500MB, got {text!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def _age(text: str) -> int:
    match = _AGE.match(text.strip())
    if not match:
        raise InputError("--min-age", f"a duration like 30m, 1h or 2d, got {text!r}")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _env(name: str, argument: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise InputError(argument, f"environment variable {name} is empty or not set")
    return value


def _usage(repository: str, quota: str, min_age: str) -> tuple[cache_usage.Usage, RestCache]:
    """Validate everything, then list entries and read each current index."""
    quota_bytes, min_age_seconds = _size(quota), _age(min_age)
    repository = repository or _env("GITHUB_REPOSITORY", "--repository")
    if not re.match(r"^[\w.-]+/[\w.-]+$", repository):
        raise InputError("--repository", f"expected OWNER/NAME, got {repository!r}")
    rest = RestCache(repository, _env("GITHUB_TOKEN", "GITHUB_TOKEN"), os.environ.get("GITHUB_API_URL") or "https://api.github.com")
    runtime = None
    if os.environ.get("ACTIONS_RUNTIME_TOKEN") and os.environ.get("ACTIONS_RESULTS_URL"):
        runtime = RuntimeCache(os.environ["ACTIONS_RUNTIME_TOKEN"], os.environ["ACTIONS_RESULTS_URL"])
    entries = rest.entries()
    index_blobs: dict[int, set[str] | None] = {}
    for entry in entries:
        if cache_usage.IndexKey.parse(entry.key) is not None:
            try:
                index_blobs[entry.id] = runtime.index_blobs(entry.key) if runtime else None
            except PipelineError:
                index_blobs[entry.id] = None  # another ref's index this token may not read: keep its blobs
    return cache_usage.analyse(entries, index_blobs, quota_bytes, min_age_seconds=min_age_seconds), rest


def _print(usage: cache_usage.Usage, as_json: bool, deleted: list[cache_usage.CacheEntry] | None = None, dry_run: bool = False) -> None:
    if as_json:
        payload = usage.to_dict()
        if deleted is not None:
            payload["deleted" if not dry_run else "would_delete"] = [e.key for e in deleted]
        typer.echo(json.dumps(payload, indent=2))
        return
    human = cache_usage.human
    typer.echo(f"cache: {human(usage.total_bytes)} in {usage.total_entries} entries, "
               f"{usage.total_bytes / usage.quota_bytes:.0%} of {human(usage.quota_bytes)}")
    typer.echo(f"{'scope':<32} {'bytes':>10} {'entries':>8} {'quota':>6}")
    for scope in usage.scopes:
        entries = scope.index_entries + len(scope.blobs)
        unreadable = f"  ({len(scope.unreadable)} index(es) unreadable)" if scope.unreadable else ""
        typer.echo(f"{scope.scope:<32} {human(scope.bytes):>10} {entries:>8} {scope.share_of_quota:>6.0%}{unreadable}")
    for package_cache in usage.package_caches:
        typer.echo(f"{'package cache ' + package_cache.name:<32} {human(package_cache.bytes):>10} {package_cache.entries:>8} "
                   f"  (restored: {human(package_cache.current_bytes)})")
    typer.echo(f"prunable: {len(usage.prunable)} entries, {human(usage.prunable_bytes)}")
    for entry, why in usage.prunable[:50]:
        typer.echo(f"  {entry.key[:80]:<80} {human(entry.size):>10}  {why}")
    for line in usage.recommendations:
        typer.echo(f"recommendation: {line}")


Repository = Annotated[str, typer.Option(help="OWNER/NAME (default: $GITHUB_REPOSITORY).")]
Quota = Annotated[str, typer.Option(help="The repository's cache quota (GitHub's default: 10GB).")]
MinAge = Annotated[str, typer.Option(help="Never prune entries younger than this: a build may be exporting right now.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _usage_or_exit(repository: str, quota: str, min_age: str) -> tuple[cache_usage.Usage, RestCache]:
    """`_usage`, with its errors as one line: exit 2 for bad input, 1 when GitHub failed."""
    try:
        return _usage(repository, quota, min_age)
    except InputError as error:
        _say(f"error: {error}")
        raise typer.Exit(2) from None
    except PipelineError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from None


@app.command("usage")
def usage_command(repository: Repository = "", quota: Quota = "10GB", min_age: MinAge = "1h", as_json: AsJson = False) -> None:
    """Per scope: bytes, entries, share of the quota; what no current index references; advice."""
    usage, _ = _usage_or_exit(repository, quota, min_age)
    _print(usage, as_json)


@app.command("prune")
def prune_command(repository: Repository = "", quota: Quota = "10GB", min_age: MinAge = "1h", as_json: AsJson = False,
                  dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False) -> None:
    """Delete superseded indexes and blobs no current index references (try --dry-run first)."""
    usage, rest = _usage_or_exit(repository, quota, min_age)
    deleted: list[cache_usage.CacheEntry] = []
    failed = False
    for entry, _ in usage.prunable:
        if dry_run:
            deleted.append(entry)
            continue
        try:
            rest.delete(entry)
            deleted.append(entry)
        except PipelineError as error:
            failed = True
            _say(f"error: {error}")
    _print(usage, as_json, deleted, dry_run)
    if not as_json:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{verb} {len(deleted)} entries, {cache_usage.human(sum(e.size for e in deleted))}"
                   f" ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    raise typer.Exit(1 if failed else 0)
