"""Reports for people and machines: markdown with Mermaid, JSON, and comparing runs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from ci import report
from ci.pipeline import CacheStatus, ImageResult, PipelineResult
from ci.progress import parse_stream

DATA = pathlib.Path(__file__).parent / "data" / "progress"


def cli(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci.cli", *args], capture_output=True, text=True, cwd=cwd)


def result_for(name: str) -> PipelineResult:
    with (DATA / name).open() as stream:
        log = parse_stream(stream)
    image = ImageResult(name="bot", digest="sha256:" + "0" * 64, refs=["r/x:1"], cached_steps=log.cached_count,
                        total_steps=len(log.cacheable), duration=3.2, log=log, cache_import=CacheStatus(True, "ok"),
                        cache_export=CacheStatus(False, "429 Too Many Requests"), warnings=["cache export failed"])
    return PipelineResult(images=[image], cache_backend="gha", duration=3.5)


def test_markdown_summary_of_a_real_log_has_the_table_and_a_mermaid_timeline() -> None:
    markdown = report.to_markdown(result_for("partial.rawjson"))
    assert "| image | cached steps | hit ratio | goal | duration | cache import | cache export | digest |" in markdown
    assert "| bot | 1/5 | 20% | missed | 3.2 s | ok | FAILED: 429 Too Many Requests |" in markdown
    block = markdown.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block.startswith("gantt\n") and "dateFormat x" in block
    tasks = [line for line in block.splitlines() if ":done," in line or ":crit," in line]
    assert len(tasks) == 5 and sum(":done," in t for t in tasks) == 1  # one hit, four misses
    assert all(":" not in t.split(" :", 1)[0] for t in tasks)  # task names cannot hold ':'
    assert "> warning (bot): cache export failed" in markdown


def test_json_report_schema() -> None:
    data = json.loads(report.to_json(result_for("warm.rawjson")))
    assert data["schema"] == "dimbybot2.build-report/1" and data["ok"] is True and data["hit_goal"] == 0.7
    (image,) = data["images"]
    assert image["cached_steps"] == image["total_steps"] == 5 and image["hit_ratio"] == 1.0
    assert image["cache_export"] == {"ok": False, "detail": "429 Too Many Requests"}
    assert [s["label"] for s in image["steps"]] == ["build 2/4", "build 3/4", "build 4/4", "stage-1 2/3", "stage-1 3/3"]


def test_report_cli_table_and_json() -> None:
    table = cli("report", str(DATA / "partial.plain"))
    assert table.returncode == 0 and "1/5 cached (20%)" in table.stdout and "miss" in table.stdout
    data = json.loads(cli("report", str(DATA / "warm.plain"), "--format", "json").stdout)
    assert data["images"][0]["cached_steps"] == 5
    failed = cli("report", str(DATA / "failed.rawjson"))
    assert "build failed at [stage-1 3/3]" in failed.stderr


def test_report_against_another_run_lists_the_steps_that_changed() -> None:
    result = cli("report", str(DATA / "partial.rawjson"), "--against", str(DATA / "warm.rawjson"), "--format", "json")
    changes = json.loads(result.stdout)["changes"]
    assert [(c["label"], c["before"], c["after"]) for c in changes] == [
        ("build 3/4", "hit", "miss"), ("build 4/4", "hit", "miss"), ("stage-1 2/3", "hit", "miss"), ("stage-1 3/3", "hit", "miss")]


def test_report_against_a_prediction_and_between_build_reports(tmp_path: pathlib.Path) -> None:
    prediction = {"images": [{"name": "t", "first_miss": None, "steps": [
        {"label": label, "instruction": "X", "status": "hit", "reason": None, "changed_files": []}
        for label in ("build 2/4", "build 3/4", "build 4/4", "stage-1 2/3", "stage-1 3/3")]}]}
    (tmp_path / "prediction.json").write_text(json.dumps(prediction))
    result = cli("report", str(DATA / "partial.rawjson"), "--against", str(tmp_path / "prediction.json"), "--format", "json")
    assert len(json.loads(result.stdout)["changes"]) == 4  # predicted hits that missed
    (tmp_path / "old.json").write_text(report.to_json(result_for("warm.rawjson")))
    (tmp_path / "new.json").write_text(report.to_json(result_for("partial.rawjson")))
    between = cli("report", str(tmp_path / "new.json"), "--against", str(tmp_path / "old.json"), "--image", "bot", "--format", "json")
    assert len(json.loads(between.stdout)["changes"]) == 4


def test_report_rejects_what_is_not_progress(tmp_path: pathlib.Path) -> None:
    (tmp_path / "junk.txt").write_text("hello\n")
    result = cli("report", str(tmp_path / "junk.txt"))
    assert result.returncode == 2 and result.stderr.startswith("error: LOG: not BuildKit progress")


def git(repo: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True, capture_output=True)


def test_explain_cli_json_shape_and_errors(tmp_path: pathlib.Path) -> None:
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "Dockerfile").write_text("FROM debian AS build\nCOPY app/ /app/\nRUN make\n\nFROM debian\nCOPY --from=build /app /app\n")
    (repo / "app" / "main.c").write_text("int main(){}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    (repo / "app" / "main.c").write_text("int main(){return 1;}\n")
    result = cli("explain", "--repo", str(repo), "--dockerfile", "Dockerfile", "--context", ".", "--base", "HEAD", "--format", "json")
    assert result.returncode == 0, result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert image["first_miss"] == "build 2/3"
    steps = {s["label"]: s for s in image["steps"]}
    assert steps["build 2/3"]["changed_files"] == ["app/main.c"] and steps["build 2/3"]["status"] == "miss"
    assert set(steps["build 2/3"]) == {"label", "instruction", "status", "reason", "changed_files"}
    bad = cli("explain", "--repo", str(repo), "--base", "no-such-rev")
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: --base: 'no-such-rev' is not a commit in {repo}"
    lonely = cli("explain", "--repo", str(repo), "--dockerfile", "Dockerfile", "--base", "HEAD")
    assert lonely.returncode == 2 and "--dockerfile and --context go together" in lonely.stderr
