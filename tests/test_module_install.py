"""The module installs the way the Dagger engine installs it (no engine needed).

What the engine does, read in dagger/dagger's source (v0.21):
- `core/schema/modulesource.go` loads the module's context directory from the host with the
  include list `["dagger.json", "*", *dagger.json's include]` and `.gitignore` applied
  (`internal/fsutil/filter.go`: moby/patternmatcher rules, gitignore-style: a pattern also
  matches everything under a directory it matches, `!` negates, the last match wins).
- `sdk/python/runtime/main.go` vendors the Python SDK into `./sdk`, drops `.venv`, then runs
  `uv pip install -e ./sdk -e .` and `uv pip check` (no uv.lock / requirements.lock here),
  and the runtime imports the `dagger.mod` entry point's main object.

This test does the same on a filtered copy: the SDK in `./sdk` is the pinned dagger-io's own
source distribution from PyPI (the same tree the runtime vendors, gen.py included for that
release; its uv workspace's `codegen` member, which only the SDK's dev group uses, is an empty
stand-in); every other dependency comes from PyPI as in the engine; uv is the runtime's
version (pinned in the `test` extra).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

from ci.explain.ignore import IgnoreRules
from ci.verify import extract_files
from tests.conftest import REPO

# What the Python runtime removes from the source before installing (discovery.go DirExcludes).
RUNTIME_DROPS = (".venv", "sdk")


def included(path: str, patterns: list[str]) -> bool:
    """Is `path` in the context? The engine's filter is moby/patternmatcher's, the same matcher
    the project already implements for .dockerignore (ci.explain.ignore, checked against
    patternmatcher's own test cases): a path is kept when the last pattern matching it or one of
    its parent directories is a positive one (`!` excludes)."""
    return IgnoreRules.from_patterns(patterns).ignored(path)


def engine_include_list() -> list[str]:
    module = json.loads((REPO / "dagger.json").read_text())
    assert module.get("source", ".") == ".", "the include list below assumes source '.'"
    return ["dagger.json", "*", *module.get("include", []), *(f"!{p}" for p in module.get("exclude", []))]


def repository_files() -> list[str]:
    """The files the dagger CLI would send before include patterns: everything `.gitignore` keeps."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode()
    return sorted(p for p in listed.split("\0") if p and (REPO / p).is_file())


def module_context(dest: pathlib.Path) -> list[str]:
    patterns = engine_include_list()
    copied = [p for p in repository_files() if included(p, patterns) and p.split("/")[0] not in RUNTIME_DROPS]
    for path in copied:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, dest / path)
    return copied


def test_the_include_filter_reads_like_the_engine() -> None:
    patterns = ["dagger.json", "*", "!bot", "!*.md", "!.git"]
    assert included("ci/main.py", patterns) and included("pyproject.toml", patterns)
    assert not included("bot/dimbybot/music.py", patterns)  # a directory's pattern covers its files
    assert not included("README.md", patterns) and not included(".git/HEAD", patterns)
    assert included("README.md", [*patterns, "README.md"])  # the last match wins


def test_everything_pyproject_names_survives_the_module_filter(tmp_path: pathlib.Path) -> None:
    copied = set(module_context(tmp_path))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    named = [project["project"]["readme"], *project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]]
    named += [f"{package}/__init__.py" for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]]
    missing = [name for name in named if name not in copied]
    assert not missing, f"dagger.json's include drops files pyproject.toml needs: {missing}"
    assert not {p for p in copied if p.split("/")[0] in ("bot", "tests", "Lavalink", ".git", "bench")}


def test_every_file_the_module_reads_from_its_own_source_survives_the_filter() -> None:
    """`dag.current_module().source()` is the include-filtered tree: a path the Dagger skin reads
    from it (`module_source.file("deploy/remote-deploy.sh")`, ...) that the filter drops would fail
    only on a real engine."""
    read = set(re.findall(r'module_source\.(?:file|directory)\("([^"]+)"\)', (REPO / "ci" / "main.py").read_text()))
    assert {"ci", "deploy/remote-deploy.sh"} <= read
    patterns = engine_include_list()
    kept = [p for p in repository_files() if included(p, patterns)]
    for path in read:
        assert any(k == path or k.startswith(path + "/") for k in kept), f"dagger.json's include drops {path}"


def test_the_filtered_module_installs_like_the_python_runtime_and_loads_its_main_object(tmp_path: pathlib.Path) -> None:
    uv = shutil.which("uv", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is in the test extra (pip install -e '.[test]')"
    mod = tmp_path / "src"
    mod.mkdir()
    module_context(mod)

    # ./sdk: the pinned dagger-io's source distribution, as the runtime vendors the SDK source.
    pin = importlib.metadata.version("dagger-io")
    downloads = tmp_path / "downloads"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "dagger-io",
                    f"dagger-io=={pin}", "-d", str(downloads)], check=True, capture_output=True, timeout=600)
    (sdist,) = downloads.glob("dagger_io-*.tar.gz")
    extract_files(sdist, tmp_path / "sdist")  # no extractall(filter=...): Debian's Python 3.11.2 lacks it
    (unpacked,) = (tmp_path / "sdist").iterdir()
    (mod / "sdk").mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "src"):
        source = unpacked / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, mod / "sdk" / name)
    # The SDK's uv workspace names its code generator (`codegen/`, vendored by the runtime but not
    # in the sdist); only its dev group uses it, so an empty member of that name stands in for it.
    (mod / "sdk" / "codegen").mkdir()
    (mod / "sdk" / "codegen" / "pyproject.toml").write_text('[project]\nname = "codegen"\nversion = "0"\n')

    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_LINK_MODE": "copy", "UV_NATIVE_TLS": "1",
           "UV_COMPILE_BYTECODE": "1", "VIRTUAL_ENV": str(tmp_path / "venv")}
    env.pop("PYTHONPATH", None)
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(tmp_path / "venv")], check=True, env=env,
                   capture_output=True)
    install = subprocess.run([uv, "pip", "install", "-e", "./sdk", "-e", "."], cwd=mod, env=env, capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([uv, "pip", "check"], cwd=mod, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # Loaded from outside the source tree, so only the installed (editable) package can answer.
    python = tmp_path / "venv" / "bin" / "python"
    load = subprocess.run([str(python), "-c", "from dagger.mod.cli import load_module; "
                           "obj = load_module().get_object('Dimbybot2'); print(obj.cls.__module__, sorted(obj.functions))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr[-3000:]
    module, functions = load.stdout.split(" ", 1)
    assert module == "ci.main" and "build_and_push" in functions
    assert str(mod) in subprocess.run([str(python), "-c", "import ci; print(ci.__file__)"], cwd=tmp_path, env=env,
                                      capture_output=True, text=True).stdout
