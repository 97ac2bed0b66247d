# The dimbybot2 bot image. Build context: the repository root (see .dockerignore, an
# allow-list: only bot/ reaches the builder).
#
# Cache boundaries, from the slowest-changing to the fastest:
#   deps stage   depends only on the base image and bot/requirements.lock
#   runtime      base image + a passwd line, then the installed venv, then the code LAST,
#                so a code change rebuilds only the final COPY.
# No `# syntax=` line on purpose: it would make BuildKit pull the dockerfile frontend image;
# the built-in frontend of BuildKit >= 0.13 already supports cache mounts.

# Pinned by exact tag; tests replace it with a local stand-in (no registry is reachable there).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
WORKDIR /build
COPY bot/requirements.lock ./
# - --require-hashes --no-deps: the lock is the whole truth, so this layer depends on it only.
# - The wheels live in a cache mount (a wheelhouse, never part of the image): `pip download`
#   fetches only the wheels it does not hold yet, and the install reads nothing but the
#   wheelhouse. Wheels no longer in the lock are dropped, so the mount holds exactly the
#   lock's wheels: the pipeline carries it across fresh runners (ci/package_cache.py), and a
#   lock change downloads only the packages it changed. (pip's own HTTP cache would depend on
#   the index's cache headers; this does not.)
# - --no-compile, then compileall with unchecked-hash pycs: byte code without source mtimes
#   in it, so two builds of the same lock give the same bytes.
# - pip itself is removed from the venv: not needed at run time, and its metadata differs.
RUN --mount=type=cache,target=/wheels,id=dimbybot2-wheels,sharing=locked \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip download --disable-pip-version-check --no-input --dest /wheels \
      --require-hashes --no-deps --only-binary=:all: -r requirements.lock \
 && /opt/venv/bin/python -m pip install --disable-pip-version-check --no-input --no-compile --no-index \
      --find-links /wheels --require-hashes --no-deps --only-binary=:all: -r requirements.lock \
 && for wheel in /wheels/*.whl; do \
      grep -q "sha256:$(sha256sum "$wheel" | cut -d ' ' -f 1)" requirements.lock || rm -f "$wheel"; \
    done \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip \
 && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
 && rm -f /opt/venv/lib/python*/site-packages/*.dist-info/INSTALLER

FROM ${PYTHON_IMAGE} AS runtime
# A fixed passwd/group line instead of useradd: useradd stamps the day into /etc/shadow.
RUN echo 'dimbybot:x:10001:10001:dimbybot:/app:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'dimbybot:x:10001:' >>/etc/group
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
COPY bot/dimbybot ./dimbybot
USER 10001:10001
# The health check fails for real: a bad configuration or a Lavalink that does not answer
# the authenticated GET /version makes --self-check exit 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-m", "dimbybot", "--self-check"]
ENTRYPOINT ["python", "-m", "dimbybot"]
