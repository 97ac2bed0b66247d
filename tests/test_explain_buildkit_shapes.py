"""explain against real BuildKit on Dockerfile shapes people write: stages built FROM stages,
heredocs, multi-line RUNs, bind and cache mounts, `COPY --exclude`, `COPY --link`, ARG before
FROM, `--platform`, `WORKDIR /`, SOURCE_DATE_EPOCH, .dockerignore escapes, a byte-order mark.

One base build per test run (module fixture), then per scenario: mutate a copy, predict, build
the head, and check that explain lists exactly BuildKit's step labels and every step's
hit/miss. A salt file unique to the run is copied first into every stage, so nothing from
other runs or other engineers' builds on the same daemon can be reused; each scenario's
mutation is unique, so scenarios do not feed each other's cache.

`--platform` can only name the host platform here (no emulation). Not covered for real:
`COPY --parents` (Docker 28.5's built-in Dockerfile frontend rejects it as an unknown flag) and
`ADD --checksum` (needs a remote source; modelled and unit-tested only).
"""

from __future__ import annotations

import pathlib
import shutil
import uuid
from collections.abc import Callable

import pytest

from ci.explain.predict import BuildInput, compare
from ci.explain.snapshot import DirSnapshot
from tests.agreement import assert_agreement, assert_avoidance, build
from tests.conftest import BASE_PREFIX

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

DEBIAN = f"{BASE_PREFIX}/debian:bookworm"
DOCKERFILE = f"""\
ARG BASE={DEBIAN}
ARG WORKROOT=/work
FROM ${{BASE}} AS base
COPY salt.txt /salt.txt
ENV LANG=C.UTF-8
WORKDIR /
RUN echo base > /base.txt

FROM base AS deps
ARG WORKROOT
COPY requirements.txt ${{WORKROOT}}/
RUN cat ${{WORKROOT}}/requirements.txt \\
    # the dependency list, as a file
    && echo deps > /deps.txt

FROM deps AS tools
ARG LEVEL=1
WORKDIR /opt/tools
RUN --mount=type=bind,source=tools,target=/mnt/tools cat /mnt/tools/a.sh > /tools.txt
RUN --mount=type=cache,target=/var/cache/demo echo "level $LEVEL" > /level.txt

FROM ${{BASE}} AS assets
COPY salt.txt /salt.txt
COPY --exclude=*.tmp assets/ /assets/

FROM tools AS final
ENV MODE=prod
COPY <<EOF /etc/app.conf
mode=${{MODE}}
EOF
RUN <<EOF
echo heredoc > /heredoc.txt
EOF
COPY --from=assets /assets /assets
COPY --link app/ /app/
RUN cat /app/main.txt > /main.copy
"""
FILES = {
    "requirements.txt": "flask==3.0\n",
    "tools/a.sh": "echo a\n",
    "assets/logo.txt": "logo\n",
    "assets/scratch.tmp": "temporary\n",
    "app/main.txt": "main\n",
    "app/a*b.txt": "a file with a star in its name\n",
    "other.txt": "not used\n",
    ".dockerignore": "app/a\\*b.txt\n",
}

Mutation = Callable[[pathlib.Path], None]


