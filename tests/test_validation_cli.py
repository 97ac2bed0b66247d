"""Issue 22, item 9: every verb's string options (and arguments) refuse hostile values as one line
naming the argument, exit 2, before anything is done; never a traceback.

The real console entry point (`ci.cli.run`, what `dimbybot-ci` runs) is called in this process
with argv set, stdout as strict UTF-8 and stderr with backslashreplace (Python's own streams).
Values: 120k characters, CR/LF (`x\\nregistry=evil.example/x`), NUL, option-like (`--help`, `-x`,
`--`), surrogate-escaped non-UTF-8 bytes (what Python makes of `\\xff` in argv), and text with
such characters anywhere, drawn by hypothesis. Every other argument is harmless: an empty
repository (no Dockerfile: a missed check would fail later on `--image`, naming the wrong
argument, and build nothing), empty files, a GitHub API at 127.0.0.1:1 (refused at once).
The deploy verbs are checked elsewhere; `cache usage|prune` are ci/cache_cli.py's.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci import cli
from tests.conftest import REPO

WORK = pathlib.Path(tempfile.gettempdir())
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def place() -> Iterator[pathlib.Path]:
    """An empty repository, two empty files, and the environment variables the verbs read."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="dimbybot-validation-"))
    (root / "a").write_text("")
    (root / "b").write_text("")
    saved = {k: os.environ.get(k) for k in ("REGISTRY_PASSWORD", "GITHUB_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL",
                                            "GITHUB_STEP_SUMMARY")}
    os.environ.update({"REGISTRY_PASSWORD": "pw", "GITHUB_TOKEN": "t"})
    for name in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL", "GITHUB_STEP_SUMMARY"):
        os.environ.pop(name, None)
    try:
        yield root
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(root)


def verbs(root: pathlib.Path) -> dict[str, tuple[list[str], dict[str, str], list[str]]]:
    """verb -> (harmless base argv, option -> a valid value, positional arguments in order)."""
    return {
        "build-and-push": ([f"--repo={root}"], {
            "--registry": "ghcr.io/me", "--username": "me", "--password-env": "REGISTRY_PASSWORD", "--sha": SHA, "--tag": "v1",
            "--cache": "auto", "--cache-mode": "max", "--cache-ref": "ghcr.io/me/cache", "--cache-bust": "b1",
            "--cache-timeout": "10m", "--image": "bot", "--build-arg": "A=b", "--repo": str(root), "--work-dir": str(root / "w"),
            "--format": "table", "--summary-file": str(root / "s.md"), "--report-file": str(root / "r.json")}, []),
        "report": ([], {"--against": str(root / "a"), "--image": "bot", "--format": "table"}, ["LOG"]),
        "explain": ([f"--repo={root}"], {
            "--image": "bot", "--base": "HEAD~1", "--head": "HEAD", "--dockerfile": "Dockerfile", "--context": ".",
            "--target": "t", "--build-arg": "A=b", "--repo": str(root), "--format": "table"}, []),
        "verify": ([], {"--username": "me", "--password-env": "REGISTRY_PASSWORD", "--format": "table"}, ["A", "B"]),
        "verify-determinism": ([f"--repo={root}"], {
            "--image": "bot", "--build-arg": "A=b", "--repo": str(root), "--work-dir": str(root / "w"), "--format": "table"}, []),
        "debug": (["--image=bot", "--step=deps 1/1", f"--repo={root}"], {
            "--image": "bot", "--step": "deps 1/1", "--at": "before", "--base": "HEAD~1", "--exec": "true", "--cache": "auto",
            "--cache-ref": "ghcr.io/me/cache", "--cache-bust": "b1", "--build-arg": "A=b", "--repo": str(root),
            "--work-dir": str(root / "w")}, []),
        "trends": (["--github=octo/repo", "--api-url=http://127.0.0.1:1"], {
            "--github": "octo/repo", "--workflow": "deploy.yml", "--branch": "main", "--artifact": "build-report",
            "--token-env": "GITHUB_TOKEN", "--api-url": "http://127.0.0.1:1", "--download-dir": str(root / "d"),
            "--current": str(root / "a"), "--image": "bot", "--format": "table", "--chart": str(root / "c.svg"),
            "--summary-file": str(root / "s.md")}, ["PATHS"]),
    }


