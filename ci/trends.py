"""Build trends: many runs' build reports (schema dimbybot2.build-report/1) read into series per image.

A report that cannot be used is never a traceback: it becomes one `Problem` line (missing,
corrupt, partial, not a build report) and the other runs are still trended. Sources:
  read_report()      one report's text (from a file, a GitHub artifact, ...)
  load_directory()   a directory of downloaded report.json files, searched recursively
  trends_github      the `build-report` artifacts of a workflow's last runs (GitHub REST API)
Alerts are in trends_alerts, charts in charts (matplotlib) and report.mermaid_trend (Mermaid).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib
from collections.abc import Iterable
from typing import Any

from .report import SCHEMA

TRENDS_SCHEMA = "dimbybot2.trends/1"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Where and when a report was made. The report's own `run` object, or the GitHub run it
    came from, fills these; any of them may be unknown for old or hand-made reports."""

    source: str  # a path, or "github run 123"
    commit: str | None = None
    branch: str | None = None
    time: str | None = None  # ISO 8601, UTC
    workflow: str | None = None
    run_id: str | None = None
    run_number: int | None = None
    url: str | None = None

    @property
    def short(self) -> str:
        """A label for charts and tables: run number and short commit, as far as known."""
        parts = ([f"#{self.run_number}"] if self.run_number is not None else []) + ([self.commit[:7]] if self.commit else [])
        return " ".join(parts) or pathlib.PurePath(self.source).parent.name or self.source


@dataclasses.dataclass(frozen=True)
class CacheUsage:
    """A cache scope's size against its quota, when the report (or the cache service) knows it."""

    scope: str
    bytes: int
    quota_bytes: int

    @property
    def fraction(self) -> float:
        return self.bytes / self.quota_bytes if self.quota_bytes else 0.0


@dataclasses.dataclass(frozen=True)
class ImageSample:
    """One image in one run."""

    image: str
    duration: float
    hit_ratio: float
    cached_steps: int
    total_steps: int
    missed_steps: tuple[str, ...]  # BuildKit labels of the cacheable steps that missed
    cache_import: str  # "ok", "failed" or "off"
    cache_export: str
    cache_import_detail: str = ""
    cache_export_detail: str = ""
    error: str | None = None
    cache_usage: CacheUsage | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    info: RunInfo
    ok: bool
    cache_backend: str
    images: tuple[ImageSample, ...]
    hit_goal: float = 0.7

    def image(self, name: str) -> ImageSample | None:
        return next((i for i in self.images if i.image == name), None)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A report that was skipped, or used only in part; `message` is one line for people."""

    source: str
    kind: str  # "missing", "corrupt", "partial", "not-a-report"
    message: str

    def line(self) -> str:
        return f"{self.kind}: {self.source}: {self.message}"


@dataclasses.dataclass
class Collection:
    """Runs oldest first, and the problems met while reading them."""

    runs: list[Run] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def images(self) -> list[str]:
        names: dict[str, None] = {}
        for run in self.runs:
            names.update((i.image, None) for i in run.images)
        return list(names)

    def series(self, image: str) -> list[tuple[Run, ImageSample]]:
        return [(run, sample) for run in self.runs if (sample := run.image(image)) is not None]

    def extend(self, other: Collection) -> None:
        self.runs = sort_runs([*self.runs, *other.runs])
        self.problems.extend(other.problems)


def sort_runs(runs: Iterable[Run]) -> list[Run]:
    """Oldest first: by time where known, then run number, then source name. Runs without a time
    keep their place among themselves (sorting is stable)."""
    return sorted(runs, key=lambda r: (r.info.time or "", r.info.run_number or 0, r.info.source))


class ReportError(ValueError):
    """Why a report cannot be used at all; `kind` as in Problem."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def _status(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict):
        return "off", ""
    ok = value.get("ok")
    detail = str(value.get("detail") or "")
    return ("off" if ok is None else "ok" if ok else "failed"), detail


def _number(image: dict[str, Any], key: str, missing: list[str]) -> float:
    value = image.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        missing.append(key)  # 1e999 reads as infinity: as unusable as a missing number
        return 0.0
    return float(value)


def _usage(value: Any) -> CacheUsage | None:
    if not isinstance(value, dict):
        return None
    try:
        return CacheUsage(str(value["scope"]), int(value["bytes"]), int(value["quota_bytes"]))
    except (KeyError, TypeError, ValueError):
        return None


