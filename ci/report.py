"""Results as JSON (versioned schema) and as markdown for $GITHUB_STEP_SUMMARY.

JSON schema "dimbybot2.build-report/1":
  {"schema": "dimbybot2.build-report/1", "ok": bool, "cache_backend": str, "duration": float,
   "hit_goal": 0.7,
   "images": [{"name", "digest", "refs": [...], "cached_steps", "total_steps", "hit_ratio",
               "duration", "cache_import": {"ok": bool|null, "detail"},
               "cache_export": {...}, "warnings": [...], "error": str|null,
               "steps": [{"label", "instruction", "cached", "duration", "error"}]}]}
"""

from __future__ import annotations

import json
from typing import Any

from .pipeline import CACHE_HIT_GOAL, CacheStatus, ImageResult, PipelineResult

SCHEMA = "dimbybot2.build-report/1"


def _status(status: CacheStatus) -> dict[str, Any]:
    return {"ok": status.ok, "detail": status.detail}


def image_dict(result: ImageResult) -> dict[str, Any]:
    steps = []
    if result.log is not None:
        steps = [{"label": s.label, "instruction": s.instruction, "cached": s.cached,
                  "duration": None if s.duration is None else round(s.duration, 3), "error": s.error}
                 for s in result.log.cacheable]
    return {
        "name": result.name, "digest": result.digest, "refs": list(result.refs),
        "cached_steps": result.cached_steps, "total_steps": result.total_steps,
        "hit_ratio": round(result.hit_ratio, 4), "duration": round(result.duration, 3),
        "cache_import": _status(result.cache_import), "cache_export": _status(result.cache_export),
        "warnings": list(result.warnings), "error": result.error, "steps": steps,
    }


def to_json(result: PipelineResult) -> str:
    return json.dumps({
        "schema": SCHEMA, "ok": result.ok, "cache_backend": result.cache_backend,
        "duration": round(result.duration, 3), "hit_goal": CACHE_HIT_GOAL,
        "images": [image_dict(i) for i in result.images],
    }, indent=2)


def _cache_cell(status: CacheStatus) -> str:
    if status.ok is None:
        return "off"
    return "ok" if status.ok else f"FAILED: {status.detail}"


def to_markdown(result: PipelineResult) -> str:
    lines = [f"## dimbybot2 build: {'ok' if result.ok else 'FAILED'}", "",
             f"Cache backend: `{result.cache_backend}`; total {result.duration:.1f} s.", "",
             "| image | cached steps | hit ratio | goal | duration | cache import | cache export | digest |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i in result.images:
        goal = "met" if i.hit_ratio >= CACHE_HIT_GOAL else "missed"
        lines.append(f"| {i.name} | {i.cached_steps}/{i.total_steps} | {i.hit_ratio:.0%} | {goal} | {i.duration:.1f} s "
                     f"| {_cache_cell(i.cache_import)} | {_cache_cell(i.cache_export)} | `{i.digest or '-'}` |")
    for i in result.images:
        if i.refs:
            lines += ["", f"**{i.name}** pushed: " + ", ".join(f"`{r}`" for r in i.refs)]
        if i.error:
            lines += ["", f"**{i.name}** error: {i.error}"]
        for warning in i.warnings:
            lines += ["", f"> warning ({i.name}): {warning}"]
        if i.log is not None and i.log.cacheable:
            lines += ["", f"<details><summary>{i.name}: steps</summary>", "",
                      "| step | instruction | cache | time |", "| --- | --- | --- | --- |"]
            for s in i.log.cacheable:
                text = s.instruction if len(s.instruction) <= 70 else s.instruction[:67] + "..."
                text = text.replace("|", "\\|")
                took = "-" if s.duration is None else f"{s.duration:.2f} s"
                lines.append(f"| {s.label} | `{text}` | {'hit' if s.cached else 'miss'} | {took} |")
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
