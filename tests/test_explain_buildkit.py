"""explain against real BuildKit: for each mutation scenario, build the base, then the head,
and check that every predicted hit/miss equals BuildKit's CACHED flag, step by step.

Each scenario writes a fresh nonce into every stage, so BuildKit's content-addressed cache
holds exactly what the base build put there (nothing from other scenarios or earlier runs).
"""

from __future__ import annotations

import os
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
PYTHON = f"{BASE_PREFIX}/python:3.11"
DOCKERFILE = f"""\
ARG BASE={DEBIAN}
FROM ${{BASE}} AS deps
RUN echo NONCE > /nonce
WORKDIR /deps
COPY requirements.txt ./
RUN cat requirements.txt > installed.txt && echo installed >> installed.txt

FROM ${{BASE}} AS docs
RUN echo NONCE > /nonce
COPY docs/ /docs/
RUN ls /docs > /docs.list

FROM ${{BASE}} AS final
ARG GREETING=hello
RUN echo NONCE > /nonce
COPY --from=deps /deps/installed.txt /opt/installed.txt
COPY app/ /app/
COPY scripts/run.sh /usr/local/bin/run.sh
RUN echo "$GREETING" > /greeting && cat /app/main.txt > /app.copy
"""
FILES = {
    "requirements.txt": "flask==3.0\n",
    "app/main.txt": "main\n",
    "app/cache.tmp": "temporary\n",
    "scripts/run.sh": "#!/bin/sh\necho run\n",
    "scripts/other.txt": "not copied\n",
    "docs/index.md": "# docs\n",
    "notes.md": "ignored notes\n",
    ".dockerignore": "notes.md\napp/*.tmp\n",
}


def edit(path: str, text: str) -> Callable[[pathlib.Path], None]:
    def apply(root: pathlib.Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return apply


def replace_in_dockerfile(old: str, new: str) -> Callable[[pathlib.Path], None]:
    def apply(root: pathlib.Path) -> None:
        dockerfile = root / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace(old, new))
    return apply


def chmod_exec(root: pathlib.Path) -> None:
    (root / "app" / "main.txt").chmod(0o755)


def touch_only(root: pathlib.Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))


SCENARIOS: dict[str, tuple[Callable[[pathlib.Path], None] | None, dict[str, str]]] = {
    "no change": (None, {}),
    "content change of a copied file": (edit("app/main.txt", "main v2\n"), {}),
    "change of a .dockerignored file": (edit("notes.md", "new notes\n"), {}),
    "lock change in a dependency stage feeding COPY --from": (edit("requirements.txt", "flask==3.1\n"), {}),
    "change of a file no COPY selects": (edit("scripts/other.txt", "still not copied\n"), {}),
    "changed ARG default": (replace_in_dockerfile("GREETING=hello", "GREETING=bonjour"), {}),
    "changed RUN text": (replace_in_dockerfile("echo installed", "echo installed!"), {}),
    "exec-bit change": (chmod_exec, {}),
    "mtime-only change": (touch_only, {}),
    "new file in a copied directory": (edit("app/new.txt", "new\n"), {}),
    "change only in a stage the target does not need": (edit("docs/index.md", "# docs v2\n"), {}),
    ".dockerignore edited": (edit(".dockerignore", "notes.md\n"), {}),
    "base image changed": (replace_in_dockerfile(f"ARG BASE={DEBIAN}", f"ARG BASE={PYTHON}"), {}),
    "different --build-arg": (None, {"GREETING": "salut"}),
}




@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_explain_agrees_with_buildkit(scenario: str, tmp_path: pathlib.Path) -> None:
    mutate, head_args = SCENARIOS[scenario]
    base = tmp_path / "base"
    base.mkdir()
    for name, text in FILES.items():
        edit(name, text)(base)
    (base / "scripts" / "run.sh").chmod(0o755)
    (base / "Dockerfile").write_text(DOCKERFILE.replace("NONCE", uuid.uuid4().hex))
    head = tmp_path / "head"
    shutil.copytree(base, head, symlinks=True)
    if mutate is not None:
        mutate(head)

    base_input = BuildInput(DirSnapshot(base), "Dockerfile", ".", {}, "final")
    head_input = BuildInput(DirSnapshot(head), "Dockerfile", ".", head_args, "final")
    prediction = compare("explain", base_input, head_input)

    build(base, tmp_path / "work", {}, "explain")
    actual = build(head, tmp_path / "work", head_args, "explain")

    assert_avoidance(scenario, base_input, head_input, actual, unchanged=mutate is None and not head_args)
    assert_agreement(scenario, prediction, actual, unchanged=mutate is None and not head_args)
