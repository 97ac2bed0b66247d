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


FROM_STAGE = """\
FROM debian:bookworm AS build
COPY src.txt /src.txt
RUN cut -c1 /src.txt > /out.txt

FROM debian:bookworm AS final
RUN echo final
COPY --from=build /out.txt /out.txt
RUN cat /out.txt
"""


def test_copy_from_a_rebuilt_stage_is_content_decided(tmp_path: pathlib.Path) -> None:
    files = {"Dockerfile": FROM_STAGE, "src.txt": "abc\n"}
    result = compare("t", BuildInput(DirSnapshot(_write(tmp_path / "b", files)), "Dockerfile", "."),
                     BuildInput(DirSnapshot(_write(tmp_path / "h", {**files, "src.txt": "axy\n"})), "Dockerfile", "."))
    steps = {s.label: s for s in result.steps}
    assert (steps["build 2/3"].status, steps["build 2/3"].content_decided) == ("miss", False)
    assert (steps["build 3/3"].status, steps["build 3/3"].content_decided) == ("miss", False)
    assert steps["final 2/4"].status == "hit"
    copy = steps["final 3/4"]
    assert copy.status == "miss" and copy.content_decided and "content-decided" in (copy.reason or "")
    assert steps["final 4/4"].content_decided  # only follows the content-decided copy
    assert copy.to_dict()["content_decided"] is True


def test_copy_from_a_rebuilt_stage_after_a_certain_miss_is_not_content_decided(tmp_path: pathlib.Path) -> None:
    files = {"Dockerfile": FROM_STAGE, "src.txt": "abc\n"}
    head = {"Dockerfile": FROM_STAGE.replace("echo final", "echo final!"), "src.txt": "axy\n"}
    result = compare("t", BuildInput(DirSnapshot(_write(tmp_path / "b", files)), "Dockerfile", "."),
                     BuildInput(DirSnapshot(_write(tmp_path / "h", head)), "Dockerfile", "."))
    assert [s.content_decided for s in result.steps if s.label.startswith("final")] == [False] * 3


SHARED_STEP = """\
FROM debian:bookworm AS build
RUN echo same > /same
COPY src.txt /src.txt

FROM debian:bookworm AS final
RUN echo same > /same
COPY --from=build /src.txt /src.txt
"""


def test_a_shared_vertex_shows_the_label_marshalled_last(tmp_path: pathlib.Path) -> None:
    """llb's marshal visits a copy's destination chain (final's RUN) before its source (build's
    RUN): build's name is written last, so BuildKit shows `build 2/3` (seen for real)."""
    files = {"Dockerfile": SHARED_STEP, "src.txt": "s\n"}
    labels = {s.label for s in compare("t", BuildInput(DirSnapshot(_write(tmp_path / "b", files)), "Dockerfile", "."),
                                       BuildInput(DirSnapshot(_write(tmp_path / "h", files)), "Dockerfile", ".")).steps}
    assert "build 2/3" in labels and "final 2/3" not in labels
    # copying from a later stage's twin: the source is visited last, here the later stage
    later = SHARED_STEP.replace("COPY --from=build /src.txt /src.txt", "COPY src.txt /other.txt").replace(
        "FROM debian:bookworm AS build\nRUN echo same > /same\nCOPY src.txt /src.txt\n\n", "") + (
        "\nFROM debian:bookworm AS last\nRUN echo same > /same\nCOPY --from=final /other.txt /o\n")
    files = {"Dockerfile": later, "src.txt": "s\n"}
    labels = {s.label for s in compare("t", BuildInput(DirSnapshot(_write(tmp_path / "b2", files)), "Dockerfile", "."),
                                       BuildInput(DirSnapshot(_write(tmp_path / "h2", files)), "Dockerfile", ".")).steps}
    assert "final 2/3" in labels and "last 2/3" not in labels


CACHE = "FROM debian:bookworm\nRUN --mount=type=cache,target=/root/.cache{opts} echo hi\n"


@pytest.mark.parametrize(("before", "after", "status"), [
    (",id=a", ",id=b", "hit"),  # explicit ids are cleared from the key
    (",id=a", ",id=a,sharing=locked", "hit"),
    ("", ",sharing=locked", "miss"),  # default id and sharing count until one of them changes
    ("", ",id=/root/.cache", "hit"),  # the default id spelled out
    ("", ",id=x", "miss"),
    (",sharing=private", ",sharing=locked", "hit"),
    ("", ",mode=0700", "miss"),
])
def test_cache_mount_id_and_sharing_as_buildkit_keys_them(before: str, after: str, status: str, tmp_path: pathlib.Path) -> None:
    result = _explain(tmp_path, {"Dockerfile": CACHE.format(opts=before)},
                      {"Dockerfile": CACHE.format(opts=after)})
    assert result["stage-0 2/2"][0] == status
