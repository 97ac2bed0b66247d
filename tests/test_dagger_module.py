"""The Dagger layer, checked without an engine: registration, arguments, cache policy,
and the recorded selections of the lazy containers it builds."""

from __future__ import annotations

import json

from dagger.mod.cli import load_module

from tests.conftest import REPO


def main_object():  # type: ignore[no-untyped-def]
    return load_module().get_object("Dimbybot2")


def test_module_loads_through_its_entry_point_and_finds_the_main_object() -> None:
    obj = main_object()
    assert obj.cls.__name__ == "Dimbybot2"
    assert {"version", "images"} <= set(obj.functions)


def test_constructor_takes_the_repository_with_a_default_path_and_ignores() -> None:
    source = main_object().get_constructor().parameters["source"]
    assert source.default_path == "/"
    # .git stays (HEAD gives the default SHA; explain reads revisions) but its logs and hooks never upload.
    assert {".git/logs", ".venv", "sdk", ".work"} <= set(source.ignore or [])
    assert ".git/config" in (source.ignore or [])  # actions/checkout may keep a token there
    assert source.doc


def test_dagger_json_pins_the_engine_to_the_sdk_and_uploads_only_the_pipeline() -> None:
    import importlib.metadata

    module = json.loads((REPO / "dagger.json").read_text())
    assert module["name"] == "dimbybot2" and module["sdk"]["source"] == "python"
    assert module["engineVersion"] == "v" + importlib.metadata.version("dagger-io")
    excluded = {p[1:] for p in module["include"] if p.startswith("!")}
    assert {"bot", "tests", "Lavalink", ".git"} <= excluded
    assert "ci" not in excluded and "pyproject.toml" not in excluded


# --- the lazy containers (nothing is sent: selections are only recorded) -------------------

import dagger  # noqa: E402
from dagger import dag  # noqa: E402

from ci import cache, main, pins, tags  # noqa: E402
from ci.config import ProjectConfig  # noqa: E402
from ci.pipeline import PipelineOptions, plan  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"


def selections(obj: object) -> list[tuple[str, dict[str, object]]]:
    return [(f.name, dict(f.args)) for f in obj._ctx.selections]  # type: ignore[attr-defined]


def gha_request():  # type: ignore[no-untyped-def]
    options = PipelineOptions(registry="ghcr.io/me", tag_plan=tags.plan(SHA), images=("bot",),
                              cache=cache.CacheOptions(gha_tokens=True))
    return plan(ProjectConfig(), options)[0].request


def test_build_and_push_registers_its_arguments_docs_and_never_caches() -> None:
    fn = main_object().functions["build_and_push"]
    assert fn.cache_policy == "never"
    params = fn.parameters
    assert {"registry", "username", "password", "sha", "latest", "cache_backend", "cache_bust",
            "gha_token", "gha_results_url", "images", "buildkit"} <= set(params)
    assert params["cache_backend"].name == "cache"
    assert params["source_date_epoch"].signature.default == 0
    for secret in ("password", "gha_token", "gha_results_url"):
        assert params[secret].resolved_type == dagger.Secret | None
    # An external BuildKit is a service (`--buildkit=tcp://localhost:1234`): Dagger's way to reach the host.
    assert params["buildkit"].resolved_type == dagger.Service | None
    assert all(p.doc for p in params.values())
    build = main_object().functions["build"]
    assert build.return_type is dagger.Container


def test_buildkit_service_uses_the_pinned_image_state_volume_and_root_capabilities() -> None:
    sels = selections(main.buildkit_service())
    assert sels[1] == ("from", {"address": pins.BUILDKIT_IMAGE})
    (state,) = [args for name, args in sels if name == "withMountedCache"]
    assert state["path"] == "/var/lib/buildkit"
    # Cache volumes are shared by default; two buildkitd on one state collide on buildkitd.lock.
    assert state["sharing"] == "LOCKED"
    name, args = sels[-1]
    assert name == "asService" and args["insecureRootCapabilities"] is True
    assert args["args"] == ["buildkitd", "--addr", "tcp://0.0.0.0:1234"]
    major, minor = (int(x) for x in pins.BUILDKIT_IMAGE.split(":v")[1].split(".")[:2])
    assert (major, minor) >= (0, 26)


