"""Trends for machines (JSON, schema dimbybot2.trends/1) and for the step summary (markdown with
Mermaid charts of this run against the last runs)."""

from __future__ import annotations

import dataclasses
import json

from . import report
from .trends import TRENDS_SCHEMA, CacheUsage, Collection, Run, sample_dict
from .trends_alerts import Alert


def to_json(collection: Collection, alerts: list[Alert], usages: list[CacheUsage] | None = None) -> str:
    return json.dumps({
        "schema": TRENDS_SCHEMA, "runs": len(collection.runs),
        "images": {image: [sample_dict(run, sample) for run, sample in collection.series(image)] for image in collection.images()},
        "alerts": [a.to_dict() for a in alerts],
        "cache_usage": [dataclasses.asdict(u) for u in usages or []],
        "problems": [dataclasses.asdict(p) for p in collection.problems],
    }, indent=2)


def _label(run: Run, current: Run | None) -> str:
    return "this run" if run is current else run.info.short


def to_markdown(collection: Collection, alerts: list[Alert], current: Run | None = None, scope: str = "") -> str:
    """The step-summary section: per image, this run (the newest) against the runs before it."""
    lines = [f"## Build trends{f' ({scope})' if scope else ''}", ""]
    if not collection.runs:
        lines += ["No build reports to compare with yet.", ""]
    for image in collection.images():
        series = collection.series(image)
        points = [(_label(run, current), sample.duration, sample.hit_ratio) for run, sample in series]
        lines += [f"### {image}", "", report.mermaid_trend(image, points, series[-1][0].hit_goal), ""]
    if alerts:
        lines += ["| alert | image | run | what | first command |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {a.kind} | {a.image} | {a.run} | {a.message.replace('|', '/')} | `{a.command.replace('|', '/')}` |" for a in alerts]
    elif collection.runs:
        lines.append("No alerts: hit ratios meet the goal, durations are near their median, exports succeed.")
    if collection.problems:
        lines += ["", "<details><summary>reports skipped or partly used</summary>", ""]
        lines += [f"- {p.line()}" for p in collection.problems]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
