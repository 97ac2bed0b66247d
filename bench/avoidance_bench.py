"""Benchmark of build avoidance (issue 19): unchanged inputs on a fresh runner, the pipeline
with avoidance on against plain `docker buildx build` with docker/build-push-action's flags
for `type=gha` (the peer: it has no way to skip).

Per repetition, each side gets its own cache service (the gha stand-in over Azurite) and its
own repository namespace in one local registry, and runs, each on a fresh runner (a new
private dockerd):

  cold       nothing to import, nothing recorded: built, cache exported (and, for the
             pipeline, the input key recorded beside the image)
  unchanged  the same inputs for the next commit: the pipeline finds the key and points the
             new SHA tag and `latest` at the recorded image; plain buildx builds from the cache
  code-change  a bot source change: the pipeline must build the bot (a skip would be wrong)
               and may skip Lavalink, whose inputs did not change

Both images, SHA tag and `latest` pushed. The base images are in the registry (pushed there
from the local stand-ins first), so the pipeline resolves their digests from it as it would
upstream; both sides build FROM the same references. Sides alternate which goes first.

Usage: python bench/avoidance_bench.py [--repeat N] [--out JSON]
       python bench/avoidance_bench.py --table-from JSON   (the README table)
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gha_bench import fresh_runner, make_change, plain_argv, runner_env, scratch_repo, stats  # noqa: E402
from ci import cache, config, local, pipeline, tags  # noqa: E402
from ci.progress import parse_stream  # noqa: E402
from tests.conftest import BASE_PREFIX  # noqa: E402
from tests.gha_standin.service import start  # noqa: E402
from tests.registry_fixture import RunningRegistry, start_registry  # noqa: E402

SHAS = {"cold": "d" * 40, "unchanged": "e" * 40, "code-change": "f" * 40}
BASES = {"python:3.11": f"{BASE_PREFIX}/python:3.11", "lavalink:4": f"{BASE_PREFIX}/lavalink:4"}


def push_bases(registry: RunningRegistry) -> tuple[tuple[str, str], ...]:
    """The stand-in bases, pushed to `registry/bases/...`; the build args that name them."""
    with fresh_runner() as daemon, local.docker_config({registry.host: (registry.username, registry.password)}) as env:
        env = {**env, "DOCKER_HOST": daemon.host}
        for name, local_image in BASES.items():
            ref = f"{registry.host}/bases/{name}"
            for argv in (["tag", local_image, ref], ["push", "--quiet", ref]):
                subprocess.run([local.DOCKER, *argv], env=env, check=True, capture_output=True, timeout=900)
    python, lavalink = (f"{registry.host}/bases/{name}" for name in BASES)
    return (("FETCH_IMAGE", python), ("LAVALINK_IMAGE", lavalink), ("PYTHON_IMAGE", python))


def image_plans(repo: pathlib.Path, registry: RunningRegistry, namespace: str, sha: str,
                bases: tuple[tuple[str, str], ...]) -> tuple[pipeline.PipelineOptions, list[pipeline.ImagePlan]]:
    options = pipeline.PipelineOptions(registry=f"{registry.host}/{namespace}", tag_plan=tags.plan(sha), build_args=bases,
                                       cache=cache.CacheOptions(backend=cache.Backend.GHA, gha_tokens=True))
    return options, pipeline.plan(config.load(repo), options, root=repo)


def run_pipeline(repo: pathlib.Path, work: pathlib.Path, registry: RunningRegistry, namespace: str, sha: str,
                 bases: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    options, plans = image_plans(repo, registry, namespace, sha, bases)
    started = time.monotonic()
    result = local.build_and_push(plans, options, repo, work, registry.username, registry.password)
    seconds = time.monotonic() - started
    if not result.ok:
        raise RuntimeError(f"pipeline failed: {[i.error for i in result.images]}")
    return {"seconds": seconds, "cached": sum(i.cached_steps for i in result.images), "total": sum(i.total_steps for i in result.images),
            "skipped": [i.name for i in result.images if i.avoidance and i.avoidance.skipped],
            "avoidance": {i.name: i.avoidance.detail if i.avoidance else None for i in result.images}}


def run_plain(repo: pathlib.Path, work: pathlib.Path, registry: RunningRegistry, namespace: str, sha: str,
              bases: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    _, plans = image_plans(repo, registry, namespace, sha, bases)
    with local.docker_config({registry.host: (registry.username, registry.password)}) as env:
        started = time.monotonic()
        procs = []
        for plan in plans:
            log = (work / f"plain-{plan.image.name}.json").open("w")
            procs.append((subprocess.Popen(plain_argv(plan, repo, work), stderr=log, stdout=subprocess.DEVNULL, env=env), log, plan))
        failed = [plan.image.name for proc, _, plan in procs if proc.wait() != 0]
        seconds = time.monotonic() - started
        for _, log, _ in procs:
            log.close()
    if failed:
        raise RuntimeError(f"plain buildx failed for {failed}")
    cached = total = 0
    for _, _, plan in procs:
        with (work / f"plain-{plan.image.name}.json").open() as stream:
            parsed = parse_stream(stream)
        cached, total = cached + parsed.cached_count, total + len(parsed.cacheable)
    return {"seconds": seconds, "cached": cached, "total": total, "skipped": []}


def one_side(side: str, tmp: pathlib.Path, registry: RunningRegistry, index: int, bases: tuple[tuple[str, str], ...],
             runs: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    repo = scratch_repo(tmp / f"{side}-{index}" / "repo")
    work = repo.parent / "work"
    work.mkdir()
    generator = start(repo.parent / "gha")
    gha = next(generator)
    try:
        for scenario, sha in SHAS.items():
            make_change(repo, scenario)
            with fresh_runner() as runner, runner_env(runner, gha):
                run = (run_pipeline if side == "pipeline" else run_plain)(repo, work, registry, f"{side}{index}", sha, bases)
            runs[scenario][side].append(run)
            print(f"  {side:<8} {scenario:<10} {run['seconds']:6.2f} s  {run['cached']}/{run['total']} cached"
                  f"{'  skipped: ' + ', '.join(run['skipped']) if run['skipped'] else ''}", flush=True)
    finally:
        generator.close()


def run(repeat: int, out: pathlib.Path) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"pipeline": [], "plain": []} for s in SHAS}
    with tempfile.TemporaryDirectory(prefix="dimbybot-avoid-bench-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        registry_gen = start_registry(tmp / "registry")
        registry = next(registry_gen)
        try:
            bases = push_bases(registry)
            for index in range(repeat):
                order = ("pipeline", "plain") if index % 2 == 0 else ("plain", "pipeline")
                print(f"repeat {index + 1}/{repeat}: {order[0]} first", flush=True)
                for side in order:
                    one_side(side, tmp, registry, index, bases, runs)
        finally:
            registry_gen.close()
    summary: dict[str, Any] = {"repeat": repeat, "date": datetime.date.today().isoformat(), "scenarios": {}}
    for scenario, sides in runs.items():
        summary["scenarios"][scenario] = {side: {**stats([r["seconds"] for r in rs]), "cached": rs[0]["cached"], "total": rs[0]["total"],
                                                 "skipped": sorted({name for r in rs for name in r["skipped"]}),
                                                 "all_seconds": [round(r["seconds"], 2) for r in rs]}
                                          for side, rs in sides.items()}
    s = summary["scenarios"]
    summary["targets"] = {
        "unchanged_share_of_cold": round(s["unchanged"]["pipeline"]["median"] / s["cold"]["pipeline"]["median"], 3),
        "plain_over_pipeline_unchanged": round(s["unchanged"]["plain"]["median"] / s["unchanged"]["pipeline"]["median"], 2),
        # cold has nothing recorded; a code change must rebuild the bot
        "wrong_skips": sum(len(r["skipped"]) for r in runs["cold"]["pipeline"])
        + sum("bot" in r["skipped"] for r in runs["code-change"]["pipeline"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return summary


def readme_table(summary: dict[str, Any]) -> str:
    lines = ["| scenario (both images, fresh runner) | pipeline, avoidance on: min / median / max | plain buildx: min / median / max "
             "| pipeline: skipped, cached / total |", "| --- | --- | --- | --- |"]
    for scenario, sides in summary["scenarios"].items():
        ours, plain = sides["pipeline"], sides["plain"]
        skipped = ", ".join(ours["skipped"]) or "none"
        lines.append(f"| {scenario} | {ours['min']:.2f} / **{ours['median']:.2f}** / {ours['max']:.2f} s "
                     f"| {plain['min']:.2f} / **{plain['median']:.2f}** / {plain['max']:.2f} s | {skipped}; {ours['cached']} / {ours['total']} |")
    targets = summary["targets"]
    lines += ["", f"Unchanged inputs with avoidance: **{targets['unchanged_share_of_cold']:.1%} of cold** (target <= 5%), "
              f"**{targets['plain_over_pipeline_unchanged']:.1f}x faster than plain buildx** (target >= 3x); "
              f"wrong skips: {targets['wrong_skips']}. {summary['repeat']} repeats, {summary['date']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "avoidance_bench.json")
    parser.add_argument("--table-from", type=pathlib.Path, default=None, help="print the README table from a results JSON and exit")
    args = parser.parse_args()
    if args.table_from is not None:
        print(readme_table(json.loads(args.table_from.read_text())))
        return
    if args.repeat < 1:
        parser.error("--repeat: must be at least 1")
    summary = run(args.repeat, args.out)
    print(readme_table(summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