def positional_values(root: pathlib.Path, verb: str) -> dict[str, str]:
    return {"LOG": str(REPO / "tests" / "data" / "progress" / "warm.rawjson"), "A": str(root / "a"), "B": str(root / "b"),
            "PATHS": str(root)}


BAD = ["\r\n", "\n", "\r", "\x00", "\x1b[2J", "\udcff", "\udc80\udcfe", "\t", "\x7f", "\u2028"]


def hostile(valid: str) -> st.SearchStrategy[str]:
    anywhere = st.builds(lambda i, bad, rest: valid[:i] + bad + valid[i:] + rest, st.integers(0, len(valid)), st.sampled_from(BAD),
                         st.text(max_size=5))
    return st.one_of(
        st.just(valid + "a" * 120_000), st.just("a" * 120_000), st.just("x\nregistry=evil.example/x"), st.just(valid + "\x00"),
        st.sampled_from(["--help", "-x", "--", "-", "--registry=evil.example"]), st.just(valid + "\udcff"), anywhere)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict")
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace")
    code: object = None
    with mock.patch.object(sys, "argv", ["dimbybot-ci", *argv]), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            cli.run()
        except SystemExit as exit_:
            code = exit_.code
    stdout.flush()
    stderr.flush()
    return int(code) if isinstance(code, int) else (0 if code is None else 1), out.getvalue().decode(), err.getvalue().decode()


def assert_refused(argv: list[str], argument: str) -> None:
    code, stdout, stderr = invoke(argv)
    lines = stderr.strip().splitlines()
    shown = (code, stderr[:300], [a[:60] for a in argv])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and argument.lower() in lines[0].lower(), shown
    assert "Traceback" not in stderr and len(lines[0]) < 2000, lines[0][:300]


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_every_string_option_refuses_hostile_values_in_one_line(place: pathlib.Path, data: st.DataObject) -> None:
    table = verbs(place)
    verb = data.draw(st.sampled_from(sorted(table)), "verb")
    base, options, positionals = table[verb]
    argument = data.draw(st.sampled_from(sorted(options) + positionals), "argument")
    valid = positional_values(place, verb) if argument in positionals else options
    value = data.draw(hostile(valid[argument]), "value")
    given_positionals = [value if name == argument else positional_values(place, verb)[name] for name in positionals]
    argv = [verb, *base, *([f"{argument}={value}"] if argument in options else []), "--", *given_positionals]
    assert_refused(argv, argument)


@pytest.mark.parametrize("value", ["pw\udcff", "pw\nx", "a" * 120_000])
def test_a_password_from_the_environment_that_cannot_be_sent_is_refused_without_showing_it(place: pathlib.Path, value: str) -> None:
    os.environ["DIMBYBOT_TEST_PASSWORD"] = value
    try:
        for argv in (["build-and-push", f"--repo={place}", "--registry=ghcr.io/me", f"--sha={SHA}", "--username=me",
                      "--password-env=DIMBYBOT_TEST_PASSWORD"],
                     ["verify", "--username=me", "--password-env=DIMBYBOT_TEST_PASSWORD", str(place / "a"), str(place / "b")]):
            code, _, stderr = invoke(argv)
            assert code == 2 and "--password-env" in stderr and "pw" not in stderr.replace("password", ""), stderr[:300]
    finally:
        del os.environ["DIMBYBOT_TEST_PASSWORD"]


@pytest.mark.parametrize("ref", ["x,registry.insecure=true,ref=evil.invalid/steal", "ghcr.io/me/cache:tag", "ghcr.io",
                                 "https://ghcr.io/me/cache", "--help", "ghcr.io/me/cache,mode=min"])
def test_a_cache_ref_that_is_not_a_repository_never_reaches_the_cache_spec(place: pathlib.Path, ref: str) -> None:
    assert_refused(["build-and-push", f"--repo={place}", "--cache=registry", f"--cache-ref={ref}"], "--cache-ref")


@pytest.mark.parametrize("registry", ["--help", "-x", "--", "-registry.example", "a" * 300, "ghcr.io/me\nx"])
def test_a_registry_that_looks_like_an_option_or_is_too_long_is_refused(place: pathlib.Path, registry: str) -> None:
    assert_refused(["build-and-push", f"--repo={place}", f"--registry={registry}", f"--sha={SHA}"], "--registry")
