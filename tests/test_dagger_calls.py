"""Whole function calls of the Dagger module against the engine's rules, with the engine stood
in for by tests/engine_double.py: only what a real engine cannot be made to show.

The real engine (tests/test_engine_pipeline.py, tests/test_engine_client.py) now shows that a
call's effectful steps run again on every call (the same call twice puts deleted tags back),
that the push and the tag moves agree on plain HTTP (the embedded registry) and TLS (an
outside one), and that every buildctl run names exporters buildkitd has (each function's
builds run there); those double tests were deleted. Kept here: the order of queries (the
call id after the cached setup steps, the registry stopped after the last tag move), and
failures an engine does not produce on demand (a step the engine fails, an unreachable
BuildKit, a warm-up build failing, images that differ, a lost cache blob mid-build). Each
test runs a real call with the double recording every query the module sends and answering
as the engine would. The rules tested are the engine's
own, read in dagger/dagger and moby/buildkit (README, "What was verified on an engine and what
only offline"):
- `cache="never"` only skips the function-result cache: an exec with inputs the engine has
  seen is replayed from its cache, so every step with an effect outside the engine must carry
  a value unique to the call;
- an idle service is stopped ~10 s after its last user: the embedded registry is started
  for the whole call and stopped at the end;
- only the container a service is bound to resolves its alias: an external BuildKit cannot
  push to `registry:5000`;
- a push with `registry.insecure=true` speaks plain HTTP: the tag mover must too.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import dagger
import pytest
from dagger import dag

from ci import main
from ci.errors import InputError, PipelineError
from tests.engine_double import DIGEST, PROGRESS, EngineDouble, Exec, Script, engine_error, failed_build, install, picture

SHA = "0123456789abcdef0123456789abcdef01234567"
Engine = Callable[[Script], EngineDouble]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    return install(monkeypatch)


def module() -> main.Dimbybot2:
    return main.Dimbybot2(source=dag.directory())  # type: ignore[call-arg]


async def push_to_ghcr(**extra: object) -> main.BuildAndPushResult:
    return await module().build_and_push(registry="ghcr.io/me", username="me", password=dag.set_secret("pw", "hunter2"),
                                         sha=SHA, **extra)


# --- cache="never" is not enough: effectful steps carry a per-call value --------------------

async def test_deploy_and_verify_determinism_run_again_on_every_call(engine: Engine) -> None:
    identical = Exec(stdout=json.dumps({"identical": True, "digest_a": DIGEST, "digest_b": DIGEST, "differences": []}))
    seen: dict[str, list[str]] = {"deploy": [], "verify": [], "build": []}
    for _ in range(2):
        deployed = Exec(stdout="deployed", files={"/out/exit-code": "0\n", "/out/summary.md": "", "/out/report.json": "{}"})
        double = engine(Script(steps={"deploy": deployed, "verify": identical}))
        await module().deploy(host="h.example", user="u", ssh_key=dag.set_secret("k", "KEY"), known_hosts=dag.set_secret("n", "h k"),
                              tag=SHA, registry="ghcr.io/me", remote_dir="/srv/bot")
        await module().verify_determinism(image="bot")
        for kind in seen:
            seen[kind] += sorted({q.env().get(main.CALL_ID_ENV, "<none>") for q in double.execs(kind)})
    for kind, ids in seen.items():
        assert "<none>" not in ids and len(set(ids)) == len(ids) == 2, (kind, ids)


async def test_pure_steps_stay_cacheable_only_the_call_id_differs(engine: Engine) -> None:
    runs = []
    for _ in range(2):
        double = engine(Script())
        await push_to_ghcr()
        await module().build(image="bot")
        runs.append(double)
    # `build` returns an image for a terminal: nothing outside the engine, no call id.
    for double in runs:
        (pure,) = [q for q in double.execs("build") if main.CALL_ID_ENV not in q.env()]
        assert "type=oci,dest=/out/image.tar" in pure.argv
    first, second = ([picture(q.chain) for q in d.execs("build")] for d in runs)
    assert first[-1] == second[-1]  # the pure build: byte-for-byte the same query, so the engine may cache it

    def without_call_id(chain: list[tuple[str, object]]) -> list[tuple[str, object]]:
        return [(n, a) for n, a in chain if not (n == "withEnvVariable" and a["name"] == main.CALL_ID_ENV)]  # type: ignore[index]
    assert [without_call_id(c) for c in first[:-1]] == [without_call_id(c) for c in second[:-1]]


def test_setup_steps_come_before_the_call_id_so_they_stay_cached() -> None:
    ctr = main.deploy_container(dag.directory(), dag.file("compose.yaml", ""), dag.set_secret("k", "K"), dag.set_secret("h", "H"),
                                None, ["h", "u", "22", SHA, "ghcr.io/me", "/srv"], 180, "call-1")
    names = [(f.name, f.args) for f in ctr._ctx.selections]
    apt = next(i for i, (n, a) in enumerate(names) if n == "withExec" and "apt-get" in " ".join(a["args"]))
    call = names.index(("withEnvVariable", {"name": main.CALL_ID_ENV, "value": "call-1"}))
    assert apt < call < len(names) - 1 and names[-1][0] == "withExec"


# --- the embedded registry lives for the whole call ---------------------------------------

async def test_the_embedded_registry_is_started_before_any_build_and_stopped_after_every_tag_move(engine: Engine) -> None:
    double = engine(Script())
    result = await module().build_and_push(sha=SHA)
    assert result.ok
    events = double.events()
    assert events[0] == "start" and events[-1] == "stop" and events.count("start") == events.count("stop") == 1
    assert events.count("exec:build") == 2 and events.count("exec:retag") == 2
    started = next(q for q in double.queries if q.leaf == "start")
    assert ("from", {"address": main.pins.REGISTRY_IMAGE}) in picture(started.chain)
    # buildkitd (which pushes) and the tag mover reach the started instance, by its id.
    build, retag = double.execs("build")[0], double.execs("retag")[0]
    assert "node" in json.dumps(picture(build.chain)) and "service-start" in json.dumps(picture(build.chain))
    bindings = [f for f in retag.chain if f.name == "withServiceBinding"]
    assert [b.args["alias"] for b in bindings] == ["registry"]
    assert picture([bindings[0]])[0][1]["service"][0][0] == "node"


async def test_the_embedded_registry_is_stopped_even_when_the_engine_fails_a_step(engine: Engine) -> None:
    double = engine(Script(raises={"retag": engine_error("retag container: failed to start")}))
    result = await module().build_and_push(sha=SHA)
    assert double.events()[-1] == "stop"
    assert not result.ok and all("failed to start" in image.error for image in result.images)


# --- one plain-HTTP decision for push and tag moves ---------------------------------------

async def test_the_tag_move_first_confirms_the_sha_tag_resolves_to_the_built_digest(engine: Engine) -> None:
    double = engine(Script())
    await push_to_ghcr(tag=["stable"])
    retag = next(q for q in double.execs("retag") if "me/dimbybot2-bot" in q.argv)
    assert retag.argv[4:] == ["ghcr.io", "me/dimbybot2-bot", SHA, DIGEST, "stable", "latest"]
    double = engine(Script())
    await push_to_ghcr(latest=False)  # nothing to move: the SHA tag is still confirmed
    assert [q.argv[-2:] for q in double.execs("retag")] == [[SHA, DIGEST]] * 2


# --- failures are per image, with the words that explain them -----------------------------

async def test_a_buildkit_that_cannot_be_reached_fails_that_image_only_with_the_stderr_tail(engine: Engine) -> None:
    dial = 'error: failed to dial "tcp://buildkitd:1234": connection refused\n'
    engine(Script(builds={"dimbybot2-bot:": failed_build(dial)}))
    result = await push_to_ghcr()
    bot, lavalink = result.images
    assert bot.error == f'build of bot failed: {dial.strip()}'
    assert lavalink.error == "" and lavalink.digest == DIGEST and len(lavalink.refs) == 2
    assert not result.ok and json.loads(result.report())["images"][0]["error"] == bot.error


async def test_errors_name_the_failing_step_not_an_exit_code_or_a_python_list(engine: Engine) -> None:
    moved = "moving tags failed: registry ghcr.io: PUT /me/dimbybot2-bot/manifests/latest answered HTTP 403: denied"
    engine(Script(builds={"dimbybot2-lavalink:": failed_build((PROGRESS / "failed.rawjson").read_text())},
                  steps={"retag": Exec(code=1, stderr="some earlier line\n" + moved + "\n")}))
    bot, lavalink = (await push_to_ghcr()).images
    assert bot.error == moved
    assert lavalink.error.startswith("build of lavalink failed: [stage-1 3/3] RUN test")
    assert "exit code 1" not in bot.error and "['" not in bot.error


# --- inputs refused before anything runs ---------------------------------------------------

async def test_an_external_buildkit_with_the_embedded_registry_is_refused_before_anything_runs(engine: Engine) -> None:
    double = engine(Script())
    external = dag.host().service([dagger.PortForward(backend=1234, frontend=1234)])
    with pytest.raises(InputError) as refused:
        await module().build_and_push(sha=SHA, buildkit=external)
    assert refused.value.argument == "--buildkit" and "--registry" in refused.value.problem
    assert double.events() == []


async def test_an_external_buildkit_is_bound_as_a_service_and_dialled_on_its_port(engine: Engine) -> None:
    double = engine(Script())
    await push_to_ghcr(buildkit=dag.host().service([dagger.PortForward(backend=1234, frontend=1234)]))
    for build in double.execs("build"):
        assert build.env()["BUILDKIT_HOST"] == "tcp://buildkitd:1234"
        (binding,) = [f for f in build.chain if f.name == "withServiceBinding"]
        assert picture([binding])[0][1]["service"][-1][0] == "service"  # the host's, not one started here
    assert "start" not in double.events()


async def test_anonymous_access_is_checked_before_building_too(engine: Engine) -> None:
    refused = "--password: registry ghcr.io refused anonymous access (HTTP 401)"
    double = engine(Script(steps={"check": Exec(code=1, stderr=refused)}))
    with pytest.raises(InputError) as error:
        await module().build_and_push(registry="ghcr.io/me", sha=SHA)
    assert error.value.argument == "--registry" and "anonymous access" in error.value.problem
    assert double.events() == ["exec:check"]


# --- verify-determinism says what it checked and fails when images differ -----------------

async def test_verify_determinism_fails_when_the_warm_build_fails(engine: Engine) -> None:
    engine(Script(steps={"build": failed_build("error: failed to dial\n")}))
    with pytest.raises(PipelineError, match="warm-up build of bot failed: error: failed to dial"):
        await module().verify_determinism(image="bot")


async def test_verify_determinism_reports_cache_hits_and_fails_when_images_differ(engine: Engine) -> None:
    same = {"identical": True, "digest_a": DIGEST, "digest_b": DIGEST, "differences": []}
    engine(Script(steps={"verify": Exec(stdout=json.dumps(same))}))
    assert json.loads(await module().verify_determinism(image="bot"))["cached_build_hits"] == "5/5"
    differ = {**same, "identical": False, "differences": [{"layer": 1, "path": "built-at", "kind": "content", "detail": ""}]}
    engine(Script(steps={"verify": Exec(code=1, stdout=json.dumps(differ))}))
    with pytest.raises(PipelineError, match="differ.*built-at"):
        await module().verify_determinism(image="bot")


# --- a failed exec is cached too: a pure build is re-run once before its failure is believed --

async def test_a_pure_build_that_succeeds_carries_no_call_id_and_runs_once(engine: Engine) -> None:
    double = engine(Script())
    await module().build(image="bot")
    (build,) = double.execs("build")
    assert main.CALL_ID_ENV not in build.env()  # an unchanged build is answered from the engine's cache


async def test_a_failed_pure_build_is_run_again_with_a_call_id_before_the_failure_is_reported(engine: Engine) -> None:
    # The engine caches an exec that exited non-zero under expect=ANY like any other: without the
    # second, unique run, a passing outage would be replayed on every later call.
    double = engine(Script(steps={"build": failed_build('error: failed to dial "tcp://buildkitd:1234"\n')}))
    with pytest.raises(PipelineError, match="build of bot failed: error: failed to dial"):
        await module().build(image="bot")
    first, second = double.execs("build")
    assert main.CALL_ID_ENV not in first.env()
    assert second.env()[main.CALL_ID_ENV] and first.argv == second.argv


async def test_a_build_failed_by_a_lost_cache_blob_is_rebuilt_cold_and_says_why(engine: Engine) -> None:
    # BuildKit's progress when a blob the gha index lists is gone (shape as in real runs, see
    # tests/test_gha_cache.py); the retry has no cache flags, so the double answers it as built.
    lost = ("https://blob.example/cache/sha256:" + "c" * 64 + "?sig=SECRET: BlobNotFound: "
            "The specified blob does not exist.")
    vertex = {"digest": "sha256:" + "d" * 64, "name": "[deps 3/4] COPY bot/requirements.lock /tmp/", "started": "2026-11-24T10:00:00Z",
              "completed": "2026-11-24T10:00:01Z", "error": lost}
    progress = json.dumps({"vertexes": [vertex]}) + "\n"
    double = engine(Script(builds={"type=gha": failed_build(progress)}))
    result = await push_to_ghcr(cache_backend="gha", gha_token=dag.set_secret("t", "jwt"),
                                gha_results_url=dag.set_secret("u", "http://results"))
    assert result.ok, [i.error for i in result.images]
    bot = result.images[0]
    assert any("rebuilt without external cache" in w and "blob sha256:" + "c" * 64 in w for w in bot.warnings), bot.warnings
    assert "SECRET" not in result.report()
    cold = [q for q in double.execs("build") if not any("type=gha" in a for a in q.argv)]
    assert len(cold) == 2  # one cold rebuild per image
