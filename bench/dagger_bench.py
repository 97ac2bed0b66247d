"""Benchmark: the Dagger path beside the local driver and plain buildx, in one run.

Three columns, the same four scenarios, both images built and pushed (SHA tag and `latest`),
every scenario on a fresh runner, one cache backend for all three: the GitHub Actions cache
(`type=gha`, v2) through the project's stand-in over Azurite (tests/gha_standin), a new cache
service for each column of each repetition so no column finds another's blobs:

  dagger  `build-and-push --cache=gha --no-skip` of the module (ci/main.py, class Dimbybot2) on a
          real Dagger engine (tests/dagger_engine.py), driven through the SDK as a client the way
          tests/test_engine_gha.py does. Every scenario gets a NEW engine on a NEW state volume
          (a fresh runner's `dagger call`: only the gha cache carries over). BuildKit is the one
          the pipeline starts (pinned image, state on a tmpfs), the base images come through the
          mirror given as `buildkit_config` (a user's pull-through cache), the registry is
          Debian's docker-registry over TLS on the engine network's gateway (the engine trusts
          its throwaway CA). Timed: the SDK session plus the call, i.e. what `dagger call` does
          once the engine answers; the engine's own start is the row below.
          --no-skip: build avoidance would skip `unchanged` outright (the engine resolves the base
          images' digests through the mirror); the local driver, on local base images, cannot
          compute that key and always builds, so --no-skip keeps the columns on the same work.
  local   the local driver (ci/local.py, `docker buildx`) on a fresh private dockerd:
          bench/gha_bench.py's pipeline side, unchanged.
  plain   plain `docker buildx build` with the flags docker/build-push-action passes for
          type=gha (bench/gha_bench.py's plain side).

Scenarios, in this order on each column's own scratch copy of the repository (bench/gha_bench.py):
  cold          nothing to import (a new cache service): built, cache exported
  unchanged     same inputs
  code-change   bot/dimbybot/__init__.py edited
  lock-change   a comment appended to bot/requirements.lock (still installs: same hashed pins)

Rows of their own, Dagger only:
  engine-start    from `docker run` of a new engine on a new volume until `dagger core version`
                  answers (polled every 0.25 s; the mirror container beside it starts meanwhile);
                  one per scenario run
  buildkit-start  the in-pipeline buildkitd's start: on the scenario's engine after its build (the
                  image already there), a new session runs `buildctl debug workers` with the
                  service bound (main.buildkit_service, the build's configuration) minus the same
                  exec in the same image without it (after one untimed exec that warms the
                  session; a fresh call id each: no exec is answered from the cache)

Why gha and not a registry cache: the gha path runs end to end on both paths in the tests
(tests/test_engine_gha.py, bench/gha_bench.py) over plain HTTP, reachable from the engine's
containers (on the gateway) and the host's BuildKit (127.0.0.1); a registry cache on the engine
path needs the TLS registry, which a private dockerd on the host does not trust.

Columns are interleaved: each repetition runs the three in a rotated order. min / median / max
per cell (--repeat N, default 3). Writes JSON (--json, default .work/bench/dagger_bench.json)
after every repetition, prints a table; `--markdown [JSON]` prints the README table from a JSON.
Engines, volumes, networks, registries, stand-ins, private dockerds and temporary directories
are removed afterwards, and the host daemon's image tags are checked against the ones before.

Usage: python bench/dagger_bench.py [--repeat N] [--json PATH]
       python bench/dagger_bench.py --markdown [PATH]
(needs what tests/test_engine_gha.py and bench/gha_bench.py need: Docker, the engine built by
tests/engine/build-dagger.sh, the mirror, the local base images, Azurite from tests/tools.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from typing import Any, TypeVar, cast

import anyio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gha_bench import SCENARIOS, Side, make_change, one_side, scope_bytes, scratch_repo, stats  # noqa: E402
from tests import dagger_engine, pinned_buildkit  # noqa: E402
from tests.gha_standin.service import GhaStandIn, start  # noqa: E402
from tests.registry_fixture import RunningRegistry, ThrowawayCA, start_registry  # noqa: E402
from tests.test_engine_gha import build_and_push  # noqa: E402

DEFAULT_JSON = ROOT / ".work" / "bench" / "dagger_bench.json"
COLUMNS = {"dagger": "Dagger engine (fresh engine per run)", "local": "local driver", "plain": "plain buildx"}
LOCAL_SIDES = {"local": "pipeline", "plain": "plain"}  # bench/gha_bench.py's side names
PROBE_INTERVAL = 0.25
T = TypeVar("T")


@contextlib.contextmanager
def serving(fixture: Iterator[T]) -> Iterator[T]:
    """A fixture generator of tests/ (registry, gha stand-in) as a context manager: closed, it stops."""
    generator = cast(Generator[T, None, None], fixture)
    try:
        yield next(generator)
    finally:
        generator.close()


@dataclasses.dataclass(frozen=True)
class EngineSetup:
    """What every engine of the run shares: binaries and image, one network (the registry and the
    gha stand-ins listen on its gateway), the CA the registry's certificate comes from."""

    built: tuple[pathlib.Path, str]
    network: tuple[str, str]
    ca: ThrowawayCA
    registry: RunningRegistry


