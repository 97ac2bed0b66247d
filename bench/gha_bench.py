"""Benchmark of the gha backend (v2), against the anchor: plain `docker buildx build` with the
flags docker/build-push-action passes for `type=gha` (a scope per image, `mode=max`).

Both images, side by side in one run, `repeat` times, alternating which side goes first. Each
side of a repetition gets its own cache service (the stand-in for GitHub's, over Azurite: see
tests/gha_standin) so neither finds the other's blobs, and every scenario runs on a fresh
runner (a new private dockerd: empty build cache and content store):

  cold          nothing to import; exports the cache
  unchanged     same inputs: everything from the cache
  code-change   a bot source change
  lock-change   a bot/requirements.lock change

Both sides build and push both images (SHA tag and `latest`) to a local registry. Times are
wall clock of the command (the private daemon's start is not counted). Cache bytes stored are
per scope: the scope's index plus every blob it lists, read back through the REST API.

Writes JSON (bench/results/build_bench_gha.json); `build_bench.py --table-from JSON` prints the
README table from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ci import cache, cache_usage, config, local, pipeline, tags  # noqa: E402
from ci.progress import parse_stream  # noqa: E402
from tests import fresh_docker  # noqa: E402
from tests.conftest import BASE_IMAGES, LOCAL_BASES  # noqa: E402
from tests.gha_standin.service import GhaStandIn, start  # noqa: E402
from tests.registry_fixture import RunningRegistry, start_registry  # noqa: E402

SHA = "c" * 40
SCENARIOS = ("cold", "unchanged", "code-change", "lock-change")
BASES = BASE_IMAGES


def fresh_runner() -> contextlib.AbstractContextManager[fresh_docker.PrivateDocker]:
    return fresh_docker.running(images=BASES)


@contextlib.contextmanager
def runner_env(runner: fresh_docker.PrivateDocker, gha: GhaStandIn) -> Iterator[None]:
    """The build's process environment as on a GitHub runner (the drivers read os.environ)."""
    saved = dict(os.environ)
    os.environ.update({**gha.runner_env(), "DOCKER_HOST": runner.host})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def scratch_repo(dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "Lavalink", dest / "Lavalink")
    return dest


def plans(repo: pathlib.Path, registry: RunningRegistry, namespace: str) -> tuple[pipeline.PipelineOptions, list[pipeline.ImagePlan]]:
    options = pipeline.PipelineOptions(registry=f"{registry.host}/{namespace}", tag_plan=tags.plan(SHA), build_args=LOCAL_BASES,
                                       cache=cache.CacheOptions(backend=cache.Backend.GHA, gha_tokens=True))
    return options, pipeline.plan(config.load(repo), options, root=repo)


def run_pipeline(repo: pathlib.Path, work: pathlib.Path, registry: RunningRegistry, namespace: str) -> dict[str, Any]:
    options, image_plans = plans(repo, registry, namespace)
    started = time.monotonic()
    result = local.build_and_push(image_plans, options, repo, work, registry.username, registry.password)
    seconds = time.monotonic() - started
    assert result.ok, [i.error for i in result.images]
    return {"seconds": seconds, "cached": sum(i.cached_steps for i in result.images),
            "total": sum(i.total_steps for i in result.images),
            "export_ok": all(i.cache_export.ok for i in result.images)}


def plain_argv(plan: pipeline.ImagePlan, repo: pathlib.Path, work: pathlib.Path) -> list[str]:
    """What docker/build-push-action runs for `cache-from: type=gha,scope=S` / `cache-to:
    type=gha,mode=max,scope=S`, `push: true`, two tags (it adds --iidfile and --metadata-file);
    buildx itself fills token, url_v2 and version=2 from the runner's environment."""
    request = plan.request
    argv = [local.DOCKER, "buildx", "build", "--progress=rawjson", "--file", str(repo / request.dockerfile),
            "--provenance=false", "--sbom=false", "--iidfile", str(work / f"plain-{plan.image.name}.iid"),
            "--metadata-file", str(work / f"plain-{plan.image.name}.metadata.json")]
    for key, value in request.all_build_args:
        argv += ["--build-arg", f"{key}={value}"]
    argv += ["--cache-from", f"type=gha,scope={plan.image.scope}", "--cache-to", f"type=gha,mode=max,scope={plan.image.scope}"]
    for ref in plan.refs:
        argv += ["--tag", ref]
    return [*argv, "--push", str(repo / request.context)]


