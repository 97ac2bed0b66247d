"""The Dagger skin: thin functions that assemble lazy containers from the core, then await.

Lazy helpers (module-level functions returning Containers/Services) are split from the
functions that await them, so what they would run can be checked without an engine.
"""

from __future__ import annotations

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, function, object_type

from . import __version__
from .config import from_pyproject_text

# What never reaches the pipeline from the repository (the Dockerfiles' own .dockerignore
# files then decide what reaches BuildKit).
SOURCE_IGNORE = [".git", ".venv", "sdk", "**/__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "bench/results"]


@object_type
class Dimbybot2:
    """Build, cache, tag, push, verify and deploy the dimbybot2 images."""

    source: Annotated[
        dagger.Directory,
        Doc("The repository to build (default: the repository this module lives in)"),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
    ]

    @function
    def version(self) -> str:
        """The version of this pipeline module."""
        return __version__

    @function
    async def images(self) -> list[str]:
        """The names of the images this repository builds (from [tool.dimbybot2] or the defaults)."""
        text = await self.source.file("pyproject.toml").contents()
        return list(from_pyproject_text(text).names)
