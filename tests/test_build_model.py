"""The build model: configuration, tags, cache backends and their rendering to both clients."""

from __future__ import annotations

import pytest

from ci import cache, render, tags
from ci.config import DEFAULT_IMAGES, ProjectConfig, from_pyproject_text
from ci.errors import InputError
from ci.model import BuildRequest, Output
from ci.pipeline import PipelineOptions, parse_build_args, plan

SHA = "0123456789abcdef0123456789abcdef01234567"
BOT = DEFAULT_IMAGES[0]


def request_for(options: cache.CacheOptions) -> BuildRequest:
    (image_plan,) = plan(ProjectConfig(), PipelineOptions(registry="reg.example:5000/team", tag_plan=tags.plan(SHA),
                                                          cache=options, images=("bot",)))
    return image_plan.request


def test_default_images_have_their_own_cache_scopes() -> None:
    assert [(i.name, i.dockerfile, i.context, i.scope) for i in DEFAULT_IMAGES] == [
        ("bot", "Dockerfile", ".", "dimbybot2-bot"), ("lavalink", "Lavalink/Dockerfile", "Lavalink", "dimbybot2-lavalink")]


def test_pyproject_table_replaces_the_defaults() -> None:
    config = from_pyproject_text('''
[tool.dimbybot2.images.web]
dockerfile = "web/Dockerfile"
build-args = { A = "1" }
''')
    (web,) = config.images
    assert (web.context, web.repository, web.scope, web.build_args) == ("web", "dimbybot2-web", "dimbybot2-web", (("A", "1"),))


def test_unknown_keys_and_images_are_named() -> None:
    with pytest.raises(InputError, match=r"\[tool.dimbybot2.images.web\]: unknown key\(s\) dockerfil"):
        from_pyproject_text('[tool.dimbybot2.images.web]\ndockerfil = "x"\n')
    with pytest.raises(InputError, match=r"^--image: unknown image 'web' \(known: bot, lavalink\)$"):
        ProjectConfig().image("web")


@pytest.mark.parametrize("bad", ["abc", SHA.upper(), SHA[:-1], SHA + "0", "", "g" * 40])
def test_sha_must_be_full_lower_hex(bad: str) -> None:
    with pytest.raises(InputError, match="^--sha: must be a full 40-character"):
        tags.validate_sha(bad)


def test_tag_plan_moves_latest_last_and_drops_duplicates() -> None:
    tag_plan = tags.plan(SHA, latest=True, extra=["v2", "latest", "v2", SHA])
    assert tag_plan.all == (SHA, "v2", "latest")
    assert tags.plan(SHA, latest=False).all == (SHA,)
    with pytest.raises(InputError, match="--tags: 'bad tag'"):
        tags.plan(SHA, extra=["bad tag"])


@pytest.mark.parametrize("bad", ["https://ghcr.io", "ghcr.io/Owner Name", "", "host:port"])
def test_registry_is_validated(bad: str) -> None:
    with pytest.raises(InputError, match="^--registry"):
        tags.validate_registry(bad)


def test_auto_backend_choice() -> None:
    assert cache.resolve(cache.CacheOptions(gha_tokens=True, cache_ref="r/c")) is cache.Backend.GHA
    assert cache.resolve(cache.CacheOptions(cache_ref="r/c")) is cache.Backend.REGISTRY
    assert cache.resolve(cache.CacheOptions()) is cache.Backend.ENGINE


def test_explicit_backends_need_their_inputs() -> None:
    with pytest.raises(InputError, match="^--cache: gha needs"):
        cache.resolve(cache.CacheOptions(backend=cache.Backend.GHA))
    with pytest.raises(InputError, match="^--cache: registry needs --cache-ref"):
        cache.resolve(cache.CacheOptions(backend=cache.Backend.REGISTRY))
    with pytest.raises(InputError, match="^--cache-mode"):
        cache.CacheOptions(mode="all")
    with pytest.raises(InputError, match="^--cache-bust"):
        cache.CacheOptions(bust="a b")