def run_plain(repo: pathlib.Path, work: pathlib.Path, registry: RunningRegistry, namespace: str) -> dict[str, Any]:
    _, image_plans = plans(repo, registry, namespace)
    with local.docker_config({registry.host: (registry.username, registry.password)}) as env:
        started = time.monotonic()
        procs = []
        for plan in image_plans:
            log = (work / f"plain-{plan.image.name}.json").open("w")
            procs.append((subprocess.Popen(plain_argv(plan, repo, work), stderr=log, stdout=subprocess.DEVNULL, env=env), log, plan))
        for proc, log, _ in procs:
            assert proc.wait() == 0, (work / log.name).read_text()[-2000:]
            log.close()
        seconds = time.monotonic() - started
    cached = total = 0
    for _, _, plan in procs:
        with (work / f"plain-{plan.image.name}.json").open() as stream:
            parsed = parse_stream(stream)
        cached, total = cached + parsed.cached_count, total + len(parsed.cacheable)
    return {"seconds": seconds, "cached": cached, "total": total}


def scope_bytes(gha: GhaStandIn) -> dict[str, int]:
    """Bytes per scope as `dimbybot-ci cache usage` computes them, from the REST listing."""
    entries = [cache_usage.CacheEntry.from_api(item) for item in gha.service._list({"per_page": "100"})["actions_caches"]]
    while len(entries) < len(gha.service.finalized()):
        page = len(entries) // 100 + 1
        entries += [cache_usage.CacheEntry.from_api(item) for item in gha.service._list({"per_page": "100", "page": str(page)})["actions_caches"]]
    blobs: dict[int, set[str] | None] = {}
    for entry in entries:
        key = cache_usage.IndexKey.parse(entry.key)
        if key is not None:
            blobs[entry.id] = read_index(gha, entry.key)
    usage = cache_usage.analyse(entries, blobs, min_age_seconds=0)
    return {s.scope: s.bytes for s in usage.scopes}


def read_index(gha: GhaStandIn, key: str) -> set[str] | None:
    from ci.cache_client import RuntimeCache

    return RuntimeCache(gha.service.runtime_token(), gha.results_url).index_blobs(key)


@dataclasses.dataclass
class Side:
    name: str  # "pipeline" or "plain"
    runs: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=lambda: {s: [] for s in SCENARIOS})
    cache_bytes: list[int] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)


