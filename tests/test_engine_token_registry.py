"""Issue 20 on the Dagger path: build-and-push against a registry with token auth (ghcr.io's
way), executed end to end by the real engine of tests/dagger_engine.py (marked `engine`).

The registry is distribution 2.8 with `auth: token` and tests/token_registry.py's stand-in for
GitHub's token service, both over TLS on the engine network's gateway with a certificate from
the throwaway CA the engine trusts (as the `outside` registry of tests/test_engine_pipeline.py):
the pipeline's own steps (the credential check, the avoidance steps, the tag moves) and the
BuildKit it starts each fetch their Bearer tokens there. Tokens live a few seconds, far less
than a build, so every registry call after the build needs tokens fetched after it.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest

from ci import main
from ci.errors import InputError
from ci.registry import Registry
from tests import dagger_engine, test_engine_pipeline
from tests.conftest import REPO
from tests.registry_fixture import ThrowawayCA
from tests.test_registry_token import ANONYMOUS, CI_PASSWORD, CI_USER, OWNER, READER, READER_PASSWORD, USERS, push_manifest
from tests.token_registry import Issued, TokenRegistry, start_token_registry

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]

ca = test_engine_pipeline.ca
engine = test_engine_pipeline.engine

SHA, SHA2 = test_engine_pipeline.SHA, "3" * 40
LIFETIME = 5  # seconds a token works: a cold build of either image takes minutes
IMAGES = ("bot", "lavalink")


@pytest.fixture
def registry(engine: dagger_engine.Engine, ca: ThrowawayCA, tmp_path: pathlib.Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenRegistry]:
    """A token registry of its own for each test, registry and token service on the gateway over
    TLS, where the engine's containers (and this process, trusting the same CA) reach both."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    yield from start_token_registry(tmp_path, USERS, ANONYMOUS, address=engine.gateway,
                                    certificate=ca.issue(engine.gateway), ca=ca.cert)


def client(registry: TokenRegistry) -> Registry:
    return Registry(registry.host, CI_USER, CI_PASSWORD)


async def push(engine: dagger_engine.Engine, registry: TokenRegistry, user: str, password: str, sha: str = SHA,
               **options: object) -> main.BuildAndPushResult:
    """`dagger call build-and-push --registry=HOST/owner --username=USER --password=env://...`."""
    import dagger

    secret = dagger.dag.set_secret(f"registry-password-{uuid.uuid4().hex}", password)
    result: main.BuildAndPushResult = await test_engine_pipeline.pipeline(engine).build_and_push(
        registry=f"{registry.host}/{OWNER}", username=user, password=secret, sha=sha, **options)
    return result


def from_python(issued: list[Issued]) -> list[Issued]:
    """What the pipeline's own steps (the core's registry client, urllib) asked for."""
    return [i for i in issued if "Python-urllib" in i.user_agent]


def from_buildkit(issued: list[Issued]) -> list[Issued]:
    return [i for i in issued if "Python-urllib" not in i.user_agent]


def grants_push(issued: Issued, repository: str) -> bool:
    return any(g["name"] == repository and "push" in g["actions"] for g in issued.granted)


def repositories(registry: TokenRegistry) -> list[str]:
    """The repositories the registry's storage holds a manifest in (its catalog, read from disk)."""
    root = registry.storage / "docker" / "registry" / "v2" / "repositories"
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("_manifests")) if root.exists() else []