@dataclasses.dataclass
class Cleanup:
    """What the run created by name on the host daemon, checked at the end."""

    engines: list[str] = dataclasses.field(default_factory=list)
    volumes: list[str] = dataclasses.field(default_factory=list)
    networks: list[str] = dataclasses.field(default_factory=list)
    registry_hosts: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def new_engine(setup: EngineSetup, cleanup: Cleanup) -> Iterator[tuple[dagger_engine.Engine, float]]:
    """A new engine on a new state volume, and how long it took to answer `dagger core version`."""
    started = time.monotonic()
    with dagger_engine.running(*setup.built, pinned_buildkit.MIRROR_STORAGE, extra_ca=setup.ca.cert,
                               on_network=setup.network[0], probe_interval=PROBE_INTERVAL) as engine:
        ready = time.monotonic() - started
        cleanup.engines.append(engine.name)
        cleanup.volumes.append(engine.volume)
        yield engine, ready


async def dagger_build(engine: dagger_engine.Engine, repo: pathlib.Path, registry: RunningRegistry, namespace: str,
                       gha: GhaStandIn) -> dict[str, Any]:
    import dagger

    started = time.monotonic()
    result = await build_and_push(engine, gha.runner_env(), root=repo, registry=f"{registry.host}/{namespace}",
                                  username=registry.username, no_skip=True,
                                  password=dagger.dag.set_secret("registry-password", registry.password))
    seconds = time.monotonic() - started
    if not result.ok:
        raise RuntimeError(f"build-and-push failed: {[(i.name, i.error) for i in result.images]}")
    return {"seconds": seconds, "cached": sum(i.cached_steps for i in result.images), "total": sum(i.total_steps for i in result.images),
            "images": {i.name: {"cached": i.cached_steps, "total": i.total_steps, "seconds": i.duration, "cache_import": i.cache_import,
                                "cache_export": i.cache_export, "avoidance": i.avoidance} for i in result.images}}


async def buildkit_start(engine: dagger_engine.Engine) -> dict[str, float]:
    """The in-pipeline buildkitd's start, as the difference of two execs in its image (see the
    module's docstring); on an engine that already has the image."""
    import dagger

    from ci import main, pins

    async with dagger_engine.connected(engine, ROOT):
        config = dagger.dag.directory().with_new_file("buildkitd.toml", engine.buildkitd_toml()).file("buildkitd.toml")
        client = (dagger.dag.container().from_(pins.BUILDKIT_IMAGE)
                  .with_env_variable("BUILDKIT_HOST", f"tcp://{main.BUILDKIT_ALIAS}:{main.BUILDKIT_PORT}"))
        await client.with_(main.once_per_call(main.new_call_id())).with_exec(["buildctl", "--version"]).sync()  # the session's warm-up
        started = time.monotonic()
        await client.with_(main.once_per_call(main.new_call_id())).with_exec(["buildctl", "--version"]).sync()
        exec_only = time.monotonic() - started
        service = main.buildkit_service(state_key=None, config=config)
        started = time.monotonic()
        await (client.with_service_binding(main.BUILDKIT_ALIAS, service).with_(main.once_per_call(main.new_call_id()))
               .with_exec(["buildctl", "debug", "workers"]).sync())
        with_service = time.monotonic() - started
    return {"seconds": with_service - exec_only, "exec_with_service": with_service, "exec_alone": exec_only}