def test_gha_renders_v2_per_scope_with_tokens_only_in_the_environment() -> None:
    req = request_for(cache.CacheOptions(gha_tokens=True, bust="2"))
    ctl = render.buildctl(req)
    assert ctl[ctl.index("--import-cache") + 1] == "type=gha,scope=dimbybot2-bot-2,version=2"
    assert ctl[ctl.index("--export-cache") + 1] == (
        "type=gha,scope=dimbybot2-bot-2,version=2,mode=max,ignore-error=true,timeout=10m")
    bx = render.buildx(req)
    assert bx[bx.index("--cache-to") + 1] == ctl[ctl.index("--export-cache") + 1]
    assert req.client_env == ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL")
    assert not any("token=" in a or "url_v2=" in a for a in ctl + bx)


def test_registry_backend_renders_an_image_manifest_cache_per_scope() -> None:
    req = request_for(cache.CacheOptions(cache_ref="reg.example:5000/team/cache", mode="min"))
    bx = render.buildx(req)
    assert bx[bx.index("--cache-from") + 1] == "type=registry,ref=reg.example:5000/team/cache:dimbybot2-bot"
    assert bx[bx.index("--cache-to") + 1] == ("type=registry,ref=reg.example:5000/team/cache:dimbybot2-bot,mode=min,"
                                             "image-manifest=true,oci-mediatypes=true,ignore-error=true")


def test_engine_and_none_backends() -> None:
    engine = request_for(cache.CacheOptions(backend=cache.Backend.ENGINE))
    assert (engine.cache_from, engine.cache_to, engine.no_cache) == ((), (), False)
    none = request_for(cache.CacheOptions(backend=cache.Backend.NONE))
    assert none.no_cache and "--no-cache" in render.buildctl(none) and "--no-cache" in render.buildx(none)


def test_both_renderings_carry_the_same_request() -> None:
    req = request_for(cache.CacheOptions())
    ctl = render.buildctl(req, root="/src", metadata_file="/out/m.json")
    assert ctl[:5] == ["buildctl", "build", "--frontend", "dockerfile.v0", "--progress=rawjson"]
    assert "context=/src" in ctl and "dockerfile=/src" in ctl and "filename=Dockerfile" in ctl
    assert "build-arg:SOURCE_DATE_EPOCH=0" in ctl
    assert ctl[ctl.index("--output") + 1] == f"type=image,name=reg.example:5000/team/dimbybot2-bot:{SHA},push=true"
    bx = render.buildx(req, root="/repo")
    assert bx[bx.index("--output") + 1] == ctl[ctl.index("--output") + 1]
    assert ("--file", "/repo/Dockerfile") == tuple(bx[bx.index("--file"):bx.index("--file") + 2])
    assert "--provenance=false" in bx and bx[-1] == "/repo"


def test_lavalink_dockerfile_outside_the_root_context() -> None:
    (lava,) = plan(ProjectConfig(), PipelineOptions(registry=None, tag_plan=None, images=("lavalink",)))
    ctl = render.buildctl(lava.request)
    assert "context=/src/Lavalink" in ctl and "dockerfile=/src/Lavalink" in ctl
    assert lava.request.output == Output("cacheonly")


def test_plan_needs_a_registry_to_push_and_parses_build_args() -> None:
    with pytest.raises(InputError, match="^--registry: is required to push"):
        plan(ProjectConfig(), PipelineOptions(registry=None, tag_plan=tags.plan(SHA)))
    assert parse_build_args(["A=1", "B=x=y"]) == (("A", "1"), ("B", "x=y"))
    with pytest.raises(InputError, match="^--build-arg: expected NAME=value"):
        parse_build_args(["novalue"])


def test_refs_push_sha_first_and_latest_last() -> None:
    (image_plan,) = plan(ProjectConfig(), PipelineOptions(registry="r:5000", tag_plan=tags.plan(SHA, extra=["v1"]),
                                                          images=("lavalink",)))
    assert image_plan.refs == (f"r:5000/dimbybot2-lavalink:{SHA}", "r:5000/dimbybot2-lavalink:v1", "r:5000/dimbybot2-lavalink:latest")
    assert image_plan.request.output.names == image_plan.refs[:1]


def test_pushes_can_clamp_file_times_for_reproducible_images() -> None:
    (image_plan,) = plan(ProjectConfig(), PipelineOptions(registry="r:5000", tag_plan=tags.plan(SHA), images=("bot",),
                                                          rewrite_timestamp=True))
    ctl = render.buildctl(image_plan.request)
    assert ctl[ctl.index("--output") + 1] == f"type=image,name=r:5000/dimbybot2-bot:{SHA},push=true,rewrite-timestamp=true"