async def test_build_and_push_pushes_both_images_with_tokens_shorter_lived_than_the_build(
        engine: dagger_engine.Engine, registry: TokenRegistry) -> None:
    registry.tokens.expires_in = LIFETIME
    async with dagger_engine.connected(engine, REPO):
        result = await push(engine, registry, CI_USER, CI_PASSWORD, cache_backend="engine")
    assert result.ok, [(i.name, i.error) for i in result.images]
    assert sorted(i.name for i in result.images) == list(IMAGES)
    check = client(registry)
    for image in result.images:
        repository = f"{OWNER}/dimbybot2-{image.name}"
        assert image.refs == [f"{registry.host}/{repository}:{SHA}", f"{registry.host}/{repository}:latest"]
        assert check.digest(repository, SHA) == check.digest(repository, "latest") == image.digest
        assert image.avoidance.startswith("built: no image with these inputs yet"), image.avoidance

    issued = list(registry.tokens.issued)
    assert issued and all(i.user == CI_USER and i.status == 200 for i in issued), [(i.user, i.status) for i in issued]
    first = min(i.at for i in from_python(issued))  # the credential check's, before anything was built
    for name in IMAGES:
        repository = f"{OWNER}/dimbybot2-{name}"
        # BuildKit fetched its own push tokens, after every token of the check had died ...
        pushes = [i for i in from_buildkit(issued) if grants_push(i, repository)]
        assert pushes and min(i.at for i in pushes) > first + LIFETIME, (name, [i.at - first for i in pushes])
        # ... and the tag moves and the avoidance record, after the push, fetched theirs then too.
        after = [i for i in from_python(issued) if grants_push(i, repository) and i.at > first + LIFETIME]
        assert after and max(i.at for i in after) >= max(i.at for i in pushes), (name, [i.at - first for i in after])
    # The avoidance record sits beside each image: written after the build, with a fresh token.
    assert all(any(t.startswith("inputs-") for t in check.tags(f"{OWNER}/dimbybot2-{name}")) for name in IMAGES)

    tokens = [i.token for i in issued if i.token]
    assert tokens
    for text in (result.report_json, result.summary_markdown,
                 *(part for i in result.images for part in (i.error, *i.warnings, i.avoidance))):
        assert CI_PASSWORD not in text
        assert not [t for t in tokens if t in text or t.split(".")[-1] in text]


async def test_a_wrong_password_is_refused_before_anything_is_built_or_pushed(
        engine: dagger_engine.Engine, registry: TokenRegistry) -> None:
    async with dagger_engine.connected(engine, REPO):
        with pytest.raises(InputError) as refused:
            await push(engine, registry, CI_USER, "not-the-password")
    assert refused.value.argument == "--password"
    assert refused.value.problem == f"registry {registry.host} refused the credentials (token service HTTP 401)"
    assert "not-the-password" not in str(refused.value)
    issued = registry.tokens.issued
    assert issued and all(i.status == 401 and not i.token for i in issued), [(i.user, i.status) for i in issued]
    assert from_buildkit(issued) == []  # BuildKit never asked: nothing was built or pushed
    assert repositories(registry) == []


async def test_a_pull_only_user_is_refused_push_before_any_build_and_latest_stays(
        engine: dagger_engine.Engine, registry: TokenRegistry) -> None:
    """The user's credentials are good (the token service answers the API root for them) but it
    may only pull: refused in one line naming the repository, before BuildKit builds anything,
    and no tag moves (`latest` still where the pushing user left it)."""
    before = {name: push_manifest(registry, f"{OWNER}/dimbybot2-{name}", "latest", f"previous {name}") for name in IMAGES}
    seeded = len(registry.tokens.issued)
    async with dagger_engine.connected(engine, REPO):
        with pytest.raises(InputError) as refused:
            await push(engine, registry, READER, READER_PASSWORD, sha=SHA2, cache_backend="engine")
    assert refused.value.argument == "--password"
    problem = refused.value.problem
    assert problem.startswith(f"registry {registry.host} refused user {READER!r} (HTTP 401) when asked for push access to "
                              f"{OWNER}/dimbybot2-"), problem
    assert "\n" not in problem and READER_PASSWORD not in problem
    asked = registry.tokens.issued[seeded:]
    assert asked and all(i.user == READER for i in asked)
    # the token service granted only pull, whatever was asked; BuildKit never asked for anything
    assert all(a == "pull" for i in asked for g in i.granted for a in g["actions"])
    assert from_buildkit(asked) == []
    check = client(registry)
    for name in IMAGES:
        repository = f"{OWNER}/dimbybot2-{name}"
        assert check.digest(repository, "latest") == before[name]
        assert check.tags(repository) == ["latest"]  # no SHA tag, no avoidance record
