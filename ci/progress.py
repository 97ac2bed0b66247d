"""Read BuildKit progress output (rawjson or plain text) into Dockerfile steps.

Both formats are read as streams: a log of hundreds of MB is never held in memory, only
one merged record per vertex. Vertex digests differ from build to build (the local context
carries a session id), so steps are matched across builds by their label, e.g. `deps 3/4`.

What counts as a step: a vertex named `[<stage> k/n] INSTRUCTION` (or `[k/n] ...` for a
single unnamed stage). Everything else (`[internal] ...`, `importing cache manifest ...`,
`exporting ...`, `pushing ...`) is BuildKit bookkeeping, kept apart. `FROM` steps are steps
but never count for the hit ratio: BuildKit does not report them as cached reliably.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal

Format = Literal["rawjson", "plain"]

# BuildKit's step prefix: an optional platform (multi-platform builds), an optional stage name,
# then the step number right-aligned to the width of the total: `[deps  3/12]`, `[ 3/12]`.
_LABEL = re.compile(r"^\[(?:(?P<platform>[^\]\s/]+/[^\]\s]+) )?(?:(?P<stage>[^\]\s]+) )?\s*(?P<k>\d+)/(?P<n>\d+)\] (?P<instr>.*)$",
                    re.S)
_PLAIN_LINE = re.compile(r"^#(?P<id>\d+) (?P<rest>.*)$")
_PLAIN_DONE = re.compile(r"^DONE (?P<secs>[0-9.]+)s$")
_CHUNK = 1 << 16

# Signed URLs (Azure SAS: GitHub's cache blobs, Azurite's): BuildKit names them in its errors, and a
# signature is a credential until it expires. A URL's query runs to white space, a quote or a
# backslash (a JSON escape: `\n`), except Go's escaped `&`/`=` (`\u0026`, `\u003d`) inside it.
_URL_QUERY = re.compile(r"""(?P<base>https?://[^\s?#"'\\<>]+)\?(?P<query>(?:\\u00(?:26|3[dD])|[^\s"'\\<>])*)""")
_SIGNED_PARAM = re.compile(r"(?:^|&)(?:sig|se|sv)=", re.I)
# Hosts whose every query is a signature: Azure blob storage, Azurite (`127.0.0.1:PORT/devstoreaccount1`).
_SIGNED_HOST = re.compile(r"^https?://(?:[^/]*\.blob\.core\.windows\.net(?::\d+)?/|[^/]+/devstoreaccount1(?:/|$))", re.I)


def redact(text: str) -> str:
    """`text` with the query of every signed URL replaced by `<signature removed>`: one with a
    `sig`, `se` or `sv` parameter, and any on an Azure blob host or Azurite. Other queries stay.
    The one redaction both drivers apply to what they read from BuildKit."""
    def one(m: re.Match[str]) -> str:
        query = m["query"].rstrip(":,;.")
        trailer = m["query"][len(query):]
        plain = query.replace("\\u0026", "&").replace("\\u003d", "=").replace("\\u003D", "=")
        if _SIGNED_PARAM.search(plain) or _SIGNED_HOST.match(m["base"]):
            return f"{m['base']}?<signature removed>{trailer}"
        return m[0]
    return _URL_QUERY.sub(one, text) if "?" in text else text


@dataclasses.dataclass(frozen=True)
class Step:
    """One vertex of a build: a Dockerfile step or a piece of bookkeeping."""

    name: str
    cached: bool
    duration: float | None
    error: str | None = None
    started: float | None = None  # seconds since the epoch, when known (rawjson only)
    # Why BuildKit ran a step again after first reporting it cached (rawjson only): its cached
    # layer could not be loaded, e.g. `blob sha256:...: not found` after a cache eviction.
    rerun_because: str | None = None

    @property
    def _match(self) -> re.Match[str] | None:
        return _LABEL.match(self.name)

    @property
    def is_dockerfile_step(self) -> bool:
        return self._match is not None

    @property
    def label(self) -> str | None:
        """`stage k/n` (or `k/n`) without BuildKit's padding, as explain writes it."""
        m = self._match
        if not m:
            return None
        number = f"{int(m['k'])}/{int(m['n'])}"
        return f"{m['stage']} {number}" if m["stage"] else number

    @property
    def stage(self) -> str | None:
        m = self._match
        return m["stage"] if m else None

    @property
    def instruction(self) -> str:
        m = self._match
        return " ".join(m["instr"].split()) if m else self.name

    @property
    def keyword(self) -> str:
        return self.instruction.split(" ", 1)[0].upper()

    @property
    def is_from(self) -> bool:
        return self.keyword == "FROM"


@dataclasses.dataclass(frozen=True)
class BuildLog:
    """The outcome of one build as BuildKit reported it."""

    steps: tuple[Step, ...]
    bookkeeping: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    @property
    def cacheable(self) -> tuple[Step, ...]:
        """Dockerfile steps that can hit the cache (every step but FROM)."""
        return tuple(s for s in self.steps if not s.is_from)

    @property
    def cached_count(self) -> int:
        return sum(1 for s in self.cacheable if s.cached)

    @property
    def hit_ratio(self) -> float:
        total = len(self.cacheable)
        return self.cached_count / total if total else 1.0

    @property
    def error(self) -> str | None:
        for step in (*self.steps, *self.bookkeeping):
            if step.error:
                return f"{step.name}: {step.error}"
        return None

    def by_label(self) -> dict[str, Step]:
        return {s.label: s for s in self.steps if s.label is not None}

    def bookkeeping_matching(self, prefix: str) -> tuple[Step, ...]:
        return tuple(s for s in self.bookkeeping if s.name.startswith(prefix))


def _timestamp(text: Any) -> float | None:
    if not text or not isinstance(text, str):
        return None
    # BuildKit writes nanoseconds; Python parses at most microseconds.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    frac = (m[2] or ".0")[:7]
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        return dt.datetime.fromisoformat(m[1] + frac + zone).timestamp()
    except (ValueError, OverflowError):  # month 13, year 0, ...: no time rather than no log
        return None


class _Collector:
    """Merges repeated reports of the same vertex; keeps first-seen order."""

    def __init__(self) -> None:
        self.vertices: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []

    def vertex(self, key: str, **fields: Any) -> None:
        record = self.vertices.setdefault(key, {})
        for name, value in fields.items():
            if value is not None and value != "":
                record[name] = value

    def result(self) -> BuildLog:
        steps: list[Step] = []
        bookkeeping: list[Step] = []
        for record in self.vertices.values():
            name = record.get("name")
            if not name:
                continue
            started, completed = record.get("started"), record.get("completed")
            duration = record.get("duration")
            if duration is None and started is not None and completed is not None:
                duration = max(0.0, completed - started)
            error, rerun = record.get("error"), record.get("rerun_because")
            step = Step(name=redact(name), cached=bool(record.get("cached")), duration=duration,
                        error=redact(error) if error else None, started=started,
                        rerun_because=redact(rerun) if rerun else None)
            (steps if step.is_dockerfile_step else bookkeeping).append(step)
        steps.sort(key=_step_order)
        return BuildLog(steps=_merge_same_label(steps), bookkeeping=tuple(bookkeeping),
                        warnings=tuple(redact(w) for w in self.warnings))


def _merge_same_label(steps: list[Step]) -> tuple[Step, ...]:
    """One step per label: `COPY --link` reports two vertices, `[k/n] COPY --link ...` and
    `[k/n] LINK COPY --link ...` (the merge). The step hit only if every vertex did; its time
    is the sum; its name is the instruction's."""
    merged: dict[str, Step] = {}
    for step in steps:
        key = step.label or step.name
        previous = merged.get(key)
        if previous is None:
            merged[key] = step
            continue
        name = previous.name if " LINK " in step.name else step.name
        durations = [d for d in (previous.duration, step.duration) if d is not None]
        starts = [t for t in (previous.started, step.started) if t is not None]
        merged[key] = Step(name=name, cached=previous.cached and step.cached,
                                 duration=sum(durations) if durations else None,
                                 error=previous.error or step.error, started=min(starts) if starts else None,
                                 rerun_because=previous.rerun_because or step.rerun_because)
    return tuple(merged.values())


def _step_order(step: Step) -> tuple[str, int]:
    m = step._match
    return (m["stage"] or "", int(m["k"])) if m else ("", 0)


def _object_end(buffer: str, pos: int) -> int:
    """End of the top-level JSON object starting at `pos`, or -1 if not in the buffer yet.

    buildx pretty-prints (the object's closing brace is the only `}` at the start of a line:
    strings cannot hold raw newlines); buildctl writes one object per line."""
    if buffer.startswith("{\n", pos):
        end = buffer.find("\n}", pos)
        return -1 if end == -1 else end + 2
    end = buffer.find("\n", pos)
    return end


def _json_values(chunks: Iterable[str], trailer: list[str]) -> Iterator[Any]:
    """Yield JSON values from concatenated text (one per line, or pretty-printed).

    Objects holding only `logs` (the bulk of a large log: base64 output of each step) are
    recognised by their first key and skipped without decoding. buildx ends a failed build's
    rawjson stream with a plain-text excerpt of the error; text after the last JSON value is
    collected in `trailer` (at most 4 KiB).
    """
    decoder = json.JSONDecoder()
    buffer = ""
    in_trailer = False
    for chunk in chunks:
        if in_trailer:
            if sum(map(len, trailer)) < 4096:
                trailer.append(chunk)
            continue
        buffer += chunk
        pos = 0
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1
            if pos >= len(buffer):
                break
            if buffer[pos] != "{":
                in_trailer = True
                trailer.append(buffer[pos:])
                break
            end = _object_end(buffer, pos)
            if end == -1:
                break  # an incomplete object: wait for more text
            head = buffer[pos:pos + 16]
            if head.startswith(('{\n  "logs"', '{"logs"')):
                pos = end
                continue
            try:
                value, stop = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                raise ValueError(f"malformed rawjson progress near: {redact(buffer[pos:pos + 80])!r}") from None
            yield value
            pos = stop
        buffer = "" if in_trailer else buffer[pos:]
    if buffer.strip():
        raise ValueError(f"truncated rawjson progress near: {redact(buffer[:80])!r}")


def _restart_if_rerun(collector: _Collector, vertex: dict[str, Any]) -> None:
    """A vertex reported cached, then failed (its cached layer could not be loaded) and started
    again is a step BuildKit re-ran: its new run replaces the cached state, and the failure is
    kept as the reason. (BuildKit sends a vertex's whole state in every update.)"""
    record = collector.vertices.get(vertex["digest"])
    started = _timestamp(vertex.get("started"))
    if record is None or started is None or record.get("started") in (None, started):
        return
    if record.get("cached") and record.get("error") and not vertex.get("cached"):
        record["rerun_because"] = record.pop("error")
        record.pop("cached", None)
        record.pop("completed", None)


def _vertices(status: Any) -> tuple[list[dict[str, Any]], int]:
    """A status update's vertices with usable fields, and how many records were malformed (a
    status or vertex that is no object, a vertex without a string digest)."""
    if not isinstance(status, dict):
        return [], 1
    raw = status.get("vertexes") or []
    raw = raw if isinstance(raw, list) else [raw]
    good = [{k: v for k, v in item.items() if k not in ("name", "error") or isinstance(v, str)}
            for item in raw if isinstance(item, dict) and isinstance(item.get("digest"), str)]
    return good, len(raw) - len(good)


def _warning_text(w: Any) -> str:
    short = w.get("short") if isinstance(w, dict) else None
    if isinstance(short, str) and short:
        try:
            return base64.b64decode(short).decode("utf-8", "replace")
        except ValueError:
            pass
    return str(w)


def _read_rawjson(chunks: Iterable[str]) -> BuildLog:
    collector = _Collector()
    trailer: list[str] = []
    skipped = 0
    for status in _json_values(chunks, trailer):
        vertices, bad = _vertices(status)
        skipped += bad
        for v in vertices:
            _restart_if_rerun(collector, v)
            error = v.get("error")
            if error and error == collector.vertices.get(v["digest"], {}).get("rerun_because"):
                error = None  # the re-run's first update still carries the old failure
            collector.vertex(v["digest"], name=v.get("name"), cached=v.get("cached") or None,
                             started=_timestamp(v.get("started")),
                             completed=_timestamp(v.get("completed")), error=error)
        warnings = status.get("warnings") if isinstance(status, dict) else None
        for w in warnings if isinstance(warnings, list) else ():
            collector.warnings.append(_warning_text(w).strip())
    if skipped:
        collector.warnings.append(f"skipped {skipped} malformed progress record{'s' if skipped > 1 else ''}")
    for line in "".join(trailer).splitlines():
        if line.startswith("WARNING:"):
            collector.warnings.append(line.removeprefix("WARNING:").strip())
    return collector.result()


def _read_plain(lines: Iterable[str]) -> BuildLog:
    collector = _Collector()
    named: set[str] = set()
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("WARNING:") or line.startswith(" - "):
            collector.warnings.append(line.removeprefix("WARNING:").strip())
            continue
        m = _PLAIN_LINE.match(line)
        if not m:
            continue
        key, rest = m["id"], m["rest"]
        if key not in named:
            # The first line of a vertex is its name; later lines are states or logs.
            named.add(key)
            collector.vertex(key, name=rest)
        elif rest == "CACHED":
            collector.vertex(key, cached=True, duration=0.0)
        elif done := _PLAIN_DONE.match(rest):
            collector.vertex(key, duration=float(done["secs"]))
        elif rest.startswith("ERROR: "):
            collector.vertex(key, error=rest.removeprefix("ERROR: "))
        elif rest == "CANCELED":
            collector.vertex(key, error="canceled")
    return collector.result()


def detect(first_text: str) -> Format:
    stripped = first_text.lstrip()
    if stripped.startswith("{"):
        return "rawjson"
    if stripped.startswith("#") or not stripped:
        return "plain"
    raise ValueError("not BuildKit progress: expected rawjson ('{') or plain ('#N ...') output")


def _chunks(stream: IO[str]) -> Iterator[str]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def parse_stream(stream: IO[str], fmt: Format | None = None) -> BuildLog:
    """Parse progress from a text stream; the format is detected when not given."""
    head = stream.read(_CHUNK)
    fmt = fmt or detect(head)
    rest = _chunks(stream)
    if fmt == "rawjson":
        return _read_rawjson(_prepend(head, rest))
    return _read_plain(_lines(_prepend(head, rest)))


def parse_text(text: str, fmt: Format | None = None) -> BuildLog:
    import io

    return parse_stream(io.StringIO(text), fmt)


def read(text: str) -> tuple[BuildLog, str]:
    """A build's captured stderr (progress, then the client's own error lines) as its log, and
    the last lines that are not progress (buildctl's own error, e.g. `failed to dial`), both
    without signatures. A build that failed before printing any progress gives an empty log:
    the caller reports the tail as that image's error."""
    text = redact(text)
    try:
        log = parse_text(text)
    except ValueError:
        log = BuildLog(steps=(), bookkeeping=())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("{")]
    return log, "; ".join(lines[-3:])[-600:]


def redact_file(path: pathlib.Path) -> str:
    """A kept progress log, rewritten without signatures when it had any; returns its text."""
    text = path.read_text(errors="replace")
    if text != (redacted := redact(text)):
        path.write_text(redacted)
    return redacted


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from complete
    if pending:
        yield pending