def _sample(raw: Any, index: int, problems: list[str]) -> ImageSample | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        problems.append(f"image #{index + 1} has no name")
        return None
    missing: list[str] = []
    cached, total = _number(raw, "cached_steps", missing), _number(raw, "total_steps", missing)
    ratio = raw.get("hit_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        ratio = cached / total if total else 0.0
        missing.append("hit_ratio")
    steps = raw.get("steps")
    steps = steps if isinstance(steps, list) else []
    missed = tuple(str(s.get("label")) for s in steps if isinstance(s, dict) and s.get("label") and s.get("cached") is False)
    import_status, import_detail = _status(raw.get("cache_import"))
    export_status, export_detail = _status(raw.get("cache_export"))
    duration = _number(raw, "duration", missing)
    if missing:
        problems.append(f"{raw['name']} lacks {', '.join(missing)}")
    return ImageSample(image=raw["name"], duration=duration, hit_ratio=float(ratio), cached_steps=int(cached),
                       total_steps=int(total), missed_steps=missed, cache_import=import_status, cache_export=export_status,
                       cache_import_detail=import_detail, cache_export_detail=export_detail,
                       error=raw.get("error") if isinstance(raw.get("error"), str) else None,
                       cache_usage=_usage(raw.get("cache_usage")))


def _info(data: dict[str, Any], source: str, fallback: RunInfo | None) -> RunInfo:
    run = data.get("run")
    run = run if isinstance(run, dict) else {}
    base = fallback or RunInfo(source=source)

    def text(key: str) -> str | None:
        value = run.get(key)
        return str(value) if value not in (None, "") else None

    number = run.get("run_number")
    return RunInfo(source=base.source, commit=base.commit or text("commit"), branch=base.branch or text("branch"),
                   time=base.time or text("time"), workflow=base.workflow or text("workflow"),
                   run_id=base.run_id or text("run_id"), url=base.url or text("url"),
                   run_number=base.run_number if base.run_number is not None else number if type(number) is int else None)


def read_report(text: str | bytes, source: str, info: RunInfo | None = None) -> tuple[Run, list[Problem]]:
    """One build report. `info` (e.g. from the GitHub run) wins over the report's own `run` object.
    Raises ReportError when nothing can be used; returns partial-report Problems otherwise."""
    try:
        data = json.loads(text)
    except UnicodeDecodeError:
        raise ReportError("corrupt", "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ReportError("corrupt", f"not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    if not isinstance(data, dict):
        raise ReportError("not-a-report", f"a JSON {type(data).__name__}, not a build report object")
    schema = data.get("schema")
    if schema != SCHEMA:
        found = f"schema {schema!r}" if schema else "no schema field"
        raise ReportError("not-a-report", f"{found}; expected {SCHEMA!r}")
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise ReportError("partial", "the report lists no images")
    notes: list[str] = []
    samples = tuple(s for index, raw in enumerate(images) if (s := _sample(raw, index, notes)) is not None)
    if not samples:
        raise ReportError("partial", "; ".join(notes))
    goal = data.get("hit_goal")
    run = Run(info=_info(data, source, info), ok=bool(data.get("ok", all(s.error is None for s in samples))),
              cache_backend=str(data.get("cache_backend") or "-"), images=samples,
              hit_goal=float(goal) if isinstance(goal, int | float) and not isinstance(goal, bool) else 0.7)
    return run, [Problem(source, "partial", note + " (shown as 0)" if "lacks" in note else note) for note in notes]


def _file_time(path: pathlib.Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def load_paths(paths: Iterable[pathlib.Path]) -> Collection:
    """Report files and directories (searched recursively for *.json). A directory holding no
    report at all, e.g. a run's download that came back empty, is a `missing` line."""
    found = Collection()
    for path in paths:
        if path.is_dir():
            files = sorted(path.rglob("*.json"))
            # One download directory per run is the usual layout: one without a report is a missing run.
            empty = [d for d in sorted(path.iterdir()) if d.is_dir() and not any(d.rglob("*.json"))]
            found.problems.extend(Problem(str(d), "missing", "no report.json in this directory") for d in empty)
            if not files and not empty:
                found.problems.append(Problem(str(path), "missing", "no *.json report files here"))
        elif path.is_file():
            files = [path]
        else:
            found.problems.append(Problem(str(path), "missing", "no such file or directory"))
            continue
        for file in files:
            try:
                run, problems = read_report(file.read_bytes(), str(file))
            except ReportError as error:
                found.problems.append(Problem(str(file), error.kind, str(error)))
                continue
            except OSError as error:
                found.problems.append(Problem(str(file), "missing", error.strerror or str(error)))
                continue
            if run.info.time is None:
                run = dataclasses.replace(run, info=dataclasses.replace(run.info, time=_file_time(file)))
                problems.append(Problem(str(file), "partial", "no run time in the report: ordered by the file's time"))
            found.runs.append(run)
            found.problems.extend(problems)
    found.runs = sort_runs(found.runs)
    return found


def same_run(a: Run, b: Run) -> bool:
    """The same report seen twice: one file, or one workflow run."""
    if a.info.run_id is not None and a.info.run_id == b.info.run_id:
        return True
    try:
        return pathlib.Path(a.info.source).resolve() == pathlib.Path(b.info.source).resolve()
    except OSError:
        return False


def filter_runs(collection: Collection, branch: str | None = None, images: Iterable[str] = (), last: int | None = None) -> Collection:
    """Only one branch's runs (runs whose branch is unknown are kept), only some images, the last N."""
    wanted = set(images)
    runs = [r for r in collection.runs if branch is None or r.info.branch in (None, branch)]
    if wanted:
        runs = [dataclasses.replace(r, images=tuple(i for i in r.images if i.image in wanted)) for r in runs]
        runs = [r for r in runs if r.images]
    if last is not None:
        runs = runs[-last:] if last > 0 else []
    return Collection(runs=runs, problems=list(collection.problems))


def sample_dict(run: Run, sample: ImageSample) -> dict[str, Any]:
    return {"run": run.info.short, "source": run.info.source, "commit": run.info.commit, "branch": run.info.branch,
            "time": run.info.time, "run_id": run.info.run_id, "url": run.info.url, "ok": sample.error is None,
            "duration": round(sample.duration, 3), "hit_ratio": round(sample.hit_ratio, 4),
            "cached_steps": sample.cached_steps, "total_steps": sample.total_steps, "missed_steps": list(sample.missed_steps),
            "cache_import": sample.cache_import, "cache_export": sample.cache_export,
            "cache_import_detail": sample.cache_import_detail, "cache_export_detail": sample.cache_export_detail,
            "cache_usage": dataclasses.asdict(sample.cache_usage) if sample.cache_usage else None}
