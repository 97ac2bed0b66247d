"""A stand-in for the Dagger engine, which cannot run here (a test double, not the code under test).

The module's functions build lazy SDK objects and await a few leaves: exit codes, file
contents, service start/stop. The SDK sends each awaited leaf as one query through
`dagger.client._core.Context.execute`; this double replaces that one method. It records every
query (the whole chain of selections, as the engine would receive it) in call order and answers
from a `Script`, so a test runs a real function call and reads exactly what the engine would
have been asked to do. Nothing here decides what the module does.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Callable
from typing import Any

import gql
import pytest
from dagger.client._core import Context, Field
from dagger.client.base import Type

from tests.conftest import REPO

PROGRESS = REPO / "tests" / "data" / "progress"
DIGEST = "sha256:" + "ab" * 32


@dataclasses.dataclass(frozen=True)
class Exec:
    """What the engine answers for one exec: its exit code and output, and its files."""

    code: int = 0
    stdout: str = ""
    stderr: str = ""
    files: dict[str, str] = dataclasses.field(default_factory=dict)


def built(progress: str = "warm.rawjson", digest: str = DIGEST) -> Exec:
    """A buildctl run that succeeded: real progress captured from BuildKit, and its metadata."""
    return Exec(files={"/out/progress.json": (PROGRESS / progress).read_text(),
                       "/out/metadata.json": json.dumps({"containerimage.digest": digest})})


def failed_build(stderr_text: str, code: int = 1) -> Exec:
    return Exec(code=code, files={"/out/progress.json": stderr_text})


@dataclasses.dataclass
class Query:
    chain: list[Field]

    @property
    def leaf(self) -> str:
        return self.chain[-1].name

    @property
    def argv(self) -> list[str]:
        """The argv of the last exec in the chain ([] when there is none)."""
        execs = [f.args["args"] for f in self.chain if f.name == "withExec"]
        return list(execs[-1]) if execs else []

    @property
    def kind(self) -> str:
        return exec_kind(self.argv)

    def path(self) -> str:
        """The container path the leaf reads: `directory(...)`, `file(...)` and `exists(...)`
        selections after the last exec, joined."""
        last = max(i for i, f in enumerate(self.chain) if f.name == "withExec")
        parts = [f.args["path"] for f in self.chain[last + 1:] if f.name in ("directory", "file", "exists")]
        return posixpath.join(*parts) if parts else ""

    def env(self) -> dict[str, str]:
        """Plain environment variables set before the last exec."""
        last = max((i for i, f in enumerate(self.chain) if f.name == "withExec"), default=len(self.chain))
        return {f.args["name"]: f.args["value"] for f in self.chain[:last] if f.name == "withEnvVariable"}


def exec_kind(argv: list[str]) -> str:
    """A short name for a step: build, check, retag, deploy, verify, explain, or argv[0]."""
    if "buildctl-wrapper" in argv:
        return "build"
    if argv[:2] == ["python", "-m"] and len(argv) > 2:
        module = argv[2].removeprefix("ci.")
        return argv[3] if module == "registry_cli" else module
    return argv[0] if argv else ""


def flatten(value: Any) -> Any:
    """A comparable picture of a selection argument: SDK objects become their own chains."""
    if isinstance(value, Type):
        return [(f.name, {k: flatten(v) for k, v in f.args.items()}) for f in value._ctx.selections]
    if isinstance(value, list | tuple):
        return [flatten(v) for v in value]
    if isinstance(value, dict):
        return {k: flatten(v) for k, v in value.items()}
    return value


def picture(chain: list[Field]) -> list[tuple[str, Any]]:
    return [(f.name, flatten(f.args)) for f in chain]


@dataclasses.dataclass
class Script:
    """How the stand-in engine answers: per step kind (see exec_kind), or per image for builds."""

    steps: dict[str, Exec] = dataclasses.field(default_factory=dict)
    builds: dict[str, Exec] = dataclasses.field(default_factory=dict)  # keyed by a substring of the build argv
    raises: dict[str, Exception] = dataclasses.field(default_factory=dict)  # step kind -> engine error

    def for_exec(self, argv: list[str]) -> Exec:
        kind = exec_kind(argv)
        if kind in self.raises:
            raise self.raises[kind]
        if kind == "build":
            for needle, answer in self.builds.items():
                if any(needle in a for a in argv):
                    return answer
            return self.steps.get("build", built())
        return self.steps.get(kind, Exec())


class EngineDouble:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.queries: list[Query] = []

    def execs(self, kind: str | None = None) -> list[Query]:
        """The exec queries (exit code read), in order, optionally of one kind."""
        return [q for q in self.queries if q.leaf == "exitCode" and (kind is None or q.kind == kind)]

    def events(self) -> list[str]:
        """What happened in order: `start`, `stop` and `exec:<kind>`."""
        return [f"exec:{q.kind}" if q.leaf == "exitCode" else q.leaf for q in self.queries
                if q.leaf in ("exitCode", "start", "stop")]

    def answer(self, query: Query) -> Any:
        leaf = query.chain[-1]
        if leaf.name in ("start", "stop"):
            return f"service-{leaf.name}-{len(self.queries)}"
        if leaf.name == "endpoint":
            return "buildkit.host.example:1234"
        if not query.argv:  # the source directory: answered from this repository
            path = query.chain[-2].args.get("path", "") if leaf.name == "contents" else leaf.args.get("path", "")
            return (REPO / path).exists() if leaf.name == "exists" else (REPO / path).read_text()
        answer = self.script.for_exec(query.argv)
        if leaf.name == "exitCode":
            return answer.code
        if leaf.name in ("stdout", "stderr"):
            return getattr(answer, leaf.name)
        if leaf.name == "contents":
            return answer.files[query.path()]
        if leaf.name == "exists":
            return any(name == query.path() or name.startswith(query.path() + "/") for name in answer.files)
        raise AssertionError(f"the engine double has no answer for {leaf.name}")


def engine_error(message: str) -> Exception:
    """An error as the engine reports it (e.g. a service that would not start)."""
    from dagger._exceptions import QueryError, QueryErrorValue

    return QueryError([QueryErrorValue(message)], gql.GraphQLRequest(gql.gql("{ version }")))


def install(monkeypatch: pytest.MonkeyPatch) -> Callable[[Script], EngineDouble]:
    """For a fixture: `engine(Script(...))` puts the stand-in in place for the rest of the test."""

    def with_script(script: Script) -> EngineDouble:
        double = EngineDouble(script)

        async def execute(self: Context, return_type: Any = None) -> Any:
            query = Query(list(self.selections))
            double.queries.append(query)
            return double.answer(query)

        monkeypatch.setattr(Context, "execute", execute)
        return double

    return with_script
