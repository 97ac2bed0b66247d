"""Fuzz targets for every reader of outside input (issue 18): each takes bytes and either
returns or raises the reader's own error with a one-line message; anything else is a crash.
The tests below are the bounded CI pass (hypothesis, a few hundred examples per target, seeded
from tests/data); bench/fuzz_campaign.py runs the same targets for a long campaign (it adds the
upstream vectors at run time). Crashes the campaign found are regression tests at the end."""

from __future__ import annotations

import io
import json
import pathlib
import random
import zipfile
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci import progress, report, trends, trends_github
from ci.explain.dockerfile import DockerfileError, arg_decls, copy_sources, env_decls, mount_options, parse
from ci.explain.ignore import IgnorePatternError, IgnoreRules
from ci.explain.predict import BuildInput, model
from ci.explain.snapshot import FileInfo

DATA = pathlib.Path(__file__).parent / "data"


class Crash(AssertionError):
    """A reader raised something other than its one-line error."""


def _one_line(err: Exception) -> None:
    if "\n" in str(err) or not str(err).strip():
        raise Crash(f"{type(err).__name__} message is not one line: {str(err)[:200]!r}") from err


class _Files:
    """An in-memory context: the fuzzed Dockerfile and two files."""

    exact_modes = True

    def __init__(self, dockerfile: str) -> None:
        self.files = {"Dockerfile": dockerfile, "a.txt": "a\n", "dir/b.txt": "b\n", ".dockerignore": "*.log\n"}

    def read(self, path: str) -> str | None:
        return self.files.get(path.removeprefix("./"))

    def listing(self, directory: str) -> dict[str, FileInfo]:
        return {p: FileInfo("file", 0o644, len(t)) for p, t in self.files.items()}

    def digest(self, path: str) -> str:
        return str(hash(self.files.get(path, "")))


