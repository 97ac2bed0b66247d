"""explain's building blocks: Dockerfile parsing and labels, .dockerignore matching, and the
predictor on directories (the real-BuildKit agreement is in test_explain_buildkit.py)."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from ci.explain.dockerfile import DockerfileError, expand, parse
from ci.explain.ignore import IgnoreRules
from ci.explain.predict import BuildInput, compare
from ci.explain.snapshot import DirSnapshot, GitSnapshot
from tests.conftest import REPO

TWO_STAGES = """\
ARG BASE=debian:bookworm
FROM ${BASE} AS deps
WORKDIR /w
COPY requirements.txt ./
RUN pip install -r requirements.txt

FROM ${BASE}
ARG GREETING=hello
ENV MODE=prod
COPY --from=deps /w /w
COPY app/ /app/
RUN echo $GREETING
CMD ["run"]
"""


def test_labels_follow_buildkit_numbering() -> None:
    dockerfile = parse(TWO_STAGES)
    deps, final = dockerfile.stages
    assert [s.keyword for s in deps.steps] == ["FROM", "WORKDIR", "COPY", "RUN"]
    assert (dockerfile.label_prefix(deps), dockerfile.label_prefix(final)) == ("deps ", "stage-1 ")
    assert len(final.steps) == 4  # ARG, ENV and CMD are not steps
    single = parse("FROM x\nRUN a\n")
    assert single.label_prefix(single.stages[0]) == ""


def test_continuations_comments_and_flags() -> None:
    dockerfile = parse("FROM x\nRUN --mount=type=cache,target=/c \\\n    # a comment\n    echo a \\\n && echo b\n")
    run = dockerfile.stages[0].steps[1]
    assert run.flag("mount") == "type=cache,target=/c"
    assert run.rest == "echo a  && echo b"  # joined verbatim: the space before each escape is kept
    assert run.text == "RUN --mount=type=cache,target=/c     echo a  && echo b"
    with pytest.raises(DockerfileError, match="before the first FROM"):
        parse("RUN x\n")


def test_expansion_like_the_frontend() -> None:
    assert expand("${A}/x/$B/${C:-dflt}/${A:+alt}", {"A": "1", "B": "2"}) == "1/x/2/dflt/alt"


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    ("*\n!bot/dimbybot/\n", "bot/dimbybot/x.py", False),
    ("*\n!bot/dimbybot/\n", "tests/t.py", True),
    ("**/__pycache__\n", "a/b/__pycache__/m.pyc", True),
    ("docs\n", "docs/deep/file.md", True),
    ("/build\n", "build/x", True),
    ("*.md\n!README.md\n", "README.md", False),
    ("*.md\n!README.md\n", "CHANGES.md", True),
    ("a/*/c\n", "a/b/c", True),
    ("a/*/c\n", "a/b/d/c", False),
])
def test_dockerignore_semantics(patterns: str, path: str, ignored: bool) -> None:
    assert IgnoreRules.parse(patterns).ignored(path) is ignored


def write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def pair(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    files = {"Dockerfile": TWO_STAGES, "requirements.txt": "a==1\n", "app/main.py": "print(1)\n",
             "notes.txt": "x\n", ".dockerignore": "notes.txt\n"}
    return write(tmp_path / "base", files), write(tmp_path / "head", files)


def explain(base: pathlib.Path, head: pathlib.Path, **args: str) -> dict[str, tuple[str, str | None]]:
    result = compare("t", BuildInput(DirSnapshot(base), "Dockerfile", "."), BuildInput(DirSnapshot(head), "Dockerfile", ".", args))
    return {s.label: (s.status, s.reason) for s in result.steps}


def test_no_change_hits_everywhere(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    assert {status for status, _ in explain(*pair).values()} == {"hit"}


def test_app_change_misses_from_its_copy_and_names_the_file(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    base, head = pair
    (head / "app" / "main.py").write_text("print(2)\n")
    result = explain(base, head)
    assert result["stage-1 3/4"] == ("miss", "files changed: app/main.py (content changed)")
    assert result["stage-1 4/4"] == ("miss", "follows the miss at stage-1 3/4")
    assert all(result[f"deps {k}/4"][0] == "hit" for k in (2, 3, 4))


def test_ignored_file_and_mtime_changes_hit(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    base, head = pair
    (head / "notes.txt").write_text("changed\n")
    import os

    os.utime(head / "app" / "main.py", (1, 1))
    assert {status for status, _ in explain(base, head).values()} == {"hit"}


def test_changed_arg_default_misses_at_the_first_run_after_it(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    base, head = pair
    (head / "Dockerfile").write_text(TWO_STAGES.replace("GREETING=hello", "GREETING=hi"))
    result = explain(base, head)
    assert result["stage-1 3/4"][0] == "hit"
    status, reason = result["stage-1 4/4"]
    assert status == "miss" and reason is not None and "GREETING: 'hello' -> 'hi'" in reason


def test_exec_bit_counts(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    base, head = pair
    (head / "app" / "main.py").chmod(0o755)
    assert explain(base, head)["stage-1 3/4"] == ("miss", "files changed: app/main.py (mode 644 -> 755)")


def test_lock_change_rebuilds_the_dependency_stage_and_what_copies_from_it(pair: tuple[pathlib.Path, pathlib.Path]) -> None:
    base, head = pair
    (head / "requirements.txt").write_text("a==2\n")
    result = explain(base, head)
    assert result["deps 3/4"][0] == "miss" and result["deps 4/4"] == ("miss", "follows the miss at deps 3/4")
    status, reason = result["stage-1 2/4"]
    assert status == "miss" and reason is not None
    assert reason.startswith("copies from stage deps, which was rebuilt (its step deps 3/4 missed)")


def test_git_revision_against_the_working_tree(tmp_path: pathlib.Path) -> None:
    repo = write(tmp_path / "repo", {"Dockerfile": "FROM x\nCOPY a.txt /\nRUN true\n", "a.txt": "1\n"})

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base", "--allow-empty")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "files")
    (repo / "a.txt").write_text("2\n")
    result = compare("t", BuildInput(GitSnapshot(repo, "HEAD"), "Dockerfile", "."), BuildInput(DirSnapshot(repo), "Dockerfile", "."))
    assert [(s.label, s.status) for s in result.steps] == [("1/3", "hit"), ("2/3", "miss"), ("3/3", "miss")]
    assert result.steps[1].changed_files == ("a.txt",) and result.first_miss == "2/3"


def test_the_repository_bot_image_misses_only_its_code_copy_after_a_code_change(tmp_path: pathlib.Path) -> None:
    import shutil

    for side in ("base", "head"):
        (tmp_path / side).mkdir()
        for name in ("Dockerfile", ".dockerignore"):
            shutil.copy2(REPO / name, tmp_path / side / name)
        shutil.copytree(REPO / "bot", tmp_path / side / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    music = tmp_path / "head" / "bot" / "dimbybot" / "music.py"
    music.write_text(music.read_text() + "# changed\n")
    (tmp_path / "head" / "README.md").write_text("not sent to the builder\n")
    result = compare("bot", BuildInput(DirSnapshot(tmp_path / "base"), "Dockerfile", "."),
                     BuildInput(DirSnapshot(tmp_path / "head"), "Dockerfile", "."))
    # Both stages start FROM the same image: one vertex, shown under the label marshalled last,
    # the source of runtime's `COPY --from=deps` (tests/data/progress/cold.rawjson: `[build 1/4] FROM`).
    assert [s.label for s in result.steps][:4] == ["deps 1/4", "deps 2/4", "deps 3/4", "deps 4/4"]
    assert "runtime 1/5" not in [s.label for s in result.steps]
    assert [(s.label, s.changed_files) for s in result.steps if s.status == "miss"] == [
        ("runtime 5/5", ("bot/dimbybot/music.py",))]


def labels(tmp_path: pathlib.Path, dockerfile: str) -> list[str]:
    from ci.explain.predict import model

    write(tmp_path, {"Dockerfile": dockerfile, "x": "x\n"})
    return [s.label for s in model(BuildInput(DirSnapshot(tmp_path), "Dockerfile", "."))]


def test_a_stage_built_from_a_stage_has_no_from_step(tmp_path: pathlib.Path) -> None:
    text = "FROM img AS base\nRUN echo a\nFROM base AS deps\nCOPY x /x\nRUN cat /x\n"
    assert labels(tmp_path, text) == ["base 1/2", "base 2/2", "deps 1/2", "deps 2/2"]


def test_scratch_and_workdir_root_are_counted_as_buildkit_counts_them(tmp_path: pathlib.Path) -> None:
    # FROM scratch is no step; WORKDIR / counts in the total but makes no step.
    assert labels(tmp_path, "FROM scratch\nCOPY x /x\nWORKDIR /\nWORKDIR /w\n") == ["1/3", "2/3"]


def explain_pair(tmp_path: pathlib.Path, base_text: str, head_text: str, files: dict[str, str] | None = None,
                 head_files: dict[str, str] | None = None, **args: str) -> dict[str, str]:
    base = write(tmp_path / "b", {"Dockerfile": base_text, **(files or {})})
    head = write(tmp_path / "h", {"Dockerfile": head_text, **(files or {}), **(head_files or {})})
    result = compare("t", BuildInput(DirSnapshot(base), "Dockerfile", "."), BuildInput(DirSnapshot(head), "Dockerfile", ".", args))
    return {s.label: s.status for s in result.steps}


def test_copy_exclude_keeps_excluded_files_out_of_the_key(tmp_path: pathlib.Path) -> None:
    text = "FROM img\nCOPY --exclude=*.tmp app/ /app/\n"
    files = {"app/a.txt": "a\n", "app/b.tmp": "b\n"}
    assert explain_pair(tmp_path, text, text, files, {"app/b.tmp": "changed\n"})["2/2"] == "hit"
    assert explain_pair(tmp_path / "2", text, text, files, {"app/a.txt": "changed\n"})["2/2"] == "miss"


def test_add_checksum_and_heredoc_bodies_are_part_of_the_key(tmp_path: pathlib.Path) -> None:
    add = "FROM img\nADD --checksum=sha256:{} https://example.invalid/f /f\n"
    assert explain_pair(tmp_path, add.format("a" * 64), add.format("b" * 64))["2/2"] == "miss"
    heredoc = "FROM img\nRUN <<EOF\necho {}\nEOF\n"
    assert explain_pair(tmp_path / "2", heredoc.format(1), heredoc.format(2))["2/2"] == "miss"
    assert explain_pair(tmp_path / "3", heredoc.format(1), heredoc.format(1).replace("EOF", "END"))["2/2"] == "hit"


def test_source_date_epoch_changes_workdir_keys(tmp_path: pathlib.Path) -> None:
    text = "FROM img\nWORKDIR /app\nRUN true\n"
    assert explain_pair(tmp_path, text, text, SOURCE_DATE_EPOCH="1")["2/3"] == "miss"
