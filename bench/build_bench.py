"""Benchmark: what the cache buys on an ephemeral runner, measured with the local driver.

Scenarios, side by side in one run, on a scratch copy of the repository:
  cold          builder cache wiped, fresh cache scope (nothing to import); exports the cache
  unchanged     builder cache wiped (a fresh runner), registry cache imported, same inputs
  code-change   the same after a bot source change
  lock-change   the same after a bot/requirements.lock change
  plain-buildx  `docker buildx build` by hand with the same flags as `unchanged`, pushing both
                tags itself (the anchor for the pipeline's own overhead)

Warm scenarios are repeated (--repeat, median reported); each repetition of a change scenario
makes a new change, since the previous repetition exported its result to the cache.

Every scenario builds and pushes both images to a local registry (Debian's docker-registry)
with the registry cache backend (the same exporter machinery as gha, which is unreachable here).
Prints a table and writes JSON (bench/results/build_bench.json).

Usage: python bench/build_bench.py [--backend gha|registry] [--repeat N]
(needs Docker, buildx, docker-registry, the local base images from tests/images/build-base-images.sh,
and for gha Azurite from `npm ci --prefix tests/tools`). The gha backend is bench/gha_bench.py:
it also runs plain `docker buildx build` with docker/build-push-action's flags, side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ci import cache, config, local, pipeline, render, tags  # noqa: E402
from ci.progress import parse_stream  # noqa: E402
from tests.conftest import LOCAL_BASES  # noqa: E402
from tests.registry_fixture import start_registry  # noqa: E402

SHA = "b" * 40


def wipe_builder_cache() -> None:
    subprocess.run([local.DOCKER, "buildx", "prune", "--all", "--force"], check=True, capture_output=True)


def scratch_repo(dest: pathlib.Path) -> pathlib.Path:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "bot", dest / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "Lavalink", dest / "Lavalink")
    return dest


def run_pipeline(repo: pathlib.Path, work: pathlib.Path, registry: str, user: str, password: str, bust: str) -> dict[str, object]:
    options = pipeline.PipelineOptions(
        registry=registry, tag_plan=tags.plan(SHA), build_args=LOCAL_BASES,
        cache=cache.CacheOptions(backend=cache.Backend.REGISTRY, cache_ref=f"{registry}/buildcache", bust=bust))
    plans = pipeline.plan(config.load(repo), options, root=repo)
    started = time.monotonic()
    result = local.build_and_push(plans, options, repo, work, user, password)
    seconds = time.monotonic() - started
    assert result.ok, [i.error for i in result.images]
    longest_build = max(i.duration for i in result.images)
    return {"seconds": seconds, "own_seconds": round(seconds - longest_build, 3),
            "cached": sum(i.cached_steps for i in result.images),
            "total": sum(i.total_steps for i in result.images),
            "images": {i.name: {"cached": i.cached_steps, "total": i.total_steps, "seconds": round(i.duration, 2)}
                       for i in result.images}}


def run_plain_buildx(repo: pathlib.Path, work: pathlib.Path, registry: str, user: str, password: str, bust: str) -> dict[str, object]:
    """The same two builds by hand, as a hand-written workflow would run them: concurrent, both
    tags pushed by the build itself, no credential check, no tag verification, no report."""
    options = pipeline.PipelineOptions(
        registry=registry, tag_plan=tags.plan(SHA), build_args=LOCAL_BASES,
        cache=cache.CacheOptions(backend=cache.Backend.REGISTRY, cache_ref=f"{registry}/buildcache", bust=bust))
    plans = pipeline.plan(config.load(repo), options, root=repo)
    with local.docker_config({registry.split("/")[0]: (user, password)}) as env:
        started = time.monotonic()
        procs = []
        for p in plans:
            both_tags = dataclasses.replace(p.request.output, names=p.refs)
            argv = render.buildx(dataclasses.replace(p.request, output=both_tags), root=str(repo))
            argv[0] = local.DOCKER
            log = (work / f"plain-{p.image.name}.json").open("w")
            procs.append((subprocess.Popen(argv, stderr=log, stdout=subprocess.DEVNULL, env=env), log, p))
        for proc, log, _ in procs:
            assert proc.wait() == 0
            log.close()
        seconds = time.monotonic() - started
    cached = total = 0
    for _, _, p in procs:
        with (work / f"plain-{p.image.name}.json").open() as stream:
            parsed = parse_stream(stream)
        cached, total = cached + parsed.cached_count, total + len(parsed.cacheable)
    return {"seconds": seconds, "cached": cached, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("gha", "registry"), default="gha",
                        help="gha: the GitHub Actions cache stand-in over Azurite (default); registry: a local registry")
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario (gha default 5, registry 1)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--table-from", type=pathlib.Path, default=None, help="print the README table from a gha results JSON and exit")
    args = parser.parse_args()
    if args.table_from is not None:
        from bench.gha_bench import readme_table

        print(readme_table(json.loads(args.table_from.read_text())))
        return
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat: must be at least 1")
    if args.backend == "gha":
        from bench.gha_bench import run

        run(args.repeat or 5, args.out or ROOT / "bench" / "results" / "build_bench_gha.json")
        return
    args.repeat = args.repeat or 1
    args.out = args.out or ROOT / "bench" / "results" / "build_bench.json"
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="dimbybot-bench-") as tmp:
        tmpdir = pathlib.Path(tmp)
        (tmpdir / "repo").mkdir()
        repo = scratch_repo(tmpdir / "repo")
        work = tmpdir / "work"
        work.mkdir()
        reg_gen = start_registry(tmpdir / "registry")
        reg = next(reg_gen)
        try:
            bust = uuid.uuid4().hex[:8]  # a fresh cache scope: the cold run has nothing to import
            registry = f"{reg.host}/bench"

            def warm(name: str, change: pathlib.Path | None = None) -> None:
                runs = []
                for _ in range(args.repeat):
                    if change is not None:  # a fresh change each time: the previous run exported its result
                        change.write_text(change.read_text() + f"\n# bench change {uuid.uuid4()}\n")
                    wipe_builder_cache()
                    runs.append(run_pipeline(repo, work, registry, reg.username, reg.password, bust))
                best = sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2]  # type: ignore[arg-type]
                best["all_seconds"] = [round(float(r["seconds"]), 2) for r in runs]  # type: ignore[arg-type]
                results[name] = best

            wipe_builder_cache()
            results["cold"] = run_pipeline(repo, work, registry, reg.username, reg.password, bust)
            # Interleaved, so drift of the machine hits both alike.
            ours, plain = [], []
            for _ in range(args.repeat):
                wipe_builder_cache()
                ours.append(run_pipeline(repo, work, registry, reg.username, reg.password, bust))
                wipe_builder_cache()
                plain.append(run_plain_buildx(repo, work, registry, reg.username, reg.password, bust))
            for name, runs in (("unchanged", ours), ("plain-buildx", plain)):
                middle = sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2]  # type: ignore[arg-type]
                middle["all_seconds"] = [round(float(r["seconds"]), 2) for r in runs]  # type: ignore[arg-type]
                results[name] = middle
            own = sorted(float(r["own_seconds"]) for r in ours)  # type: ignore[arg-type]
            warm("code-change", repo / "bot" / "dimbybot" / "__init__.py")
            warm("lock-change", repo / "bot" / "requirements.lock")
        finally:
            reg_gen.close()
    cold = float(results["cold"]["seconds"])  # type: ignore[arg-type]
    print(f"{'scenario':<14} {'wall s':>8} {'cached/total':>13} {'vs cold':>8}")
    for name, r in results.items():
        seconds = float(r["seconds"])  # type: ignore[arg-type]
        r["ratio_to_cold"] = round(seconds / cold, 3)
        print(f"{name:<14} {seconds:>8.2f} {str(r['cached']) + '/' + str(r['total']):>13} {seconds / cold:>8.0%}")
    unchanged, plain_s = float(results["unchanged"]["seconds"]), float(results["plain-buildx"]["seconds"])  # type: ignore[arg-type]
    overhead = (unchanged - plain_s) / plain_s
    own_median = own[len(own) // 2]
    print(f"unchanged inputs: {1 - unchanged / cold:.0%} less time than cold (target >= 70%)")
    print(f"pipeline vs plain buildx, medians of {args.repeat} interleaved runs: {overhead:+.1%} (noise: see all_seconds)")
    print(f"pipeline's own time outside BuildKit (credential check, tag moves, parsing): median {own_median * 1000:.0f} ms "
          f"= {own_median / plain_s:.1%} of a plain build (target < 5%)")
    summary = {"scenarios": results, "saving_unchanged": round(1 - unchanged / cold, 3), "overhead_vs_buildx": round(overhead, 3),
               "own_seconds_median": own_median, "own_share_of_plain": round(own_median / plain_s, 4), "median_of": args.repeat}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
