"""Issue 22, item 1: signed cache URLs never reach a report, a summary or a kept log.

BuildKit names the signed blob URL in its errors (`GET https://acct.blob.core.windows.net/...
?se=...&sig=...: 403`); a signature is a credential until it expires. Both drivers read
progress through ci.progress, which removes the query of every signed URL (a `sig`, `se` or
`sv` parameter; any query of an Azure blob host or of Azurite's `127.0.0.1:PORT/devstoreaccount1`).

The progress texts are shaped as BuildKit writes them: rawjson as Go's encoder escapes it (`&`
becomes `\\u0026`), and plain. The Dagger path runs the real `build_and_push` with the engine
stood in for by tests/engine_double.py (no engine can run here, and build_and_push awaits the
engine before it writes its report: the double answers the buildctl exec with this progress and
records nothing that is asserted on). The local path runs the real `local.run_build` with a
stand-in `docker` that prints the same progress (no build needed to see what is kept).
"""

from __future__ import annotations

import json
import pathlib
import stat
from collections.abc import Callable

import pytest
from dagger import dag

from ci import local, main, pipeline, progress, report
from ci.model import BuildRequest, Output
from tests.engine_double import EngineDouble, Script, failed_build, install

SHA = "0123456789abcdef0123456789abcdef01234567"
SECRETS = ("S1GSECRET", "AZURITESIG", "SVSECRET", "EXPIRYSECRET", "WARNSIG", "NAMESIG")
BLOB = ("https://acct.blob.core.windows.net/cache/sha256:ab?se=2026-11-24T10%3A00%3A00Z&sp=r&sv=2023-11-03"
        "&sr=b&sig=S1GSECRET%3D")
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/c/19-96?sv=2021-08-06&spr=http%2Chttps&sp=r&sig=AZURITESIG%2F"
# Only sv= (no sig in the text that survived): still a signed URL's query.
RESULTS = "https://results.example/twirp/x?sv=SVSECRET&skoid=abc"
ONLY_SE = "https://storage.example/b/k?se=EXPIRYSECRET"


def go_json(value: object) -> str:
    """JSON as Go's encoding/json writes it (BuildKit's rawjson): &, <, > escaped."""
    return json.dumps(value).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def rawjson_progress() -> str:
    vertex = {"digest": "sha256:" + "1" * 64, "name": "[deps 2/4] RUN pip download " + ONLY_SE.replace("EXPIRY", "NAMESIG-"),
              "started": "2026-11-24T10:00:00Z", "completed": "2026-11-24T10:00:01Z",
              "error": f"failed to copy: GET {BLOB}: 403 Forbidden; then GET {AZURITE}, {RESULTS}. and {ONLY_SE}"}
    warning = {"short": __import__("base64").b64encode(f"cache at {AZURITE.replace('AZURITESIG', 'WARNSIG')}".encode()).decode()}
    lines = [go_json({"vertexes": [{k: v for k, v in vertex.items() if k != "error" and k != "completed"}]}),
             go_json({"vertexes": [vertex], "warnings": [warning]})]
    return "\n".join(lines) + f"\nerror: failed to solve: GET {BLOB}: 403 Forbidden\n"


def plain_progress() -> str:
    return ("#1 [internal] load build definition from Dockerfile\n#1 DONE 0.0s\n\n"
            f"#2 [deps 2/4] RUN pip download {ONLY_SE.replace('EXPIRY', 'NAMESIG-')}\n"
            f"#2 ERROR: failed to copy: GET {BLOB}: 403 Forbidden; then GET {AZURITE}, {RESULTS}. and {ONLY_SE}\n"
            f"WARNING: cache at {AZURITE.replace('AZURITESIG', 'WARNSIG')}\n"
            f"error: failed to solve: GET {BLOB}: 403 Forbidden\n")


PROGRESS = {"rawjson": rawjson_progress, "plain": plain_progress}


def assert_no_secret(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} in {text[:2000]}"
    assert "sig=" not in text and "\\u0026sig" not in text


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_the_parser_removes_signed_queries_from_every_field(fmt: str) -> None:
    log = progress.parse_text(PROGRESS[fmt]())
    assert log.error is not None and "403 Forbidden" in log.error  # the error's words stay
    assert "https://acct.blob.core.windows.net/cache/sha256:ab?<signature removed>: 403 Forbidden" in log.error
    assert "http://127.0.0.1:10000/devstoreaccount1/c/19-96?<signature removed>," in log.error
    fields = [log.error, *log.warnings, *(s.name for s in (*log.steps, *log.bookkeeping))]
    assert_no_secret("\n".join(fields))


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_read_keeps_the_tail_without_signatures_and_ordinary_queries_as_they_are(fmt: str) -> None:
    text = PROGRESS[fmt]() + "note: https://pypi.example/simple/x/?page=2\n"
    log, tail = progress.read(text)
    assert "failed to solve" in tail and "https://pypi.example/simple/x/?page=2" in tail
    assert_no_secret(tail)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[Script], EngineDouble]:
    return install(monkeypatch)


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
async def test_the_dagger_report_and_summary_carry_no_signature(fmt: str, engine: Callable[[Script], EngineDouble]) -> None:
    engine(Script(builds={"dimbybot2-bot:": failed_build(PROGRESS[fmt]())}))
    result = await main.Dimbybot2(source=dag.directory()).build_and_push(  # type: ignore[call-arg]
        registry="ghcr.io/me", username="me", password=dag.set_secret("pw", "hunter2"), sha=SHA)
    bot = next(i for i in result.images if i.name == "bot")
    assert bot.error.startswith("build of bot failed: ") and "403 Forbidden" in bot.error
    for text in (result.report(), result.summary(), bot.error, *bot.warnings):
        assert_no_secret(text)


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_the_local_driver_keeps_no_signature_in_its_log_or_result(fmt: str, tmp_path: pathlib.Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for `docker buildx build` (not the code under test): prints the progress, fails.
    (tmp_path / "progress.txt").write_text(PROGRESS[fmt]())
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\ncat {tmp_path / 'progress.txt'} >&2\nexit 1\n")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(local, "DOCKER", str(docker))
    request = BuildRequest(image="bot", context=".", dockerfile="Dockerfile", output=Output("cacheonly"))
    outcome = local.run_build(request, tmp_path, tmp_path / "work")
    assert not outcome.ok
    kept = outcome.progress_file.read_text()
    assert "403 Forbidden" in kept
    assert_no_secret(kept)
    assert_no_secret(outcome.stderr_tail)
    result = pipeline.image_result("bot", request, outcome.log, None)
    result.error = outcome.log.error
    assert_no_secret(report.to_json(pipeline.PipelineResult(images=[result], cache_backend="gha")))
