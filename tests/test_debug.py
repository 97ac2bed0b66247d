"""`debug`: the build's state at one Dockerfile step, reached from the cache, and what the
step's cache key saw change. Pure cuts first, then real BuildKit through the local driver
(`dimbybot-ci debug --exec`), the interactive shell under tmux, and the Dagger function
offline (its recorded selections)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from ci import debug
from ci.errors import InputError
from ci.explain.dockerfile import parse
from ci.explain.predict import BuildInput
from ci.explain.snapshot import DirSnapshot
from tests.conftest import BASE_PREFIX, LOCAL_BASES, REPO

# ARG before FROM, an unnamed stage read by index, a named one, a heredoc, a cache mount and
# a stage the final target never needs: what a cut has to keep intact.
GENERIC = """\
# syntax directives and comments stay where they are
ARG BASE=scratch-base
FROM ${BASE}
RUN echo NONCE > /tool.txt

FROM ${BASE} AS docs
RUN echo docs > /docs.txt

FROM ${BASE} AS final
ARG GREETING=hello
WORKDIR /work
COPY app/ ./app/
ENV MODE=debug
RUN --mount=type=cache,target=/var/cache/thing <<EOF
echo "$GREETING $MODE" > /work/greeting.txt
EOF
COPY --from=0 /tool.txt /work/tool.txt
RUN cat /work/app/main.txt /work/tool.txt > /work/all.txt
"""


def step_of(text: str, label: str) -> debug.Step:
    return debug.find_step(text, label)


def test_labels_are_explains_and_buildkits_printed_form_is_accepted() -> None:
    # FROM vertices are explain's to list (BuildKit shows one for stages sharing a base image).
    labels = [s.label for s in debug.steps(GENERIC) if s.instruction.keyword != "FROM"]
    assert labels == ["stage-0 2/2", "final 2/6", "final 3/6", "final 4/6", "final 5/6", "final 6/6"]
    assert debug.find_step(GENERIC, "[final  4/6]").label == "final 4/6"  # as BuildKit's progress prints it


def test_cut_before_a_step_keeps_every_earlier_line_byte_for_byte_and_drops_the_rest() -> None:
    step = step_of(GENERIC, "final 5/6")  # COPY --from=0
    cut = debug.cut(GENERIC, step, "before")
    assert GENERIC.startswith(cut.dockerfile)
    assert cut.dockerfile.rstrip().endswith("EOF")  # the heredoc RUN before it is whole
    assert "COPY --from=0" not in cut.dockerfile and "all.txt" not in cut.dockerfile
    # The cut stage is the last one, so it is what BuildKit builds (no --target needed), and its
    # steps are the original ones up to the cut.
    assert parse(cut.dockerfile).stages[-1].name == "final"
    # (The FROM is compared apart: BuildKit labels a FROM that two stages share under the stage
    # it marshals last, stage-0 here, and the cut has no stage-0.)
    kept = [s.instruction.text for s in debug.steps(GENERIC) if s.label.startswith("final ")][:3]
    assert [s.instruction.text for s in debug.steps(cut.dockerfile)] == ["FROM ${BASE} AS final", *kept]


def test_cut_after_keeps_the_step_but_not_the_instructions_that_follow() -> None:
    cut = debug.cut(GENERIC, step_of(GENERIC, "final 3/6"), "after")  # COPY app/
    assert cut.dockerfile.rstrip().endswith("COPY app/ ./app/")
    assert "ENV MODE" not in cut.dockerfile  # it follows the step: not part of the state it leaves


def test_a_run_with_a_cache_mount_says_the_mount_is_not_in_the_state_and_sets_its_build_args() -> None:
    before = debug.cut(GENERIC, step_of(GENERIC, "final 4/6"), "before")
    assert before.run_env == (("GREETING", "hello"),)  # a RUN sees declared build args as environment
    assert before.notes[0].startswith("the step will run with cache mount at /var/cache/thing: not mounted")
    after = debug.cut(GENERIC, step_of(GENERIC, "final 4/6"), "after")
    assert after.run_env == () and "mount contents are not part of the image" in after.notes[0]


@pytest.mark.parametrize(("label", "at", "message"), [
    ("final 9/9", "before", "--step: unknown step 'final 9/9' (valid: "),
    ("docs 2/2", "before", "--step: 'docs 2/2' is in stage docs, which target final does not need (it is never built; valid:"),
    ("final 2/6", "middle", "--at: must be 'before' or 'after', got 'middle'"),
])
def test_errors_a_user_will_hit_are_one_line_naming_the_argument(label: str, at: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        debug.cut(GENERIC, debug.find_step(GENERIC, label), at)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    if "valid: " in message:
        assert str(caught.value).endswith("final 2/6, final 3/6, final 4/6, final 5/6, final 6/6)")


def test_nothing_exists_before_a_from() -> None:
    from_step = next(s for s in debug.steps(GENERIC) if s.instruction.keyword == "FROM")
    with pytest.raises(InputError, match=f"^--at: {from_step.label} is the stage's FROM: nothing exists before it; use --at=after"):
        debug.cut(GENERIC, from_step, "before")


def test_step_changes_name_the_files_modes_build_args_and_environment_that_differ(tmp_path: pathlib.Path) -> None:
    base, head = tmp_path / "base", tmp_path / "head"
    for root in (base, head):
        (root / "app").mkdir(parents=True)
        (root / "app" / "main.txt").write_text("main\n")
        (root / "app" / "run.sh").write_text("echo\n")
        (root / "app" / "run.sh").chmod(0o644)
    (base / "Dockerfile").write_text(GENERIC)
    (head / "Dockerfile").write_text(GENERIC.replace("ENV MODE=debug", "ENV MODE=trace"))
    (head / "app" / "main.txt").write_text("main v2\n")
    (head / "app" / "run.sh").chmod(0o755)
    (head / "app" / "new.txt").write_text("new\n")

    def inputs(root: pathlib.Path, greeting: str) -> BuildInput:
        return BuildInput(DirSnapshot(root), "Dockerfile", ".", {"GREETING": greeting})

    copy = debug.step_changes(inputs(base, "hello"), inputs(head, "hello"), "final 3/6", "main")
    assert copy.status == "miss" and "files changed" in (copy.reason or "")
    assert [c.describe() for c in copy.changes if c.what == "file mode"] == ["file mode app/run.sh: 644 -> 755"]
    assert {(c.what, c.name) for c in copy.changes} == {("file content", "app/main.txt"), ("file mode", "app/run.sh"), ("file", "app/new.txt")}
    run = debug.step_changes(inputs(base, "hello"), inputs(head, "bonjour"), "final 4/6", "main")
    assert {(c.what, c.name, c.before, c.after) for c in run.changes} == {
        ("build arg", "GREETING", "'hello'", "'bonjour'"), ("env", "MODE", "'debug'", "'trace'")}
    unchanged = debug.step_changes(inputs(base, "hello"), inputs(base, "hello"), "final 4/6", "main")
    assert (unchanged.status, unchanged.changes) == ("hit", ())


def test_a_debug_plan_travels_as_json_unchanged() -> None:
    cut = debug.cut(GENERIC, step_of(GENERIC, "final 4/6"), "before")
    changes = debug.StepChanges("final 4/6", "main", "miss", "why", (debug.Change("env", "MODE", "'a'", "'b'"),))
    plan = debug.DebugPlan("web", cut, "*.tmp\n", changes, True)
    assert debug.DebugPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


# --- the local driver against real BuildKit -------------------------------------------------------

LOCAL_ARGS = [arg for name, image in LOCAL_BASES for arg in ("--build-arg", f"{name}={image}")]


def cli(*args: str, repo: pathlib.Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-m", "ci.cli", "debug", "--repo", str(repo), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def git_commit(repo: pathlib.Path) -> None:
    for path in repo.rglob("*"):  # git keeps only 644/755: make the working tree match what it records
        if path.is_file():
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)


def test_an_unknown_step_label_is_one_line_with_exit_2_before_anything_is_built(tmp_path: pathlib.Path) -> None:
    result = cli("--image", "bot", "--step", "deps 9/4", repo=REPO, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --step: unknown step 'deps 9/4' (valid: ")
    assert result.stderr.endswith("deps 1/4, deps 2/4, deps 3/4, deps 4/4, runtime 2/5, runtime 3/5, runtime 4/5, runtime 5/5)\n")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.docker
def test_before_the_dependency_install_the_lock_is_there_and_no_venv_after_it_both(docker: str, repo_copy: pathlib.Path) -> None:
    probe = "test -f /build/requirements.lock && echo lock=yes || echo lock=no; test -x /opt/venv/bin/python && echo venv=yes || echo venv=no"
    before = cli("--image", "bot", "--step", "deps 4/4", "--exec", probe, *LOCAL_ARGS, repo=repo_copy)
    assert before.returncode == 0, before.stderr
    assert before.stdout.split() == ["lock=yes", "venv=no"]
    assert "the step will run with cache mount at /wheels (id=dimbybot2-wheels): not mounted" in before.stderr
    after = cli("--image", "bot", "--step", "deps 4/4", "--at", "after", "--exec", probe, *LOCAL_ARGS, repo=repo_copy)
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == ["lock=yes", "venv=yes"]
    assert "mount contents are not part of the image" in after.stderr
    # The exit code of --exec is debug's; the debug image is removed afterwards.
    failed = cli("--image", "bot", "--step", "deps 4/4", "--exec", "exit 7", *LOCAL_ARGS, repo=repo_copy)
    assert failed.returncode == 7
    assert subprocess.run([docker, "image", "ls", "-q", "dimbybot2-debug/bot"], capture_output=True, text=True).stdout.strip() == ""


@pytest.mark.docker
def test_first_miss_stops_at_the_dependency_stage_after_a_lock_change_and_at_the_final_copy_after_a_code_change(
        docker: str, repo_copy: pathlib.Path) -> None:
    git_commit(repo_copy)
    lock, code = repo_copy / "bot" / "requirements.lock", repo_copy / "bot" / "dimbybot" / "__init__.py"
    original_lock, original_code = lock.read_text(), code.read_text()  # restored by writing: a checkout could change modes
    lock.write_text(original_lock + "# a comment changes the lock's content, not what it installs\n")
    result = cli("--image", "bot", "--step", "first-miss", "--exec", "ls /build", *LOCAL_ARGS, repo=repo_copy)
    assert result.returncode == 0, result.stderr
    assert "before first predicted miss deps 3/4: COPY bot/requirements.lock ./" in result.stderr
    assert "file content bot/requirements.lock:" in result.stderr
    assert result.stdout == ""  # /build exists (WORKDIR) and the lock is not there yet

    lock.write_text(original_lock)
    code.write_text(original_code + "# changed\n")
    result = cli("--image", "bot", "--step", "first-miss", "--exec", "ls /app; ls /opt/venv/bin/python", *LOCAL_ARGS, repo=repo_copy)
    assert result.returncode == 0, result.stderr
    assert "before first predicted miss runtime 5/5: COPY bot/dimbybot ./dimbybot" in result.stderr
    assert "file content bot/dimbybot/__init__.py:" in result.stderr
    assert result.stdout.split() == ["/opt/venv/bin/python"]  # the venv is in, the code is not

    code.write_text(original_code)
    none = cli("--image", "bot", "--step", "first-miss", repo=repo_copy, timeout=60)
    assert none.returncode == 2 and none.stderr.startswith("error: --step: no miss predicted for bot from ")
    assert len(none.stderr.splitlines()) == 1


@pytest.mark.docker
def test_the_cut_build_comes_entirely_from_the_real_builds_cache(docker: str, tmp_path: pathlib.Path) -> None:
    """A Dockerfile with ARG before FROM, an unnamed stage read by index, a heredoc and a cache
    mount: after the real build, the state before its last step is all cache hits."""
    from ci import local, pipeline
    from ci.config import load

    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "main.txt").write_text("main\n")
    (repo / "Dockerfile").write_text(GENERIC.replace("NONCE", uuid.uuid4().hex))  # nothing else in the cache has these keys
    (repo / "pyproject.toml").write_text('[tool.dimbybot2.images.generic]\ndockerfile = "Dockerfile"\ncontext = "."\n'
                                         f'build-args = {{ BASE = "{BASE_PREFIX}/debian:bookworm" }}\n')
    (image_plan,) = pipeline.plan(load(repo), pipeline.PipelineOptions(registry=None, tag_plan=None), root=repo)
    real = local.run_build(image_plan.request, repo, tmp_path / "work")
    assert real.ok, real.stderr_tail

    result = cli("--image", "generic", "--step", "final 6/6", "--exec", "cat /work/greeting.txt /work/tool.txt", repo=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "hello debug" and len(result.stdout.splitlines()) == 2
    reached = next(line for line in result.stderr.splitlines() if "reached in" in line)
    hits, total = reached.split("(")[1].split(" ")[0].split("/")
    assert hits == total and int(total) >= 5, reached


@pytest.mark.docker
def test_the_interactive_shell_under_tmux(docker: str, repo_copy: pathlib.Path) -> None:
    """A person's session: tmux runs `dimbybot-ci debug`, we type a command and read the screen."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is installed by .ci/run"
    session = f"dimbybot-debug-{uuid.uuid4().hex[:8]}"
    command = " ".join([sys.executable, "-m", "ci.cli", "debug", "--repo", str(repo_copy), "--image", "bot", "--step", "'deps 4/4'",
                        *(f"'{a}'" for a in LOCAL_ARGS), "; echo DEBUG-EXITED=$?; sleep 30"])
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", "-c", str(REPO), command], check=True, env=env)

    def screen() -> str:
        return subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(text: str, seconds: float = 600) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in (shown := screen()):
                return shown
            time.sleep(0.5)
        raise AssertionError(f"{text!r} never appeared; screen:\n{screen()}")

    try:
        wait_for("`exit` to leave")
        time.sleep(1)  # the shell's prompt
        subprocess.run([tmux, "send-keys", "-t", session, "echo state: $(ls /build) venv=$(ls /opt 2>/dev/null | wc -l)", "Enter"], check=True)
        shown = wait_for("state: requirements.lock venv=0", 60)
        assert "before deps 4/4" in shown
        subprocess.run([tmux, "send-keys", "-t", session, "exit 3", "Enter"], check=True)
        wait_for("DEBUG-EXITED=3", 60)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)


