"""Which images the pipeline builds, with what settings.

Defaults describe this repository (the bot and Lavalink). Another repository can list its
own images in its pyproject.toml:

    [tool.dimbybot2.images.web]
    dockerfile = "web/Dockerfile"      # relative to the repository root
    context = "web"                    # default: the Dockerfile's directory
    repository = "acme-web"            # image name in the registry (default: <project>-<name>)
    scope = "acme-web"                 # cache scope (default: the repository name)
    target = "runtime"                 # optional
    build-args = { PYTHON_IMAGE = "python:3.12-slim" }

Listing any image replaces the defaults (so a repository never inherits ours by accident).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InputError

PROJECT = "dimbybot2"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


# Every value a person or a workflow gives (options, arguments, values read from the environment)
# passes here first, in both skins: nothing longer than this, no control character (CR, LF, NUL
# ...), valid UTF-8 (no surrogate-escaped bytes from a non-UTF-8 argv), and not option-like
# (`--help`, `-x`, `--`) unless a value may be. Values are never repeated in the error: they can
# be secrets, or 120k characters long.
MAX_TEXT = 4096
_MAX_PATH_PART = 255


def check_text(value: str, argument: str, *, limit: int = MAX_TEXT, option_like: bool = False) -> str:
    """`value` if it is usable text; InputError naming `argument` otherwise."""
    if len(value) > limit:
        raise InputError(argument, f"too long ({len(value)} characters, at most {limit})")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InputError(argument, "not valid UTF-8")
    if bad := next((c for c in value if not c.isprintable() and c != " "), None):
        raise InputError(argument, f"contains a control character ({ord(bad):#04x}); give one line of text")
    if not option_like and value.startswith("-"):
        raise InputError(argument, "looks like an option (starts with '-'); give the value itself")
    return value


def check_path(path: str | os.PathLike[str], argument: str) -> pathlib.Path:
    """A path given as an option: usable text, and no part longer than a file name may be."""
    text = check_text(os.fspath(path), argument)
    if any(len(part) > _MAX_PATH_PART for part in text.split("/")):
        raise InputError(argument, f"a path component is longer than {_MAX_PATH_PART} characters")
    return pathlib.Path(text)


def check_inputs(values: Mapping[str, object], option_like: Iterable[str] = ()) -> None:
    """check_text / check_path on every given value (str, path, or a list of them; None and
    other types are skipped), in order: the first bad one raises InputError naming its argument."""
    may = set(option_like)
    for argument, value in values.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, pathlib.PurePath):
                check_path(item, argument)
            elif isinstance(item, str):
                check_text(item, argument, option_like=argument in may)


def check_output_files(paths: Mapping[str, pathlib.Path | None]) -> None:
    """Files written after the work is done: their directory must exist before it starts."""
    for argument, path in paths.items():
        if path is not None and (path.is_dir() or not path.resolve().parent.is_dir()):
            raise InputError(argument, f"{path} is a directory, or its directory does not exist")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """One image the pipeline builds."""

    name: str
    dockerfile: str
    context: str
    repository: str
    scope: str
    target: str | None = None
    build_args: tuple[tuple[str, str], ...] = ()


DEFAULT_IMAGES: tuple[ImageConfig, ...] = (
    ImageConfig(name="bot", dockerfile="Dockerfile", context=".",
                repository=f"{PROJECT}-bot", scope=f"{PROJECT}-bot"),
    ImageConfig(name="lavalink", dockerfile="Lavalink/Dockerfile", context="Lavalink",
                repository=f"{PROJECT}-lavalink", scope=f"{PROJECT}-lavalink"),
)


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    images: tuple[ImageConfig, ...] = DEFAULT_IMAGES

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.images)

    def image(self, name: str, argument: str = "--image") -> ImageConfig:
        for image in self.images:
            if image.name == name:
                return image
        raise InputError(argument, f"unknown image {name!r} (known: {', '.join(self.names)})")

    def select(self, names: list[str] | tuple[str, ...] | None, argument: str = "--image") -> tuple[ImageConfig, ...]:
        """The images to work on, in configured order; None or empty means all of them."""
        if not names:
            return self.images
        wanted = {self.image(n, argument).name for n in names}
        return tuple(i for i in self.images if i.name in wanted)

    def check_files(self, root: pathlib.Path, argument: str = "--image") -> None:
        """Fail early, naming the image, when a Dockerfile or context is missing."""
        for image in self.images:
            if not (root / image.dockerfile).is_file():
                raise InputError(argument, f"image {image.name!r}: Dockerfile {image.dockerfile!r} not found in {root}")
            if not (root / image.context).is_dir():
                raise InputError(argument, f"image {image.name!r}: context {image.context!r} is not a directory in {root}")


def _image_from_table(name: str, table: Mapping[str, Any]) -> ImageConfig:
    where = f"[tool.{PROJECT}.images.{name}]"
    if not _NAME.match(name):
        raise InputError(where, "image names are lower-case letters, digits, '-' and '_'")
    known = {"dockerfile", "context", "repository", "scope", "target", "build-args"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(where, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    dockerfile = str(table.get("dockerfile", "Dockerfile"))
    context = str(table.get("context", str(pathlib.PurePosixPath(dockerfile).parent)))
    repository = str(table.get("repository", f"{PROJECT}-{name}"))
    if not _REPOSITORY.match(repository):
        raise InputError(where, f"repository {repository!r} is not a valid image repository name")
    build_args = table.get("build-args", {})
    if not isinstance(build_args, Mapping):
        raise InputError(where, "build-args must be a table of NAME = value")
    return ImageConfig(
        name=name, dockerfile=dockerfile, context=context, repository=repository,
        scope=str(table.get("scope", repository)), target=table.get("target"),
        build_args=tuple(sorted((str(k), str(v)) for k, v in build_args.items())),
    )


def from_pyproject_text(text: str) -> ProjectConfig:
    data = tomllib.loads(text)
    images = data.get("tool", {}).get(PROJECT, {}).get("images")
    if not images:
        return ProjectConfig()
    return ProjectConfig(images=tuple(_image_from_table(n, t) for n, t in images.items()))


def load(root: pathlib.Path) -> ProjectConfig:
    """Read the configuration of the repository at `root` (defaults when none is given)."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return ProjectConfig()
    return from_pyproject_text(pyproject.read_text())
