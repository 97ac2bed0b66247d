"""Alerts a maintainer can act on, from a run against the runs before it, each with the first
command to run. Pure functions over trends.Collection.

  hit-ratio       the run's hit ratio is under the goal (70%)
  slow            the run took longer than the recent median by a margin (and a few seconds)
  export-failing  the cache export failed in each of the last N runs
  quota           a cache scope is nearing its quota
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import statistics
import urllib.parse

from .trends import CacheUsage, Collection, ImageSample, Run


@dataclasses.dataclass(frozen=True)
class Thresholds:
    margin: float = 0.25  # "slow": more than median * (1 + margin) ...
    min_seconds: float = 2.0  # ... and more than median + min_seconds (small builds are noisy)
    window: int = 10  # how many earlier runs make "recent"
    min_history: int = 3  # no "slow" verdict from fewer earlier runs
    export_failures: int = 2  # consecutive failed exports that make "repeatedly"
    quota_warning: float = 0.8  # fraction of the quota


@dataclasses.dataclass(frozen=True)
class Alert:
    kind: str
    image: str
    run: str
    message: str
    command: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _quote(text: str) -> str:
    return shlex.quote(text)


def _last_good(history: list[tuple[Run, ImageSample]], goal: float) -> tuple[Run, ImageSample] | None:
    """The most recent earlier run where the image built and met the goal."""
    return next(((r, s) for r, s in reversed(history) if s.error is None and s.hit_ratio >= goal), None)


def _explain_command(image: str, good: tuple[Run, ImageSample] | None) -> str:
    base = good[0].info.commit if good else None
    return f"dimbybot-ci explain --image {_quote(image)}" + (f" --base {base}" if base else "")


def _is_file(run: Run) -> bool:
    return not run.info.source.startswith(("github ", "http"))


def _compare_command(image: str, run: Run, other: Run | None) -> str | None:
    if other is None or not (_is_file(run) and _is_file(other)):
        return None
    return f"dimbybot-ci report {_quote(run.info.source)} --against {_quote(other.info.source)} --image {_quote(image)}"


def _export_command(detail: str) -> str:
    """Throttling and timeouts want fewer uploads; anything else first wants to know whether the
    cache service answers at all (the URL is in BuildKit's error)."""
    if re.search(r"\b429\b|too many requests|timeout|deadline exceeded", detail, re.IGNORECASE):
        return "dimbybot-ci build-and-push --cache-mode=min  # fewer uploads (README runbook step 3)"
    url = re.search(r"https?://[^\s\"']+", detail)
    if url:
        parts = urllib.parse.urlsplit(url.group(0))
        path = "/v2/" if parts.path.startswith("/v2/") else "/"
        return f"curl -sSI {_quote(f'{parts.scheme}://{parts.netloc}{path}')}  # does the cache service answer from here?"
    return "dimbybot-ci build-and-push --cache-mode=min  # fewer uploads (README runbook step 3)"


def for_image(collection: Collection, image: str, thresholds: Thresholds = Thresholds()) -> list[Alert]:
    series = collection.series(image)
    if not series:
        return []
    run, sample = series[-1]
    history = series[:-1]
    label = run.info.short
    good = _last_good(history, run.hit_goal)
    alerts = []
    if sample.error is None and sample.hit_ratio < run.hit_goal:
        missed = f" (missed: {', '.join(sample.missed_steps[:4])}{', ...' if len(sample.missed_steps) > 4 else ''})" if sample.missed_steps else ""
        alerts.append(Alert("hit-ratio", image, label,
                            f"hit ratio {sample.hit_ratio:.0%} is under the {run.hit_goal:.0%} goal{missed}",
                            _explain_command(image, good)))
    recent = [s.duration for _, s in history[-thresholds.window:] if s.error is None]
    if sample.error is None and len(recent) >= thresholds.min_history:
        median = statistics.median(recent)
        if sample.duration > median * (1 + thresholds.margin) and sample.duration - median > thresholds.min_seconds:
            typical = min((r for r, s in history[-thresholds.window:] if s.error is None),
                          key=lambda r: abs((r.image(image) or sample).duration - median))
            alerts.append(Alert("slow", image, label,
                                f"took {sample.duration:.1f} s, {sample.duration / median - 1:.0%} above the median "
                                f"{median:.1f} s of the last {len(recent)} runs",
                                _compare_command(image, run, typical) or _explain_command(image, good)))
    streak = 0
    for _, s in reversed(series):
        if s.cache_export != "failed":
            break
        streak += 1
    if streak >= thresholds.export_failures:
        detail = sample.cache_export_detail or "no detail"
        alerts.append(Alert("export-failing", image, label,
                            f"cache export failed in the last {streak} runs (latest: {detail})", _export_command(detail)))
    if sample.cache_usage is not None:
        alerts.extend(quota([sample.cache_usage], thresholds, image, label))
    return alerts


def quota(usages: list[CacheUsage], thresholds: Thresholds = Thresholds(), image: str = "-", run: str = "-") -> list[Alert]:
    return [Alert("quota", image, run,
                  f"cache scope {u.scope} uses {u.bytes / 1e9:.2f} GB, {u.fraction:.0%} of its {u.quota_bytes / 1e9:.1f} GB quota",
                  "gh cache list --sort size_in_bytes --order desc  # then bump cache_bust or use --cache-mode=min")
            for u in usages if u.fraction >= thresholds.quota_warning]


def evaluate(collection: Collection, thresholds: Thresholds = Thresholds(), usages: list[CacheUsage] | None = None) -> list[Alert]:
    """Alerts for the newest run of every image (and for cache usage the source reported)."""
    alerts = [a for image in collection.images() for a in for_image(collection, image, thresholds)]
    return alerts + quota(usages or [], thresholds)