def cli_floor(engine: dagger_engine.Engine) -> float:
    """One more `dagger core version` on the engine that answers: the CLI's own share of engine-start."""
    started = time.monotonic()
    engine.cli("core", "version", timeout=60).check_returncode()
    return time.monotonic() - started


def dagger_side(side: Side, startup: dict[str, list[float]], tmp: pathlib.Path, setup: EngineSetup, index: int,
                cleanup: Cleanup) -> None:
    repo = scratch_repo(tmp / f"dagger-{index}" / "repo")
    with serving(start(repo.parent / "gha", host=setup.network[1])) as gha:
        for scenario in SCENARIOS:
            make_change(repo, scenario)
            for attempt in (1, 2):  # a failed run is retried once (on a new engine) and reported
                try:
                    with new_engine(setup, cleanup) as (engine, ready):
                        floor = cli_floor(engine)
                        run = anyio.run(dagger_build, engine, repo, setup.registry, f"dagger{index}", gha)
                        service = anyio.run(buildkit_start, engine)
                    break
                except Exception as error:  # any failure: engine, session, build
                    side.failures.append(f"{scenario} attempt {attempt}: {str(error)[-600:]}")
                    print(f"  dagger   {scenario:<12} attempt {attempt} failed: {str(error)[-300:]}", flush=True)
                    if attempt == 2:
                        raise
            run.update(engine_start=ready, cli_floor=floor, buildkit_start=service)
            side.runs[scenario].append(run)
            if scenario == "unchanged":
                side.cache_bytes.append(sum(scope_bytes(gha).values()))
            startup["engine-start"].append(ready)
            startup["cli-floor"].append(floor)
            startup["buildkit-start"].append(service["seconds"])
            startup["buildkit-exec-alone"].append(service["exec_alone"])
            print(f"  dagger   {scenario:<12} {run['seconds']:6.2f} s  {run['cached']}/{run['total']} cached  "
                  f"(engine start {ready:.2f} s, buildkitd start {service['seconds']:.2f} s)", flush=True)


def summarize(sides: dict[str, Side], startup: dict[str, list[float]], repeat: int, done: int, wall: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "repeat": repeat, "repetitions_done": done, "date": datetime.date.today().isoformat(), "wall_seconds": round(wall, 1),
        "cache_backend": "gha (v2) through tests/gha_standin over Azurite; a new cache service per column and repetition",
        "columns": COLUMNS, "dagger_flags": "build-and-push --cache=gha --no-skip, buildkit_config = the mirror",
        "startup": {name: {**stats(values), "all_seconds": [round(v, 2) for v in values]} for name, values in startup.items() if values},
        "scenarios": {}, "failures": {name: side.failures for name, side in sides.items()},
        "cache_bytes_after_unchanged": {name: side.cache_bytes for name, side in sides.items()},
    }
    for scenario in SCENARIOS:
        row: dict[str, Any] = {}
        for name, side in sides.items():
            runs = side.runs[scenario]
            if runs:
                row[name] = {**stats([r["seconds"] for r in runs]), "cached": runs[0]["cached"], "total": runs[0]["total"],
                             "all_seconds": [round(r["seconds"], 2) for r in runs]}
        if "dagger" in row:
            runs = sides["dagger"].runs[scenario]
            row["dagger"]["cache_export"] = sorted({i["cache_export"] for r in runs for i in r["images"].values()})
            row["dagger"]["cache_import"] = sorted({i["cache_import"] for r in runs for i in r["images"].values()})
            row["dagger"]["with_engine_start"] = stats([r["seconds"] + r["engine_start"] for r in runs])
        summary["scenarios"][scenario] = row
    ratios: dict[str, Any] = {}
    for scenario, row in summary["scenarios"].items():
        if {"dagger", "local", "plain"} <= row.keys():
            ratios[scenario] = {"dagger_minus_local": round(row["dagger"]["median"] - row["local"]["median"], 2),
                                "dagger_over_local": round(row["dagger"]["median"] / row["local"]["median"], 2),
                                "local_over_plain": round(row["local"]["median"] / row["plain"]["median"], 3)}
    summary["ratios"] = ratios
    cells = summary["scenarios"]
    if "dagger" in cells["cold"] and "dagger" in cells["unchanged"]:
        summary["dagger_unchanged_share_of_cold"] = round(cells["unchanged"]["dagger"]["median"] / cells["cold"]["dagger"]["median"], 3)
    return summary


