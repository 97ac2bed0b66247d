"""`dimbybot-ci trends`: many runs' build reports -> table, JSON, Mermaid, a chart file, alerts.

The reports in tests/data/trends are real: twelve `dimbybot-ci build-and-push` runs of this
project (both images, local base images, a registry cache) on a scratch clone, with a change
before most runs: 02 code, 04 lock file, 05 code, 06-07 cache registry down (import and
export fail), 08 Lavalink config, 09 code, 11 lock file, 12 code built with `--cache none`.
GitHub is replaced by a local stand-in of its REST API (tests/github_standin.py; GitHub itself
cannot be reached here).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ci import report, runinfo, trends
from tests import github_standin
from tests.conftest import LOCAL_BASES, REPO

DATA = pathlib.Path(__file__).parent / "data" / "trends"
TOKEN = "ghs_standin_token_5e1f"


def cli(*args: str, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci.cli", "trends", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO)


def real(run: int) -> dict:  # type: ignore[type-arg]
    return json.loads((DATA / f"run-{run:02d}" / "report.json").read_text())


def runs_dir(tmp_path: pathlib.Path, numbers: range) -> pathlib.Path:
    """A directory holding some of the real runs, as downloaded artifacts would be."""
    target = tmp_path / "reports"
    for n in numbers:
        shutil.copytree(DATA / f"run-{n:02d}", target / f"run-{n:02d}")
    return target


def test_a_table_per_image_over_every_real_run() -> None:
    result = cli(str(DATA))
    assert result.returncode == 0, result.stderr
    assert "bot: 12 run(s)" in result.stdout and "lavalink: 12 run(s)" in result.stdout
    assert "deps 3/4, deps 4/4" in result.stdout  # the lock-file runs name the steps that missed
    assert result.stderr == ""  # twelve good reports: nothing skipped


def test_json_series_follow_the_reports_oldest_first() -> None:
    data = json.loads(cli(str(DATA), "--format", "json").stdout)
    assert data["schema"] == "dimbybot2.trends/1" and data["runs"] == 12
    bot = data["images"]["bot"]
    assert [p["commit"] for p in bot] == [real(n)["run"]["commit"] for n in range(1, 13)]
    lock = bot[3]
    assert (lock["duration"], lock["hit_ratio"], lock["missed_steps"]) == (10.038, 0.7143, ["deps 3/4", "deps 4/4"])
    assert [p["cache_export"] for p in bot[4:8]] == ["ok", "failed", "failed", "ok"]
    assert bot[11]["cache_import"] == "off"  # --cache none


def test_alerts_on_the_newest_real_run_name_the_first_command() -> None:
    alerts = json.loads(cli(str(DATA), "--format", "json").stdout)["alerts"]
    assert sorted((a["kind"], a["image"]) for a in alerts) == [("hit-ratio", "bot"), ("hit-ratio", "lavalink"), ("slow", "bot")]
    by_kind = {(a["kind"], a["image"]): a for a in alerts}
    # Run 11 is the last run where the bot met the 70% goal (5/7): explain from its commit.
    assert by_kind["hit-ratio", "bot"]["command"] == f"dimbybot-ci explain --image bot --base {real(11)['run']['commit']}"
    assert "hit ratio 14% is under the 70% goal (missed: deps 3/4, deps 4/4" in by_kind["hit-ratio", "bot"]["message"]
    slow = by_kind["slow", "bot"]
    assert slow["message"].startswith("took 8.4 s,") and "median 1.1 s of the last 10 runs" in slow["message"]
    assert slow["command"].startswith(f"dimbybot-ci report {DATA}/run-12/report.json --against {DATA}/run-")


def test_exports_failing_once_is_news_twice_is_an_alert(tmp_path: pathlib.Path) -> None:
    once = json.loads(cli(str(runs_dir(tmp_path / "a", range(1, 7))), "--format", "json").stdout)["alerts"]
    assert not [a for a in once if a["kind"] == "export-failing"]
    twice = json.loads(cli(str(runs_dir(tmp_path / "b", range(1, 8))), "--format", "json").stdout)["alerts"]
    failing = sorted((a["image"], a["message"]) for a in twice if a["kind"] == "export-failing")
    assert [image for image, _ in failing] == ["bot", "lavalink"]
    assert all("failed in the last 2 runs" in m and "connection refused" in m for _, m in failing)
    # The registry in BuildKit's error did not answer: the first thing to check is whether it does.
    assert {a["command"] for a in twice if a["kind"] == "export-failing"} == {
        "curl -sSI https://127.0.0.1:9/v2/  # does the cache service answer from here?"}


def test_a_throttled_export_asks_for_fewer_uploads(tmp_path: pathlib.Path) -> None:
    for n in (1, 2):
        data = real(n)
        data["images"][0]["cache_export"] = {"ok": False, "detail": "failed to upload blob: 429 Too Many Requests"}
        (tmp_path / f"{n}.json").write_text(json.dumps(data))
    (alert,) = json.loads(cli(str(tmp_path), "--format", "json").stdout)["alerts"]
    assert (alert["kind"], alert["image"]) == ("export-failing", "bot")
    assert alert["command"].startswith("dimbybot-ci build-and-push --cache-mode=min")


def test_a_lavalink_config_change_falls_under_the_goal(tmp_path: pathlib.Path) -> None:
    alerts = json.loads(cli(str(runs_dir(tmp_path, range(1, 9))), "--format", "json").stdout)["alerts"]
    (alert,) = [a for a in alerts if a["kind"] == "hit-ratio"]
    assert alert["image"] == "lavalink" and "57%" in alert["message"] and "runtime 3/5" in alert["message"]
    assert alert["command"].endswith(f"--base {real(7)['run']['commit']}")


def test_a_lock_change_after_three_runs_is_slow_against_their_median(tmp_path: pathlib.Path) -> None:
    alerts = json.loads(cli(str(runs_dir(tmp_path, range(1, 5))), "--format", "json").stdout)["alerts"]
    (slow,) = [a for a in alerts if a["kind"] == "slow"]
    assert slow["image"] == "bot" and "took 10.0 s" in slow["message"] and "median 2.8 s" in slow["message"]


def test_a_scope_near_its_quota(tmp_path: pathlib.Path) -> None:
    found = {}
    for used in (8_500_000_000, 5_000_000_000):
        data = real(10)
        data["images"][0]["cache_usage"] = {"scope": "dimbybot2-bot", "bytes": used, "quota_bytes": 10_000_000_000}
        path = tmp_path / f"{used}.json"
        path.write_text(json.dumps(data))
        found[used] = json.loads(cli(str(path), "--format", "json").stdout)["alerts"]
    assert found[5_000_000_000] == []
    (alert,) = found[8_500_000_000]
    assert (alert["kind"], alert["image"]) == ("quota", "bot")
    assert alert["message"] == "cache scope dimbybot2-bot uses 8.50 GB, 85% of its 10.0 GB quota"


def test_missing_partial_and_corrupt_reports_are_one_line_each(tmp_path: pathlib.Path) -> None:
    reports = runs_dir(tmp_path, range(1, 4))
    (reports / "run-04").mkdir()
    (reports / "run-04" / "report.json").write_text((DATA / "run-04" / "report.json").read_text()[:700])  # cut off
    (reports / "run-05").mkdir()  # the download came back empty
    (reports / "run-06").mkdir()
    partial = real(6)
    del partial["images"][0]["duration"]
    (reports / "run-06" / "report.json").write_text(json.dumps(partial))
    (reports / "run-07").mkdir()
    (reports / "run-07" / "report.json").write_text(json.dumps({"images": [{"name": "bot", "steps": []}]}))  # explain output
    (reports / "run-08").mkdir()
    (reports / "run-08" / "report.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    no_run = real(9)
    del no_run["run"]
    (reports / "run-09").mkdir()
    (reports / "run-09" / "report.json").write_text(json.dumps(no_run))

    result = cli(str(reports))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    expected = {
        "run-04": "corrupt: ", "run-05": "missing: ", "run-06": "partial: ", "run-07": "not-a-report: ", "run-08": "corrupt: ",
        "run-09": "partial: "}
    assert len(lines) == len(expected), lines
    for run, kind in expected.items():
        (line,) = [line for line in lines if f"{run}" in line]
        assert line.startswith(kind), line
    assert "not JSON (Unterminated string" in result.stderr or "not JSON (Expecting" in result.stderr
    assert "bot lacks duration (shown as 0)" in result.stderr and "no schema field" in result.stderr
    assert "not UTF-8 text" in result.stderr and "no report.json in this directory" in result.stderr
    assert "bot: 5 run(s)" in result.stdout  # 01-03, the partial 06 and 09 without run metadata


def test_markdown_puts_this_run_against_the_last_runs(tmp_path: pathlib.Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    result = cli(str(DATA), "--current", str(DATA / "run-12" / "report.json"), "--last", "4", "--branch", "main",
                 "--image", "bot", "--format", "markdown", "--summary-file", str(summary))
    assert result.returncode == 0, result.stderr
    markdown = result.stdout
    assert markdown.startswith("## Build trends (last 5 runs of main)")
    assert summary.read_text() == "# earlier step\n" + markdown.rstrip("\n") + "\n"
    duration, ratio = [block.split("```", 1)[0] for block in markdown.split("```mermaid\n")[1:]]
    labels = [real(n)["run"]["commit"][:7] for n in (8, 9, 10, 11)]
    assert f'x-axis [{", ".join(repr(x).replace(chr(39), chr(34)) for x in labels)}, "this run"]' in duration
    assert "bar [0.9, 1.4, 0.7, 7.6, 8.4]" in duration
    assert "bar [100, 86, 100, 71, 14]" in ratio and "line [70, 70, 70, 70, 70]" in ratio
    assert "| hit-ratio | bot | 1158fb0 |" in markdown and f"`dimbybot-ci explain --image bot --base {real(11)['run']['commit']}`" in markdown


def test_mermaid_labels_cannot_break_the_chart() -> None:
    chart = report.mermaid_trend('we"ird: #1;', [('a "quoted" label', 1.0, 0.5), ("#12 abc1234", 2.0, 1.0)])
    assert 'title "we\'ird   1 : build duration (s)"' in chart
    assert "x-axis [\"a 'quoted' label\", \"run 12 abc1234\"]" in chart


def test_charts_are_drawn_from_real_reports(tmp_path: pathlib.Path) -> None:
    first, second, png = tmp_path / "a.svg", tmp_path / "b.svg", tmp_path / "t.png"
    for path in (first, second, png):
        result = cli(str(DATA), "--chart", str(path), "--format", "json")
        assert result.returncode == 0 and f"chart: {path} (12 runs)" in result.stderr
    root = ET.fromstring(first.read_bytes())  # noqa: S314 (our own output)
    text = "".join(root.itertext())
    assert root.tag.endswith("svg") and "build duration (s)" in text and "cache hit ratio (%)" in text
    assert "cache export failed" in text and "goal 70%" in text and real(12)["run"]["commit"][:7] in text
    assert first.read_bytes() == second.read_bytes()  # no dates or random ids: a committed chart changes with its data only
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 20_000


@pytest.mark.parametrize(("args", "message"), [
    (["--chart", "t.gif"], "error: --chart: must end in .svg or .png, got 't.gif'"),
    (["--github", "not a repo"], "error: --github: expected OWNER/REPO, got 'not a repo'"),
    (["--github", "o/r", "--last", "0"], "error: --last: must be between 1 and 1000, got 0"),
    (["--github", "o/r", "--token-env", "NO_SUCH_TOKEN_VAR"], "error: --token-env: environment variable NO_SUCH_TOKEN_VAR is empty or not set"),
    (["--format", "xml"], "error: --format: expected table, json or markdown, got 'xml'"),
    (["--margin", "-1"], "error: --margin: must be 0 or more, got -1.0"),
    (["--current", "/nonexistent/report.json"], "error: --current: /nonexistent/report.json: No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_request(args: list[str], message: str) -> None:
    state = github_standin.StandIn(TOKEN, "o/r", "deploy.yml", runs=[])
    with github_standin.serve(state):
        paths = [] if "--github" in args else [str(DATA)]
        result = cli(*paths, *args, "--api-url", state.api_url, env={"GITHUB_TOKEN": TOKEN})
    assert (result.returncode, result.stderr.strip()) == (2, message)
    assert state.requests == []


def test_no_source_at_all_is_bad_input() -> None:
    result = cli()
    assert (result.returncode, result.stderr.strip()) == (2, "error: PATHS: give report files or directories, or --github OWNER/REPO")


def _standin_runs() -> list[github_standin.FakeRun]:
    runs = [github_standin.FakeRun(id=7000 + n, run_number=100 + n, head_sha=real(n)["run"]["commit"], head_branch="main",
                                   created_at=real(n)["run"]["time"], report=(DATA / f"run-{n:02d}" / "report.json").read_bytes())
            for n in range(5, 13)]
    runs[1].report = None  # run 6: the job failed before uploading
    runs[3].expired = True  # run 8: artifact retention ran out
    runs[5].zip_member = "summary.md"  # run 10: a wrong artifact layout
    runs.append(github_standin.FakeRun(id=9999, run_number=999, head_sha="f" * 40, head_branch="feature",
                                       created_at="2026-11-24T21:00:00Z", report=(DATA / "run-01" / "report.json").read_bytes()))
    return runs


def test_reports_straight_from_github_through_the_rest_api(tmp_path: pathlib.Path) -> None:
    state = github_standin.StandIn(TOKEN, "owner/dimbybot2", "deploy.yml", runs=_standin_runs(), cache_bytes=9_200_000_000)
    with github_standin.serve(state):
        result = cli("--github", "owner/dimbybot2", "--branch", "main", "--last", "10", "--api-url", state.api_url,
                     "--token-env", "TRENDS_TOKEN", "--download-dir", str(tmp_path / "dl"), "--format", "json",
                     env={"TRENDS_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    bot = data["images"]["bot"]
    assert [p["run"] for p in bot] == [f"#{100 + n} {real(n)['run']['commit'][:7]}" for n in (5, 7, 9, 11, 12)]
    assert all(p["url"].endswith(f"/actions/runs/{7000 + int(p['run'][1:4]) - 100}") for p in bot)
    assert [p["source"] for p in bot][-1] == str(tmp_path / "dl" / "7012" / "report.json")
    assert (tmp_path / "dl" / "7012" / "report.json").read_bytes() == (DATA / "run-12" / "report.json").read_bytes()
    problems = {p["source"].split(" (")[0]: (p["kind"], p["message"]) for p in data["problems"]}
    assert problems == {"run #106": ("missing", "no 'build-report' artifact"),
                        "run #108": ("missing", "the 'build-report' artifact has expired"),
                        "run #110": ("missing", "the artifact holds no report.json (summary.md)")}
    assert {(a["kind"], a["image"]) for a in data["alerts"]} >= {("quota", "-"), ("hit-ratio", "bot")}
    assert data["cache_usage"] == [{"scope": "owner/dimbybot2 (all scopes)", "bytes": 9_200_000_000, "quota_bytes": 10_000_000_000}]
    # The token is for the API only: the signed blob URL never sees it, and no output shows it.
    blob = [r for r in state.requests if r.host == "blob"]
    assert len(blob) == 6 and all(r.authorization is None for r in blob)  # 8 runs: one without, one expired
    assert all(r.authorization == f"Bearer {TOKEN}" for r in state.requests if r.host == "api")
    assert TOKEN not in result.stdout + result.stderr


def test_github_refusing_the_token_is_one_line_exit_1() -> None:
    state = github_standin.StandIn(TOKEN, "owner/dimbybot2", "deploy.yml", runs=_standin_runs())
    with github_standin.serve(state):
        wrong = cli("--github", "owner/dimbybot2", "--api-url", state.api_url, env={"GITHUB_TOKEN": "wrong-token"})
        unknown = cli("--github", "owner/dimbybot2", "--workflow", "nope.yml", "--api-url", state.api_url, env={"GITHUB_TOKEN": TOKEN})
    assert (wrong.returncode, wrong.stderr.strip()) == (
        1, "error: --github: GitHub refused the token (HTTP 401) for /repos/owner/dimbybot2/actions/workflows/deploy.yml/runs: check --token-env")
    assert unknown.returncode == 1 and unknown.stderr.strip().startswith("error: --github: not found (HTTP 404): ")
    assert "wrong-token" not in wrong.stderr


def test_github_unreachable_is_one_line_exit_1() -> None:
    result = cli("--github", "owner/dimbybot2", "--api-url", "http://127.0.0.1:9", env={"GITHUB_TOKEN": TOKEN})
    assert result.returncode == 1 and result.stderr.startswith("error: --github: cannot reach 127.0.0.1:9: ")
    assert len(result.stderr.splitlines()) == 1


def test_run_metadata_on_github_and_in_a_checkout(tmp_path: pathlib.Path) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": "a" * 40, "GITHUB_REF_NAME": "main", "GITHUB_WORKFLOW": "build and deploy",
           "GITHUB_RUN_ID": "42", "GITHUB_RUN_NUMBER": "7", "GITHUB_REPOSITORY": "o/r", "GITHUB_SERVER_URL": "https://github.com"}
    import datetime

    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert runinfo.current(tmp_path, env, now) == {
        "commit": "a" * 40, "branch": "main", "time": "2026-01-02T03:04:05Z", "workflow": "build and deploy", "run_id": "42",
        "run_number": 7, "url": "https://github.com/o/r/actions/runs/42"}
    subprocess.run(["git", "init", "-q", "-b", "topic", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    local = runinfo.current(tmp_path, {"GITHUB_SHA": "ignored off GitHub"}, now)
    assert (local["commit"], local["branch"], local["run_id"]) == (head, "topic", None)


def test_reports_without_the_new_fields_are_still_read() -> None:
    old = real(3)
    del old["run"]
    run, problems = trends.read_report(json.dumps(old), "old.json", trends.RunInfo(source="old.json", commit="c" * 40))
    assert run.info.commit == "c" * 40 and run.image("bot") is not None and problems == []


@pytest.mark.docker
def test_build_and_push_writes_the_run_into_the_report(docker: str, repo_copy: pathlib.Path, work_dir: pathlib.Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(repo_copy)], check=True)
    subprocess.run(["git", "-C", str(repo_copy), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo_copy), "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x"],
                   check=True)
    head = subprocess.run(["git", "-C", str(repo_copy), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    out = work_dir / "report.json"
    args = [a for name, value in LOCAL_BASES for a in ("--build-arg", f"{name}={value}")]
    result = subprocess.run([sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(repo_copy), "--image", "lavalink",
                             "--cache", "engine", "--work-dir", str(work_dir), "--report-file", str(out), *args],
                            capture_output=True, text=True, env={**os.environ, "GITHUB_ACTIONS": ""})
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert (data["run"]["commit"], data["run"]["branch"]) == (head, "trunk") and data["run"]["time"].endswith("Z")
    (run,) = trends.load_paths([out]).runs
    assert run.info.commit == head and run.image("lavalink") is not None


def test_any_field_of_any_type_is_a_problem_line_never_a_traceback(tmp_path: pathlib.Path) -> None:
    """Every field of a real report (top level, run, first image, its first step and cache status),
    replaced by each wrong JSON type in turn: reading it either works or says why (ReportError),
    and the whole command (table, JSON, chart) over all of them exits 0 without a traceback."""
    original = real(4)
    wrong: list[object] = [None, "x", -5, 1.5, [], {}, True, [1, "a"], {"a": 1}]

    def places(data: dict) -> list[tuple[dict, str]]:  # type: ignore[type-arg]
        image = data["images"][0]
        return ([(data, k) for k in data] + [(data["run"], k) for k in data["run"]] + [(image, k) for k in image]
                + [(image["steps"][0], k) for k in image["steps"][0]] + [(image["cache_export"], k) for k in image["cache_export"]])

    checked = 0
    for index in range(len(places(original))):
        for value in wrong:
            data = json.loads(json.dumps(original))
            container, key = places(data)[index]
            container[key] = value
            try:
                run, problems = trends.read_report(json.dumps(data), "mutated.json")
            except trends.ReportError as error:
                assert str(error) and error.kind in ("corrupt", "partial", "not-a-report")
            else:
                assert all(p.message for p in problems) and run.images
            checked += 1
            (tmp_path / f"m{checked:04d}.json").write_text(json.dumps(data))
    assert checked > 250
    for args in ([], ["--format", "json", "--chart", str(tmp_path / "chart.svg")], ["--format", "markdown"]):
        result = cli(str(tmp_path), *args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