def dockerfile(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parsed = parse(text)
        for stage in parsed.stages:
            parsed.label_prefix(stage)
            for ins in stage.instructions:
                _ = ins.text
                if ins.keyword == "ARG":
                    arg_decls(ins)
                elif ins.keyword == "ENV":
                    env_decls(ins)
                elif ins.keyword in ("COPY", "ADD"):
                    copy_sources(ins)
                for spec in ins.flag_values("mount"):
                    mount_options(spec)
        model(BuildInput(_Files(text), "Dockerfile", ".", {}))
    except (DockerfileError, IgnorePatternError) as err:
        _one_line(err)
    except ValueError as err:  # --target / stage lookups: one line too
        _one_line(err)


_PATHS = ("a", "a/b", "a/b/c.txt", ".git", "x.log", "src/__pycache__/m.pyc", "dir/", "[", "\\", "**")


def dockerignore(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        rules = IgnoreRules.parse(text)
    except IgnorePatternError as err:
        _one_line(err)
        return
    lines = [line for line in text.splitlines() if line][:8]
    for path in (*_PATHS, *lines):
        rules.ignored(path)
    try:
        IgnoreRules.from_patterns(lines)
    except IgnorePatternError as err:
        _one_line(err)


def progress_rawjson(data: bytes) -> None:
    _progress(data, "rawjson")


def progress_plain(data: bytes) -> None:
    _progress(data, "plain")


def _progress(data: bytes, fmt: progress.Format) -> None:
    text = data.decode("utf-8", "replace")
    for chosen in (fmt, None):
        try:
            log = progress.parse_text(text, chosen)
        except ValueError as err:
            _one_line(err)
            continue
        report.statuses_of_log(log)
        _ = (log.cacheable, log.error)


def build_report(data: bytes) -> None:
    """What `report --against` reads: a build report or an explain prediction (JSON)."""
    try:
        value = json.loads(data)
    except ValueError:
        return  # not JSON: the CLI's JSON loading decides, not this reader
    for image in (None, "bot"):
        try:
            report.statuses_of_json(value, image)
        except ValueError as err:
            _one_line(err)


def trends_report(data: bytes) -> None:
    try:
        trends.read_report(data, "fuzz.json")
    except trends.ReportError as err:
        _one_line(err)


def trends_artifact(data: bytes) -> None:
    """A GitHub artifact download: a zip holding report.json (fuzzed as the zip and as its member)."""
    blobs = [data]
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("report.json", data)
    blobs.append(raw.getvalue())
    for blob in blobs:
        try:
            trends.read_report(trends_github._report_from_zip(blob), "artifact")
        except trends.ReportError as err:
            _one_line(err)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dockerfile": dockerfile,
    "dockerignore": dockerignore,
    "progress-rawjson": progress_rawjson,
    "progress-plain": progress_plain,
    "build-report": build_report,
    "trends-report": trends_report,
    "trends-artifact": trends_artifact,
}


def project_seeds() -> dict[str, list[bytes]]:
    """Seeds from tests/data, per target."""
    progress_files = sorted((DATA / "progress").glob("*"))
    reports = sorted((DATA / "trends").glob("*/report.json"))
    dockerfiles = [p for p in progress_files if p.name.startswith("Dockerfile")] + sorted((DATA / "nonrepro").glob("Dockerfile"))
    raw = [p.read_bytes()[:20000] for p in progress_files if p.suffix == ".rawjson"]
    plain = [p.read_bytes()[:20000] for p in progress_files if p.suffix == ".plain"]
    report_blobs = [p.read_bytes() for p in reports]
    prediction = json.dumps({"images": [{"name": "bot", "steps": [{"label": "deps 2/4", "instruction": "RUN x", "status": "hit"}]}]})
    return {
        "dockerfile": [p.read_bytes() for p in dockerfiles],
        "dockerignore": [b"*\n!src\nsrc/**/*_test.py\n", b"# c\n**/__pycache__\n!a\\*b\n", b"\xef\xbb\xbf/build\n"],
        "progress-rawjson": raw,
        "progress-plain": plain,
        "build-report": report_blobs[:4] + [prediction.encode()],
        "trends-report": report_blobs,
        "trends-artifact": report_blobs[:3],
    }


# Tokens each reader cares about: random text alone rarely reaches the interesting branches.
TOKENS: dict[str, list[bytes]] = {
    "dockerfile": [b"FROM ", b"FROM a AS b\n", b"RUN ", b"COPY ", b"ADD ", b"ARG ", b"ENV ", b"WORKDIR ", b"ONBUILD ", b"SHELL [\"x\"]\n",
                   b"--mount=type=bind,from=", b"--from=", b"--chmod=", b"--link", b"<<EOF\n", b"\nEOF\n", b"<<-'E'", b"${", b"${A:-${B}}",
                   b"\\\n", b"# escape=`\n", b"# syntax=x\n", b"\t", b"\"", b"'", b"[", b"]", b"=", "\ufeff".encode()],
    "dockerignore": [b"*", b"**", b"!", b"?", b"[", b"]", b"[^a-z]", b"\\", b"/", b"../", b"#", b"\n", b"./", b"\xef\xbb\xbf"],
    "progress-rawjson": [b"{", b"}", b'"vertexes":[', b'"digest":"sha256:1"', b'"name":"[a 1/2] RUN x"', b'"cached":true', b'"started":"',
                         b'"completed":"', b'"error":"', b'"statuses":[', b'"logs":[', b'"data":"', b"null", b"[", b"]", b",", b"2024-01-01T00:00:00Z"],
    "progress-plain": [b"#1 ", b"#2 [a 1/2] RUN x\n", b"#3 CACHED\n", b"#4 DONE 0.1s\n", b"#5 ERROR: x\n", b"\n", b"[", b"] ", b"/", b"CANCELED"],
    "build-report": [b'{"images":[', b'"schema":"dimbybot2.build-report/1"', b'"steps":[', b'"label":', b'"cached":', b'"status":', b'"name":"bot"',
                     b'"instruction":', b"null", b"true", b"1", b"[]", b"{}", b","],
    "trends-report": [b'"schema":"dimbybot2.build-report/1"', b'"images":[', b'"hit_ratio":', b'"steps":', b'"run":{', b'"run_number":', b"1e999",
                      b"-1", b"null", b"true", b'"cache_usage":{"scope":"a","bytes":"x","quota_bytes":1}', b"{}", b"[]"],
    "trends-artifact": [b"PK\x03\x04", b'"images":[', b"{}", b"\x00"],
}


def mutate(data: bytes, rng: random.Random, tokens: list[bytes], others: list[bytes]) -> bytes:
    """One to eight random edits: flip, insert, delete, duplicate, a reader's token, a splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        pos = rng.randint(0, len(buf))
        if choice < 0.15 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randint(0, 7)
        elif choice < 0.3:
            buf[pos:pos] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 4)))
        elif choice < 0.45 and buf:
            del buf[pos:pos + rng.randint(1, 32)]
        elif choice < 0.55 and buf:
            start = rng.randint(0, len(buf) - 1)
            buf[pos:pos] = buf[start:start + rng.randint(1, 64)]
        elif choice < 0.9 and tokens:
            buf[pos:pos] = rng.choice(tokens)
        elif others:
            other = rng.choice(others)
            start = rng.randint(0, len(other))
            buf[pos:] = other[start:start + rng.randint(0, 256)] + buf[pos:pos + 256]
    return bytes(buf[:65536])


SEEDS = project_seeds()


@pytest.mark.parametrize("target", list(TARGETS))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(seed_index=st.integers(min_value=0, max_value=1000), noise=st.binary(max_size=64), rounds=st.integers(0, 2**32 - 1))
def test_a_reader_returns_or_raises_its_one_line_error(target: str, seed_index: int, noise: bytes, rounds: int) -> None:
    """The bounded pass: seed inputs mutated, and raw bytes; each reader must not crash."""
    seeds = SEEDS[target] or [b""]
    seed = seeds[seed_index % len(seeds)]
    rng = random.Random(rounds)  # noqa: S311 - reproducible fuzzing, not cryptography
    TARGETS[target](mutate(seed, rng, TOKENS[target], seeds))
    TARGETS[target](noise)


# Crashes the campaign found (bench/fuzz_campaign.py), each now a one-line error or a partial result.

def test_rawjson_vertex_without_digest_or_with_wrong_types_is_skipped_and_said() -> None:
    text = ('{"vertexes": [{"name": "[1/2] RUN a"}, "oops", {"digest": 7}, '
            '{"digest": "sha256:1", "name": "[2/2] RUN b", "started": 5, "completed": "2024-13-01T00:00:00Z", "cached": true}]}\n'
            '{"vertexes": {"digest": "x"}, "warnings": [{"short": "!!not base64"}, 3]}\n')
    log = progress.parse_text(text, "rawjson")
    assert [(s.label, s.cached) for s in log.cacheable] == [("2/2", True)]
    assert log.warnings[-1] == "skipped 3 malformed progress records"


def test_rawjson_timestamps_out_of_range_give_no_duration() -> None:
    text = '{"vertexes": [{"digest": "d", "name": "[1/1] RUN a", "started": "2024-01-01T00:00:00Z", "completed": "0000-99-01T00:00:00Z"}]}\n'
    assert progress.parse_text(text).steps[0].duration is None


@pytest.mark.parametrize("value", [
    {"images": [{"name": "bot", "steps": [{"label": "deps 2/4", "iNstruction": "RUN x", "status": "hit"}]}]},
    {"schema": "dimbybot2.build-report/1", "images": [{"name": "bot", "steps": [{"labl": "x", "cached": True}, 3]}]},
    {"schema": 3, "images": "no"},
    [1, 2],
    {"images": [None, {"name": "bot", "steps": None}]},
])
def test_build_report_reader_skips_malformed_steps_or_says_why_in_one_line(value: object) -> None:
    try:
        assert report.statuses_of_json(value) == {}
    except ValueError as err:
        assert "\n" not in str(err)


def test_trends_reader_treats_an_infinite_number_as_missing() -> None:
    text = ('{"schema": "dimbybot2.build-report/1", "images": [{"name": "bot", "cached_steps": 1e999, "total_steps": 7, '
            '"hit_ratio": 1e999, "duration": 2}]}')
    run, problems = trends.read_report(text, "r.json")
    assert run.images[0].cached_steps == 0 and run.images[0].hit_ratio == 0.0
    assert problems[0].message.startswith("bot lacks cached_steps, hit_ratio")
