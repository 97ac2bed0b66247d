"""explain's model on the shapes of issue 18 (no BuildKit needed; the same shapes are built for
real in test_explain_buildkit_shapes.py / test_explain_buildkit_realworld.py)."""

from __future__ import annotations

import pathlib

import pytest

from ci.explain.dockerfile import parse
from ci.explain.predict import BuildInput, compare
from ci.explain.snapshot import DirSnapshot

PARENT_ARG = """\
FROM debian:bookworm AS base
RUN echo base > /base.txt
ARG CHANNEL=stable

FROM base AS runtime
COPY app.txt /app.txt
RUN echo runtime > /runtime.txt
RUN echo done
"""
EXPANDED = PARENT_ARG.replace("COPY app.txt /app.txt", "COPY ${CHANNEL}.txt /channel.txt")


def _write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _explain(tmp_path: pathlib.Path, base: dict[str, str], head: dict[str, str], **args: str) -> dict[str, tuple[str, str | None]]:
    b, h = _write(tmp_path / "base", base), _write(tmp_path / "head", head)
    result = compare("t", BuildInput(DirSnapshot(b), "Dockerfile", "."), BuildInput(DirSnapshot(h), "Dockerfile", ".", args))
    return {s.label: (s.status, s.reason) for s in result.steps}


def test_arg_of_the_parent_stage_is_in_the_child_runs_environment(tmp_path: pathlib.Path) -> None:
    files = {"Dockerfile": PARENT_ARG, "app.txt": "app\n"}
    head = {**files, "Dockerfile": PARENT_ARG.replace("CHANNEL=stable", "CHANNEL=edge")}
    result = _explain(tmp_path, files, head)
    assert result["base 2/2"][0] == "hit"  # nothing of base runs after its ARG
    assert result["runtime 1/3"][0] == "hit"  # a copy has no environment
    status, reason = result["runtime 2/3"]
    assert status == "miss" and reason is not None and "CHANNEL: 'stable' -> 'edge'" in reason, reason
    assert result["runtime 3/3"][0] == "miss"


def test_arg_of_the_parent_stage_expands_in_the_child(tmp_path: pathlib.Path) -> None:
    files = {"Dockerfile": EXPANDED, "stable.txt": "stable\n", "edge.txt": "edge\n"}
    result = _explain(tmp_path, files, {**files, "edge.txt": "edge 2\n"})
    assert {status for status, _ in result.values()} == {"hit"}  # the child copies stable.txt, not edge.txt
    result = _explain(tmp_path / "2", files, {**files, "stable.txt": "stable 2\n"})
    assert result["runtime 1/3"] == ("miss", "files changed: stable.txt (content changed)")


def test_arg_of_the_parent_stage_via_build_arg(tmp_path: pathlib.Path) -> None:
    files = {"Dockerfile": PARENT_ARG, "app.txt": "app\n"}
    result = _explain(tmp_path, files, files, CHANNEL="edge")
    assert result["runtime 2/3"][0] == "miss"


# BuildKit v0.25 (Docker 28.5) frontend/dockerfile/dockerfile2llb/convert.go:429-431 drops the stage
# name only when one dispatch state exists after toCommand (convert.go:818-856) and
# detectRunMount (convert_runmount.go:16-46) added a state for each `COPY --from=<image>` and for
# each `RUN --mount` whose from= names no stage (no from= at all: "scratch").
@pytest.mark.parametrize(("text", "prefix"), [
    ("FROM x\nCOPY a /a\nRUN true\n", ""),
    ("FROM x\nRUN --mount=type=bind,source=a,target=/a cat /a\n", "stage-0 "),
    ("FROM x\nRUN --mount=type=cache,target=/c true\n", "stage-0 "),
    ("FROM x\nRUN --mount=type=tmpfs,target=/t true\n", "stage-0 "),
    ("FROM x\nRUN --mount=type=secret,id=s true\n", "stage-0 "),
    ("FROM x AS app\nRUN --mount=type=cache,target=/c true\n", "app "),
    ("FROM x\nCOPY --from=busybox /bin/sh /sh\n", "stage-0 "),
    ("FROM x\nRUN --network=none true\n", ""),
    ("FROM x\nCOPY --link a /a\n", ""),
])
def test_single_stage_label_prefix_follows_dispatch_states(text: str, prefix: str) -> None:
    dockerfile = parse(text)
    assert dockerfile.label_prefix(dockerfile.stages[0]) == prefix
