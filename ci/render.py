"""Render a BuildRequest as client arguments: buildctl (the Dagger path) or docker buildx
(the local path). Pure translation: no defaults, no policy.
"""

from __future__ import annotations

import posixpath

from .model import BuildRequest


def buildx(request: BuildRequest, root: str = ".", metadata_file: str | None = None,
           progress: str = "rawjson") -> list[str]:
    """`docker buildx build ...`, paths resolved against the repository root `root`."""
    argv = ["docker", "buildx", "build", f"--progress={progress}",
            "--file", posixpath.join(root, request.dockerfile),
            # Attestations get a new invocation id every build: keep the image comparable.
            "--provenance=false", "--sbom=false"]
    if request.target:
        argv += ["--target", request.target]
    for key, value in request.all_build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for spec in request.cache_from:
        argv += ["--cache-from", spec.csv()]
    for spec in request.cache_to:
        argv += ["--cache-to", spec.csv()]
    if request.no_cache:
        argv.append("--no-cache")
    argv += ["--output", request.output.csv()]
    if metadata_file:
        argv += ["--metadata-file", metadata_file]
    argv.append(posixpath.normpath(posixpath.join(root, request.context)))
    return argv


def buildctl(request: BuildRequest, root: str = "/src", metadata_file: str | None = None,
             progress: str = "rawjson") -> list[str]:
    """`buildctl build ...` (the address comes from BUILDKIT_HOST), for a source tree at `root`."""
    dockerfile = posixpath.join(root, request.dockerfile)
    argv = ["buildctl", "build", "--frontend", "dockerfile.v0", f"--progress={progress}",
            "--local", f"context={posixpath.normpath(posixpath.join(root, request.context))}",
            "--local", f"dockerfile={posixpath.dirname(dockerfile)}",
            "--opt", f"filename={posixpath.basename(dockerfile)}"]
    if request.target:
        argv += ["--opt", f"target={request.target}"]
    for key, value in request.all_build_args:
        argv += ["--opt", f"build-arg:{key}={value}"]
    for spec in request.cache_from:
        argv += ["--import-cache", spec.csv()]
    for spec in request.cache_to:
        argv += ["--export-cache", spec.csv()]
    if request.no_cache:
        argv.append("--no-cache")
    # `cacheonly` is buildx's word for "no exporter": buildkitd has no such exporter and fails
    # the build (moby/buildkit worker/base/worker.go). Without --output it still builds every step.
    if request.output.kind != "cacheonly":
        argv += ["--output", request.output.csv()]
    if metadata_file:
        argv += ["--metadata-file", metadata_file]
    return argv
