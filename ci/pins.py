"""Every external image the pipeline itself runs, pinned in one place.

The Dockerfiles' own base images are pinned in their ARG defaults (Dockerfile,
Lavalink/Dockerfile). The Dagger engine version is pinned in dagger.json and must equal the
dagger-io pin in pyproject.toml. Digests could not be resolved on the machines this project
is developed on (no registry is reachable there); add `@sha256:...` where your policy wants it.
"""

# BuildKit >= v0.26.0: fixes "blob not found" after GitHub evicts a gha cache blob that an
# index still lists; speaks the v2 GitHub Actions cache service.
BUILDKIT_IMAGE = "moby/buildkit:v0.26.2"
# The embedded registry that `dagger call build-and-push` pushes to when none is given.
REGISTRY_IMAGE = "registry:2.8.3"
# Runs the registry tag moves (ci.registry) inside the pipeline.
PYTHON_IMAGE = "python:3.11.14-slim-bookworm"
