"""Issue 22, item 9, the Dagger skin: the same checks as the CLI's (ci.config.check_inputs,
ci.tags, ci.cache), before the module asks the engine anything. No engine and no stand-in: each
call must raise InputError before its first engine query (one would fail here)."""

from __future__ import annotations

from typing import Any

import pytest
from dagger import dag

from ci import main
from ci.errors import InputError

SHA = "0123456789abcdef0123456789abcdef01234567"
HOSTILE = ["a" * 120_000, "x\nregistry=evil.example/x", "x\x00", "--help", "-x", "--", "x\udcff"]
CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("build_and_push", {"sha": SHA}, "registry"), ("build_and_push", {"sha": SHA}, "username"),
    ("build_and_push", {}, "sha"), ("build_and_push", {"sha": SHA}, "cache_ref"), ("build_and_push", {"sha": SHA}, "cache_bust"),
    ("build_and_push", {"sha": SHA}, "cache_mode"), ("explain", {}, "base"), ("explain", {}, "head"),
    ("debug", {"image": "bot", "step": "deps 1/1"}, "base"), ("debug", {"image": "bot", "step": "deps 1/1"}, "cache_ref"),
    ("debug", {"step": "deps 1/1"}, "image"), ("debug", {"image": "bot"}, "step"), ("build", {}, "image"),
    ("verify_determinism", {}, "image"),
]


@pytest.mark.parametrize("value", HOSTILE, ids=["long", "newline", "nul", "help", "dash-x", "dashdash", "non-utf8"])
@pytest.mark.parametrize(("function", "others", "name"), CALLS, ids=[f"{f}-{n}" for f, _, n in CALLS])
async def test_every_string_argument_is_refused_before_the_engine_is_asked(function: str, others: dict[str, Any], name: str,
                                                                        value: str) -> None:
    module = main.Dimbybot2(source=dag.directory())  # type: ignore[call-arg]
    with pytest.raises(InputError) as refused:
        await getattr(module, function)(**others, **{name: value})
    text = str(refused.value)
    assert refused.value.argument.lstrip("-").replace("-", "_") in (name, name + "s", name.removesuffix("s")) or \
        refused.value.argument == "--cache" and name == "cache_backend", text[:200]
    assert "\n" not in text and len(text) < 400


@pytest.mark.parametrize("ref", ["x,registry.insecure=true,ref=evil.invalid/steal", "ghcr.io/me/cache:tag", "ghcr.io"])
async def test_a_cache_ref_that_would_add_cache_attributes_is_refused(ref: str) -> None:
    with pytest.raises(InputError) as refused:
        await main.Dimbybot2(source=dag.directory()).build_and_push(  # type: ignore[call-arg]
            sha=SHA, cache_backend="registry", cache_ref=ref)
    assert refused.value.argument == "--cache-ref"


@pytest.mark.parametrize("registry", ["a" * 300, "-registry.example", "registry.example/UPPER"])
async def test_a_registry_that_is_not_a_host_and_namespace_is_refused_before_the_engine_is_asked(registry: str) -> None:
    with pytest.raises(InputError) as refused:
        await main.Dimbybot2(source=dag.directory()).build_and_push(registry=registry, sha=SHA)  # type: ignore[call-arg]
    assert refused.value.argument == "--registry"


@pytest.mark.parametrize("argv", [["check", "--help"], ["check", "-x"], ["check", "a" * 300], ["retag", "--", "me/x", "t", "d", "latest"],
                                  ["retag", "ghcr.io", "me/x", "t", "d", "bad tag"], ["check", "ghcr.io\nevil"]])
def test_the_in_pipeline_registry_step_refuses_option_like_or_oversized_hosts_without_calling_out(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from ci import registry_cli

    assert registry_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