async def test_buildkit_keeps_state_on_the_engine_only_for_the_engine_cache() -> None:
    """BuildKit writes a build's cache-import attributes (the gha token among them) into its
    history database: tests/test_pinned_buildkit.py shows that on the pinned BuildKit. So only
    the engine backend, which carries no token, keeps buildkitd's state on a volume; the others
    give it a tmpfs that goes with the service. Offline: no engine can run here."""
    def state_mounts(backend: cache.Backend) -> list[tuple[str, dict[str, object]]]:
        service = main.buildkit_service(state_key=main.STATE_KEY if backend is cache.Backend.ENGINE else None)
        return [(name, args) for name, args in selections(service) if args.get("path") == "/var/lib/buildkit"]

    assert [name for name, _ in state_mounts(cache.Backend.ENGINE)] == ["withMountedCache"]
    for backend in (cache.Backend.GHA, cache.Backend.REGISTRY, cache.Backend.NONE):
        assert [name for name, _ in state_mounts(backend)] == ["withMountedTemp"], backend
    gha_builder, _ = await main._buildkit(None, backend=cache.Backend.GHA)
    assert not [name for name, _ in selections(gha_builder) if name == "withMountedCache"]

def test_buildctl_container_gets_secrets_as_secret_variables_and_the_rendered_argv() -> None:
    creds = main.Credentials(registry_host="ghcr.io", username="me", password=dag.set_secret("pw", "hunter2"),
                             gha_token=dag.set_secret("t", "tok-value"), gha_results_url=dag.set_secret("u", "https://results"))
    request = gha_request()
    ctr = main.buildctl_container(request, dag.directory(), creds, main.buildkit_service())
    sels = selections(ctr)
    assert sels[1] == ("from", {"address": pins.BUILDKIT_IMAGE})
    secret_vars = sorted(args["name"] for name, args in sels if name == "withSecretVariable")
    assert secret_vars == ["ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN", "REGISTRY_PASSWORD"]
    plain_env = {args["name"]: args["value"] for name, args in sels if name == "withEnvVariable"}
    assert "REGISTRY_PASSWORD" not in plain_env and "ACTIONS_RUNTIME_TOKEN" not in plain_env
    assert ("withMountedTemp", {"path": "/root/.docker"}) in sels  # credentials never land in a layer
    # buildctl fills gha's token and url_v2 from those two (the specs say version=2); nothing else is read.
    assert "ACTIONS_CACHE_SERVICE_V2" not in plain_env
    execs = [args for name, args in sels if name == "withExec"]
    argv = execs[-1]["args"]
    assert argv[:5] == ["sh", "-c", main.BUILDCTL_WRAPPER, "buildctl-wrapper", "buildctl"]
    assert argv[argv.index("--export-cache") + 1] == "type=gha,scope=dimbybot2-bot,version=2,mode=max,ignore-error=true,timeout=10m"
    assert argv[argv.index("--output") + 1] == f"type=image,name=ghcr.io/me/dimbybot2-bot:{SHA},push=true"
    assert "--local" in argv and "context=/src" in argv
    assert not execs[-1].get("insecureRootCapabilities")
    # Only buildkitd (which pushes) is bound to registries; the client reaches BuildKit alone.
    assert [args["alias"] for name, args in sels if name == "withServiceBinding"] == ["buildkitd"]
    recorded = repr(sels)
    assert "hunter2" not in recorded and "tok-value" not in recorded


def test_buildctl_container_can_use_an_external_buildkit() -> None:
    external = dag.host().service([dagger.PortForward(backend=4321, frontend=4321)])
    ctr = main.buildctl_container(gha_request(), dag.directory(), main.Credentials(), external, "tcp://buildkitd:4321")
    sels = selections(ctr)
    assert ("withEnvVariable", {"name": "BUILDKIT_HOST", "value": "tcp://buildkitd:4321"}) in sels
    assert [args["alias"] for name, args in sels if name == "withServiceBinding"] == ["buildkitd"]


def test_explain_runs_the_core_with_git_on_the_source() -> None:
    assert main_object().functions["explain"].return_type is str
    ctr = main.explain_container(dag.directory(), dag.directory(), "main", "", ["bot"])
    sels = selections(ctr)
    assert sels[1] == ("from", {"address": pins.PYTHON_IMAGE})
    assert sels[-1][1]["args"] == ["python", "-m", "ci.explain", "--repo", "/repo", "--base", "main", "--image", "bot"]