def edit(path: str, text: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return apply


def dockerfile(old: str, new: str) -> Mutation:
    def apply(root: pathlib.Path) -> None:
        text = (root / "Dockerfile").read_text()
        assert old in text, old
        (root / "Dockerfile").write_text(text.replace(old, new, 1))
    return apply


def bom(root: pathlib.Path) -> None:
    (root / "Dockerfile").write_text("\ufeff" + (root / "Dockerfile").read_text())


SCENARIOS: dict[str, tuple[Mutation | None, dict[str, str]]] = {
    "shapes: no change": (None, {}),
    "stage from stage: base stage RUN changed": (dockerfile("echo base >", "echo base! >"), {}),
    "stage from stage: ENV inherited from the base stage": (dockerfile("ENV LANG=C.UTF-8", "ENV LANG=C"), {}),
    "multi-line RUN: only indentation changed": (dockerfile("    && echo deps", "  && echo deps"), {}),
    "multi-line RUN: comment line inside it edited": (dockerfile("# the dependency list", "# what we install"), {}),
    "multi-line RUN: space added before the escape": (dockerfile("requirements.txt \\", "requirements.txt  \\"), {}),
    "tab instead of space after RUN": (dockerfile("RUN echo base", "RUN\techo base"), {}),
    "dependency file changed (stage chain)": (edit("requirements.txt", "flask==3.1\n"), {}),
    "global ARG re-declared in a stage changed": (dockerfile("ARG WORKROOT=/work", "ARG WORKROOT=/srv"), {}),
    "bind-mounted file changed": (edit("tools/a.sh", "echo b\n"), {}),
    "file outside every COPY and mount changed": (edit("other.txt", "still not used\n"), {}),
    "cache mount target changed": (dockerfile("target=/var/cache/demo", "target=/var/cache/demo2"), {}),
    "stage ARG via --build-arg": (None, {"LEVEL": "2"}),
    "RUN heredoc body changed": (dockerfile("echo heredoc >", "echo heredoc2 >"), {}),
    "RUN heredoc terminator renamed only": (dockerfile("RUN <<EOF\necho heredoc > /heredoc.txt\nEOF",
                                                       "RUN <<END\necho heredoc > /heredoc.txt\nEND"), {}),
    "COPY heredoc body changed": (dockerfile("mode=${MODE}", "mode=${MODE}!"), {}),
    "ENV expanded into a COPY heredoc changed": (dockerfile("ENV MODE=prod", "ENV MODE=dev"), {}),
    "--exclude'd file changed": (edit("assets/scratch.tmp", "changed temporary\n"), {}),
    "copied asset changed (COPY --from reads it)": (edit("assets/logo.txt", "logo v2\n"), {}),
    "--exclude pattern changed": (dockerfile("--exclude=*.tmp", "--exclude=*.tmpx"), {}),
    "COPY --link source changed": (edit("app/main.txt", "main v2\n"), {}),
    ".dockerignore escaped pattern: ignored file changed": (edit("app/a*b.txt", "changed, still ignored\n"), {}),
    "FROM --platform=$BUILDPLATFORM added (host platform)": (dockerfile("FROM ${BASE} AS assets",
                                                                        "FROM --platform=$BUILDPLATFORM ${BASE} AS assets"), {}),
    "WORKDIR / added (counted, no step)": (dockerfile("FROM tools AS final\n", "FROM tools AS final\nWORKDIR /\n"), {}),
    "SOURCE_DATE_EPOCH changed": (None, {"SOURCE_DATE_EPOCH": "1700000000"}),
    "byte-order mark added to the Dockerfile": (bom, {}),
}


@pytest.fixture(scope="module")
def base_tree(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The base context, built once: every scenario's head build finds its cache."""
    root = tmp_path_factory.mktemp("shapes") / "base"
    root.mkdir()
    for name, text in FILES.items():
        edit(name, text)(root)
    (root / "salt.txt").write_text(uuid.uuid4().hex + "\n")
    (root / "Dockerfile").write_text(DOCKERFILE)
    build(root, root.parent / "work", {}, "shapes")
    return root


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_explain_agrees_with_buildkit_on_labels_and_hits(scenario: str, base_tree: pathlib.Path,
                                                         tmp_path: pathlib.Path) -> None:
    mutate, head_args = SCENARIOS[scenario]
    head = tmp_path / "head"
    shutil.copytree(base_tree, head, symlinks=True)
    if mutate is not None:
        mutate(head)
    base_input = BuildInput(DirSnapshot(base_tree), "Dockerfile", ".", {}, "final")
    head_input = BuildInput(DirSnapshot(head), "Dockerfile", ".", head_args, "final")
    prediction = compare("shapes", base_input, head_input)

    actual = build(head, tmp_path / "work", head_args, "shapes")

    assert_avoidance(scenario, base_input, head_input, actual, unchanged=mutate is None and not head_args)
    assert_agreement(scenario, prediction, actual, unchanged=mutate is None and not head_args)