def make_change(repo: pathlib.Path, scenario: str) -> None:
    """The edit a scenario makes in the scratch repository, a new one each time: the bot's code
    (code-change), or a comment in its lock (lock-change: pip installs the same hashed pins)."""
    if scenario == "code-change":
        (repo / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')
    elif scenario == "lock-change":
        lock = repo / "bot" / "requirements.lock"
        lock.write_text(lock.read_text() + f"# {uuid.uuid4()}\n")


def one_side(side: Side, tmp: pathlib.Path, registry: RunningRegistry, repeat_index: int) -> None:
    repo = scratch_repo(tmp / f"{side.name}-{repeat_index}" / "repo")
    work = repo.parent / "work"
    work.mkdir()
    generator = start(repo.parent / "gha")
    gha = next(generator)
    try:
        for scenario in SCENARIOS:
            make_change(repo, scenario)
            namespace = f"{side.name}{repeat_index}"
            for attempt in (1, 2):  # a failed run is retried once and reported, never silently dropped
                try:
                    with fresh_runner() as runner, runner_env(runner, gha):
                        run = (run_pipeline if side.name == "pipeline" else run_plain)(repo, work, registry, namespace)
                    break
                except AssertionError as error:
                    side.failures.append(f"{scenario} attempt {attempt}: {str(error)[-300:]}")
                    if attempt == 2:
                        raise
            side.runs[scenario].append(run)
            if scenario == "unchanged":
                side.cache_bytes.append(sum(scope_bytes(gha).values()))
            print(f"  {side.name:<8} {scenario:<12} {run['seconds']:6.2f} s  {run['cached']}/{run['total']} cached", flush=True)
    finally:
        generator.close()


def stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def run(repeat: int, out: pathlib.Path) -> None:
    sides = {"pipeline": Side("pipeline"), "plain": Side("plain")}
    with tempfile.TemporaryDirectory(prefix="dimbybot-gha-bench-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        registry_gen = start_registry(tmp / "registry")
        registry = next(registry_gen)
        try:
            for index in range(repeat):
                order = ("pipeline", "plain") if index % 2 == 0 else ("plain", "pipeline")
                print(f"repeat {index + 1}/{repeat}: {order[0]} first", flush=True)
                for name in order:
                    one_side(sides[name], tmp, registry, index)
        finally:
            registry_gen.close()
    summary: dict[str, Any] = {"repeat": repeat, "date": datetime.date.today().isoformat(), "scenarios": {}}
    for scenario in SCENARIOS:
        summary["scenarios"][scenario] = {name: {**stats([r["seconds"] for r in side.runs[scenario]]),
                                                 "cached": side.runs[scenario][0]["cached"], "total": side.runs[scenario][0]["total"],
                                                 "all_seconds": [round(r["seconds"], 2) for r in side.runs[scenario]]}
                                          for name, side in sides.items()}
    cold = summary["scenarios"]["cold"]["pipeline"]["median"]
    unchanged = summary["scenarios"]["unchanged"]["pipeline"]["median"]
    overheads = [(summary["scenarios"][s]["pipeline"]["median"] - summary["scenarios"][s]["plain"]["median"])
                 / summary["scenarios"][s]["plain"]["median"] for s in SCENARIOS]
    ours_bytes, plain_bytes = statistics.median(sides["pipeline"].cache_bytes), statistics.median(sides["plain"].cache_bytes)
    summary["targets"] = {
        "unchanged_share_of_cold": round(unchanged / cold, 3),
        "overhead_vs_plain": {s: round(o, 3) for s, o in zip(SCENARIOS, overheads, strict=True)},
        "overhead_vs_plain_all_scenarios": round(statistics.median(overheads), 3),
        "cache_bytes": {"pipeline": ours_bytes, "plain": plain_bytes, "ratio": round(ours_bytes / plain_bytes, 3)},
    }
    summary["failures"] = {name: side.failures for name, side in sides.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(readme_table(summary))
    print(f"wrote {out}")


def readme_table(summary: dict[str, Any]) -> str:
    lines = ["| scenario (both images, fresh runner) | pipeline min / median / max | plain buildx min / median / max "
             "| cached / total | vs cold |", "| --- | --- | --- | --- | --- |"]
    cold = summary["scenarios"]["cold"]["pipeline"]["median"]
    for scenario, sides in summary["scenarios"].items():
        ours, plain = sides["pipeline"], sides["plain"]
        lines.append(f"| {scenario} | {ours['min']:.1f} / **{ours['median']:.1f}** / {ours['max']:.1f} s "
                     f"| {plain['min']:.1f} / **{plain['median']:.1f}** / {plain['max']:.1f} s "
                     f"| {ours['cached']} / {ours['total']} | {ours['median'] / cold:.0%} |")
    targets = summary["targets"]
    lines += ["", f"Unchanged inputs: **{targets['unchanged_share_of_cold']:.0%} of cold** (target <= 15%). "
              f"Pipeline vs plain, median over scenarios: **{targets['overhead_vs_plain_all_scenarios']:+.1%}** (target < 3%; "
              + ", ".join(f"{k} {v:+.1%}" for k, v in targets["overhead_vs_plain"].items()) + "). "
              f"Cache stored after the unchanged run: pipeline {targets['cache_bytes']['pipeline'] / 1e6:.1f} MB, plain "
              f"{targets['cache_bytes']['plain'] / 1e6:.1f} MB (**{targets['cache_bytes']['ratio']:.2f}x**, target within 10%). "
              f"{summary['repeat']} repeats, {summary['date']}."]
    return "\n".join(lines)