def host_tags() -> set[str]:
    out = subprocess.run([dagger_engine.DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def left_behind(cleanup: Cleanup, tags_before: set[str]) -> list[str]:
    """What of this run is still on the host daemon: its engines, volumes, networks, and image tags
    naming its registries (removed here); other new tags are only reported (another user's)."""
    left: list[str] = []
    for kind, names in (("container", cleanup.engines + [f"{e}-mirror" for e in cleanup.engines]),
                        ("volume", cleanup.volumes), ("network", cleanup.networks)):
        for name in names:
            if subprocess.run([dagger_engine.DOCKER, kind, "inspect", name], capture_output=True).returncode == 0:
                left.append(f"{kind} {name}")
    for tag in sorted(host_tags() - tags_before):
        if any(tag.startswith(host + "/") for host in cleanup.registry_hosts):
            subprocess.run([dagger_engine.DOCKER, "rmi", tag], capture_output=True)
            left.append(f"image tag {tag} (removed)")
        else:
            left.append(f"image tag {tag} (new, not this run's: kept)")
    return left


def run(repeat: int, out: pathlib.Path) -> dict[str, Any]:
    began = time.monotonic()
    tags_before = host_tags()
    cleanup = Cleanup()
    sides = {name: Side(name) for name in COLUMNS}
    startup: dict[str, list[float]] = {"engine-start": [], "cli-floor": [], "buildkit-start": [], "buildkit-exec-alone": []}
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    built = dagger_engine.build()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dimbybot-dagger-bench-") as tmp_name, dagger_engine.network() as network:
        tmp = pathlib.Path(tmp_name)
        cleanup.networks.append(network[0])
        (tmp / "ca").mkdir()
        ca = ThrowawayCA.make(tmp / "ca")
        gateway = network[1]
        with serving(start_registry(tmp / "registry-dagger", address=gateway, certificate=ca.issue(gateway), ca=ca.cert)) as dagger_registry, \
                serving(start_registry(tmp / "registry-local")) as local_registry:
            cleanup.registry_hosts += [dagger_registry.host, local_registry.host]
            setup = EngineSetup(built=built, network=network, ca=ca, registry=dagger_registry)
            names = list(COLUMNS)
            for index in range(repeat):
                order = names[index % 3:] + names[:index % 3]
                print(f"repeat {index + 1}/{repeat}: {', '.join(order)}", flush=True)
                for name in order:
                    if name == "dagger":
                        dagger_side(sides[name], startup, tmp, setup, index, cleanup)
                    else:
                        local_side = Side(LOCAL_SIDES[name], failures=sides[name].failures)
                        one_side(local_side, tmp, local_registry, index)
                        for scenario in SCENARIOS:
                            sides[name].runs[scenario] += local_side.runs[scenario]
                        sides[name].cache_bytes += local_side.cache_bytes
                summary = summarize(sides, startup, repeat, index + 1, time.monotonic() - began)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(summary, indent=2))
    summary = summarize(sides, startup, repeat, repeat, time.monotonic() - began)
    summary["left_behind"] = left_behind(cleanup, tags_before)
    out.write_text(json.dumps(summary, indent=2))
    return summary


def _cell(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat:
        return "—"
    return f"{stat['min']:.{digits}f} / **{stat['median']:.{digits}f}** / {stat['max']:.{digits}f} s"


def readme_table(summary: dict[str, Any]) -> str:
    """The README table, from the JSON this script writes."""
    head = " | ".join(f"{label} min / median / max" for label in COLUMNS.values())
    lines = [f"| scenario (both images, fresh runner) | {head} | cached / total (dagger, local, plain) |",
             "| --- | --- | --- | --- | --- |"]
    starts = summary["startup"]
    lines.append(f"| engine start (new engine + state volume, until `dagger core version` answers) | {_cell(starts.get('engine-start'), 2)} "
                 f"| — | — | — |")
    lines.append(f"| BuildKit service start (in-pipeline buildkitd, image present) | {_cell(starts.get('buildkit-start'), 2)} | — | — | — |")
    for scenario, row in summary["scenarios"].items():
        steps = ", ".join(f"{row[c]['cached']}/{row[c]['total']}" if c in row else "—" for c in COLUMNS)
        lines.append(f"| {scenario} | {' | '.join(_cell(row.get(c)) for c in COLUMNS)} | {steps} |")
    ratios = summary.get("ratios", {})
    parts = [f"{s} {r['dagger_minus_local']:+.1f} s ({r['dagger_over_local']:.1f}x)" for s, r in ratios.items()]
    totals = [f"{s} {row['dagger']['with_engine_start']['median']:.1f} s" for s, row in summary["scenarios"].items() if "dagger" in row]
    share = summary.get("dagger_unchanged_share_of_cold")
    lines += ["", "Dagger over the local driver, medians: " + "; ".join(parts) + ". "
              "With its engine start, a Dagger run on a fresh runner takes (median) " + ", ".join(totals) + ". "
              + (f"Dagger unchanged: {share:.0%} of its cold. " if share is not None else "")
              + f"Cache: {summary['cache_backend'].split(';')[0]}. `{summary['dagger_flags']}`. "
              f"{summary['repetitions_done']} repeats, {summary['date']}."]
    return "\n".join(lines)


def text_table(summary: dict[str, Any]) -> str:
    """The same numbers as plain text, for the terminal."""
    width = 24
    lines = [f"{'row':<16}" + "".join(f"{c + ' min/med/max s':>{width}}" for c in COLUMNS) + f"{'cached/total':>18}"]

    def cell(stat: dict[str, Any] | None) -> str:
        return f"{stat['min']:.1f}/{stat['median']:.1f}/{stat['max']:.1f}" if stat else "-"

    for name in ("engine-start", "cli-floor", "buildkit-start", "buildkit-exec-alone"):
        lines.append(f"{name:<16}{cell(summary['startup'].get(name)):>{width}}{'-':>{width}}{'-':>{width}}")
    for scenario, row in summary["scenarios"].items():
        steps = ",".join(f"{row[c]['cached']}/{row[c]['total']}" if c in row else "-" for c in COLUMNS)
        lines.append(f"{scenario:<16}" + "".join(f"{cell(row.get(c)):>{width}}" for c in COLUMNS) + f"{steps:>18}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (each runs every column's four scenarios)")
    parser.add_argument("--json", type=pathlib.Path, default=DEFAULT_JSON, help=f"results JSON (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--markdown", type=pathlib.Path, nargs="?", const=DEFAULT_JSON, default=None, metavar="JSON",
                        help="print the README table from a results JSON (default: --json's default) and exit")
    args = parser.parse_args()
    if args.markdown is not None:
        print(readme_table(json.loads(args.markdown.read_text())))
        return
    if args.repeat < 1:
        parser.error("--repeat: must be at least 1")
    summary = run(args.repeat, args.json)
    print(text_table(summary))
    print()
    print(readme_table(summary))
    print(f"left behind: {', '.join(summary['left_behind']) or 'nothing'}")
    print(f"wrote {args.json} ({summary['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