def test_build_returns_an_imported_container_from_a_rendered_oci_export() -> None:
    # The lazy half of `build`: the same helper with an OCI output.
    from ci.model import Output

    (image_plan,) = plan(ProjectConfig(), PipelineOptions(registry=None, tag_plan=None, images=("lavalink",)),
                         output=Output("oci", dest="/out/image.tar"))
    argv = selections(main.buildctl_container(image_plan.request, dag.directory(), main.Credentials(), main.buildkit_service()))[-1][1]["args"]
    assert argv[argv.index("--output") + 1] == "type=oci,dest=/out/image.tar"
    assert "--import-cache" not in argv and "--export-cache" not in argv  # engine cache: buildkitd's own state


def test_verify_determinism_registers_and_compares_with_the_core() -> None:
    fn = main_object().functions["verify_determinism"]
    assert fn.cache_policy == "never" and set(fn.parameters) >= {"image", "source_date_epoch"}
    sels = selections(main.compare_container(dag.directory(), dag.file("a", ""), dag.file("b", ""), "call-1"))
    assert sels[-1][1]["args"] == ["python", "-m", "ci.verify", "/images/a.tar", "/images/b.tar"]


def test_deploy_registers_secret_typed_keys_and_never_caches() -> None:
    fn = main_object().functions["deploy"]
    assert fn.cache_policy == "never"
    params = fn.parameters
    assert params["ssh_key"].resolved_type is dagger.Secret and params["known_hosts"].resolved_type is dagger.Secret
    assert params["password"].resolved_type == dagger.Secret | None
    assert params["discord_webhook"].resolved_type == dagger.Secret | None  # the URL carries the webhook's token
    assert {"digests", "commit", "force", "environment"} <= set(params)
    ctr = main.deploy_container(dag.directory(), dag.file("compose.yaml", ""), dag.set_secret("k", "PRIVATE-KEY"),
                                dag.set_secret("h", "host ssh-ed25519 AAAA"), dag.set_secret("p", "pw"),
                                ["--host", "h", "--tag", "t"], 180, "call-1", repo=dag.directory(),
                                webhook=dag.set_secret("w", "https://discord.example/api/webhooks/1/TOKEN"))
    sels = selections(ctr)
    mounted = {args["path"]: args.get("mode") for name, args in sels if name == "withMountedSecret"}
    assert mounted == {"/run/secrets/ssh_key": 0o600, "/run/secrets/known_hosts": 0o600}
    assert [args["name"] for name, args in sels if name == "withSecretVariable"] == ["REGISTRY_PASSWORD", "DISCORD_WEBHOOK_URL"]
    assert [args["path"] for name, args in sels if name == "withDirectory"][-1] == "/repo"  # git history orders commits
    assert sels[-1][1]["args"] == ["python", "-m", "ci.deploy", "--host", "h", "--tag", "t"]
    assert "PRIVATE-KEY" not in repr(sels) and "'pw'" not in repr(sels) and "TOKEN" not in repr(sels)


def test_registry_credentials_are_checked_before_building() -> None:
    creds = main.Credentials(registry_host="ghcr.io", username="me", password=dag.set_secret("pw", "hunter2"))
    sels = selections(main.registry_check_container(dag.directory(), "ghcr.io", creds, "call-1"))
    assert [args["name"] for name, args in sels if name == "withSecretVariable"] == ["REGISTRY_PASSWORD"]
    assert sels[-1][1]["args"] == ["python", "-m", "ci.registry_cli", "check", "ghcr.io"]


def test_artifacts_hold_the_summary_the_report_and_the_exit_code_the_workflow_fails_on() -> None:
    result = main._make(main.BuildAndPushResult, images=[], cache_backend="gha", ok=False, report_json='{"ok": false}',
                        summary_markdown="# summary")
    files = {args["path"]: args["contents"] for name, args in selections(result.artifacts()) if name == "withNewFile"}
    assert files == {"summary.md": "# summary", "report.json": '{"ok": false}', "exit-code": "1\n"}
