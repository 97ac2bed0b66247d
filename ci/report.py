"""Results as JSON (versioned schema) and as markdown for $GITHUB_STEP_SUMMARY.

JSON schema "dimbybot2.build-report/1":
  {"schema": "dimbybot2.build-report/1", "ok": bool, "cache_backend": str, "duration": float,
   "hit_goal": 0.7,
   "images": [{"name", "digest", "refs": [...], "cached_steps", "total_steps", "hit_ratio",
               "duration", "cache_import": {"ok": bool|null, "detail"},
               "cache_export": {...}, "warnings": [...], "error": str|null,
               "steps": [{"label", "instruction", "cached", "duration", "error"}],
               "avoidance": {"skipped": bool, "key": str|null, "detail"} | null,
               "package_caches": [{"mount", "ok", "restored_from", "exact", "restored_bytes",
                                   "saved_as", "saved_bytes", "seconds", "detail"}]}],
   optional, for trends (readers must accept reports without them):
   "run": {"commit", "branch", "time" (ISO 8601 UTC), "workflow", "run_id", "run_number", "url"},
   per image "cache_usage": {"scope", "bytes", "quota_bytes"}}
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .pipeline import CACHE_HIT_GOAL, CacheStatus, ImageResult, PipelineResult
from .progress import BuildLog

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
        "avoidance": None if result.avoidance is None else dataclasses.asdict(result.avoidance),
        "package_caches": [{**dataclasses.asdict(p), "seconds": round(p.seconds, 3)} for p in result.package_caches],
    }


def to_json(result: PipelineResult, run: dict[str, Any] | None = None) -> str:
    """`run` (see runinfo.current) says which commit, branch, time and workflow run made it."""
    return json.dumps({
        "schema": SCHEMA, "ok": result.ok, "cache_backend": result.cache_backend,
        "duration": round(result.duration, 3), "hit_goal": CACHE_HIT_GOAL,
        "images": [image_dict(i) for i in result.images],
        **({"run": run} if run is not None else {}),
    }, indent=2)


def _cache_cell(status: CacheStatus) -> str:
    if status.ok is None:
        return "off"
    if status.skipped:
        return "skipped"
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
        if i.avoidance is not None:
            lines += ["", f"**{i.name}** {i.avoidance.detail}"]
        for package_cache in i.package_caches:
            lines += ["", f"**{i.name}** package cache `{package_cache.mount}`: {package_cache.detail}"]
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
            lines += ["", "</details>", "", mermaid_gantt(i.name, i.log)]
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid gantt task names end at ':' and break on '#' or ';'.
    cleaned = text.replace(":", " ").replace("#", " ").replace(";", " ").replace('"', "'")
    return cleaned if len(cleaned) <= 50 else cleaned[:47] + "..."


def mermaid_gantt(name: str, log: BuildLog) -> str:
    """A Gantt chart of the steps: hits are `done`, misses `crit`. Steps without start times
    (plain logs) are laid end to end."""
    lines = ["```mermaid", "gantt", f"  title {name}: {log.cached_count}/{len(log.cacheable)} cacheable steps hit",
             "  dateFormat x", "  axisFormat %M:%S"]
    starts = [s.started for s in log.cacheable if s.started is not None]
    origin = min(starts) if starts else 0.0
    cursor = 0.0
    stage = None
    for index, step in enumerate(log.cacheable):
        if step.stage != stage:
            stage = step.stage
            lines.append(f"  section {_mermaid_text(stage or 'build')}")
        start_ms = (step.started - origin) * 1000 if step.started is not None else cursor
        length = max(1.0, (step.duration or 0.0) * 1000)
        cursor = start_ms + length
        tag = "done" if step.cached else "crit"
        label = f"{step.label} {step.instruction}"
        lines.append(f"  {_mermaid_text(label)} ({'hit' if step.cached else 'miss'}) :{tag}, s{index}, {int(start_ms)}, {int(length)}ms")
    lines.append("```")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class StepChange:
    label: str
    instruction: str
    before: str  # "hit", "miss" or "absent"
    after: str


def compare_statuses(before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]]) -> list[StepChange]:
    """Steps (label -> (instruction, hit|miss)) whose status differs between two runs."""
    changes = []
    for label in sorted(set(before) | set(after), key=_label_order):
        b, a = before.get(label), after.get(label)
        b_status, a_status = (b[1] if b else "absent"), (a[1] if a else "absent")
        if b_status != a_status:
            changes.append(StepChange(label, (a or b or ("", ""))[0], b_status, a_status))
    return changes


def statuses_of_log(log: BuildLog) -> dict[str, tuple[str, str]]:
    return {s.label: (s.instruction, "hit" if s.cached else "miss") for s in log.cacheable if s.label}


def statuses_of_json(data: Any, image: str | None = None) -> dict[str, tuple[str, str]]:
    """From `explain --format json` or a build report (schema dimbybot2.build-report/1):
    the first image, or the one named. ValueError (one line) for anything else; steps that are
    not {label, instruction, cached|status} objects are skipped."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not a build report or prediction object")
    images = data.get("images") or []
    images = [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []
    chosen = next((i for i in images if image is None or i.get("name") == image), None)
    if chosen is None:
        raise ValueError(f"no image {image!r} in {'the report' if 'schema' in data else 'the prediction'}" if image
                         else "it lists no image")
    steps = chosen.get("steps")
    steps = [s for s in steps if isinstance(s, dict) and isinstance(s.get("label"), str)
             and isinstance(s.get("instruction"), str)] if isinstance(steps, list) else []
    schema = data.get("schema")
    if isinstance(schema, str) and schema.startswith("dimbybot2.build-report/"):
        return {s["label"]: (s["instruction"], "hit" if s.get("cached") else "miss") for s in steps if s["label"]}
    return {s["label"]: (s["instruction"], str(s.get("status"))) for s in steps if not s["instruction"].startswith("FROM ")}


def _label_order(label: str) -> tuple[str, int]:
    stage, _, counter = label.rpartition(" ")
    return stage, int(counter.split("/")[0]) if counter.split("/")[0].isdigit() else 0


def _mermaid_label(text: str) -> str:
    # Quoted, without '#' (Mermaid reads `#...;` as an entity) or a quote of its own.
    return '"' + text.replace('"', "'").replace("#", "run ").replace("\n", " ")[:24] + '"'


def mermaid_trend(image: str, points: list[tuple[str, float, float]], goal: float = CACHE_HIT_GOAL) -> str:
    """Two Mermaid xy charts of one image over runs, for the step summary: duration (bars) and
    hit ratio (bars, with the goal as a line). `points` are (label, seconds, hit ratio), oldest
    first; the caller labels the current run, e.g. "this run"."""
    if not points:
        return ""
    labels = ", ".join(_mermaid_label(label) for label, _, _ in points)
    durations = ", ".join(f"{seconds:.1f}" for _, seconds, _ in points)
    top = max(seconds for _, seconds, _ in points)
    ratios = ", ".join(f"{ratio * 100:.0f}" for _, _, ratio in points)
    return "\n".join([
        "```mermaid", "xychart-beta", f'  title "{_mermaid_text(image)}: build duration (s)"', f"  x-axis [{labels}]",
        f'  y-axis "seconds" 0 --> {max(1, int(top * 1.15) + 1)}', f"  bar [{durations}]", "```", "",
        "```mermaid", "xychart-beta", f'  title "{_mermaid_text(image)}: cache hit ratio (%), goal {goal:.0%}"',
        f"  x-axis [{labels}]", '  y-axis "hit %" 0 --> 100', f"  bar [{ratios}]",
        f"  line [{', '.join(f'{goal * 100:.0f}' for _ in points)}]", "```",
    ])