# --- the Dagger function, offline ------------------------------------------------------------------


def test_the_dagger_function_registers_its_arguments_and_returns_a_container() -> None:
    import dagger
    from dagger.mod.cli import load_module

    fn = load_module().get_object("Dimbybot2").functions["debug"]
    assert fn.return_type is dagger.Container
    params = fn.parameters
    assert {"image", "step", "at", "base", "build_arg", "cache_backend", "cache_ref", "gha_token", "gha_results_url"} <= set(params)
    assert params["cache_backend"].name == "cache" and params["at"].signature.default == "before"
    assert params["buildkit"].resolved_type == dagger.Service | None  # the same BuildKit as the real build, when given
    for secret in ("gha_token", "gha_results_url", "password"):
        assert params[secret].resolved_type == dagger.Secret | None
    assert all(p.doc for p in params.values())


def test_the_dagger_build_runs_the_cut_dockerfile_with_the_real_builds_cache_imports_and_no_export() -> None:
    from dagger import dag

    from ci import cache, main, render
    from ci.config import ProjectConfig
    from ci.model import Output
    from ci.pipeline import PipelineOptions, plan

    (real,) = plan(ProjectConfig(), PipelineOptions(registry=None, tag_plan=None, images=("bot",), build_args=(("GREETING", "hi"),),
                                                    cache=cache.CacheOptions(gha_tokens=True)))
    text = (REPO / "Dockerfile").read_text()
    prepared = debug.DebugPlan("bot", debug.cut(text, debug.find_step(text, "deps 4/4"), "before"), None, None, False)
    creds = main.Credentials(gha_token=dag.set_secret("t", "tok-value"), gha_results_url=dag.set_secret("u", "https://results"))
    sels = [(f.name, dict(f.args)) for f in main.debug_build_container(real.request, prepared, dag.directory(), creds,
                                                                        main.buildkit_service())._ctx.selections]
    files = next(args["source"] for name, args in sels if name == "withDirectory" and args["path"] == main.DOCKERFILES)
    assert [(f.name, dict(f.args)) for f in files._ctx.selections][1:] == [("withNewFile", {"path": "Dockerfile", "contents": prepared.cut.dockerfile})]
    argv = sels[-1][1]["args"][4:]
    assert argv[argv.index("--local") + 1:argv.index("--local") + 4] == [f"context={main.SRC}", "--local", f"dockerfile={main.DOCKERFILES}"]
    assert argv[argv.index("--opt") + 1] == "filename=Dockerfile" and "target=" not in " ".join(argv)
    real_argv = render.buildctl(real.request, root=main.SRC)
    imports = [real_argv[i + 1] for i, a in enumerate(real_argv) if a == "--import-cache"]
    assert imports == ["type=gha,scope=dimbybot2-bot,version=2"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--import-cache"] == imports
    assert "--export-cache" not in argv  # a partial build never replaces the cache's index
    assert [a for a in argv if a.startswith("build-arg:")] == [a for a in real_argv if a.startswith("build-arg:")]
    assert argv[argv.index("--output") + 1] == Output("oci", dest=f"{main.OUT}/image.tar").csv()
    assert sorted(args["name"] for name, args in sels if name == "withSecretVariable") == ["ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN"]
    assert "tok-value" not in repr(sels)


def test_the_dagger_planner_runs_the_core_on_the_source_with_git() -> None:
    from dagger import dag

    from ci import main, pins

    sels = [(f.name, dict(f.args)) for f in main.debug_plan_container(dag.directory(), dag.directory(), "bot", "first-miss", "after",
                                                                       "main", ["A=1"])._ctx.selections]
    assert sels[1] == ("from", {"address": pins.PYTHON_IMAGE})
    assert sels[-1][1]["args"] == ["python", "-m", "ci.debug", "--repo", "/repo", "--image", "bot", "--step", "first-miss",
                                   "--at", "after", "--base", "main", "--build-arg", "A=1"]
    assert str(main._tool_error("error: --step: unknown step 'x' (valid: a)\n")) == "--step: unknown step 'x' (valid: a)"
