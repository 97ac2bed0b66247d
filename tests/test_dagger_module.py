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
    assert ".git" in (source.ignore or [])
    assert source.doc


def test_dagger_json_pins_the_engine_to_the_sdk_and_uploads_only_the_pipeline() -> None:
    import importlib.metadata

    module = json.loads((REPO / "dagger.json").read_text())
    assert module["name"] == "dimbybot2" and module["sdk"]["source"] == "python"
    assert module["engineVersion"] == "v" + importlib.metadata.version("dagger-io")
    excluded = {p[1:] for p in module["include"] if p.startswith("!")}
    assert {"bot", "tests", "Lavalink", ".git"} <= excluded
    assert "ci" not in excluded and "pyproject.toml" not in excluded
