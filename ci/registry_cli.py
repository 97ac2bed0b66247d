"""Registry steps inside the pipeline (standard library only):

  python -m ci.registry_cli check [--plain-http] HOST [REPOSITORY...]
      are the credentials (or anonymous access) accepted, and may they push to each REPOSITORY?
  python -m ci.registry_cli retag [--plain-http] HOST REPOSITORY PUSHED_TAG DIGEST TAG...
      confirm PUSHED_TAG resolves to DIGEST (what the build reported), then move each TAG to it

Credentials come from REGISTRY_USERNAME / REGISTRY_PASSWORD (a Dagger secret variable),
never from argv. `--plain-http` is the pipeline's decision for a registry that speaks HTTP
only (tags.plain_http), the same one its push made. Tags move in the order given (the plan
puts `latest` last); each is read back and must resolve to DIGEST. One line per tag on
stdout; exit 1 with the reason on stderr, 2 on bad usage.
"""

from __future__ import annotations

import os
import sys

from .config import check_text
from .errors import InputError, PipelineError
from .registry import Registry
from .tags import validate_host, validate_tag

USAGE = ("usage: python -m ci.registry_cli check [--plain-http] HOST [REPOSITORY...] | "
         "retag [--plain-http] HOST REPOSITORY PUSHED_TAG DIGEST TAG...")


def _registry(host: str, plain_http: bool) -> Registry:
    return Registry(host, os.environ.get("REGISTRY_USERNAME") or None, os.environ.get("REGISTRY_PASSWORD") or None,
                    insecure=plain_http)


def main(argv: list[str]) -> int:
    verb, *rest = argv or [""]
    plain_http = "--plain-http" in rest
    rest = [a for a in rest if a != "--plain-http"]
    try:
        if rest:
            validate_host(rest[0], "HOST")  # never option-like, never longer than DNS allows
        if verb == "check":
            for value in rest[1:]:
                check_text(value, "REPOSITORY")
        if verb == "retag":
            for argument, value in zip(("REPOSITORY", "PUSHED_TAG", "DIGEST"), rest[1:4], strict=False):
                check_text(value, argument)
            for tag in rest[4:]:
                validate_tag(tag, "TAG")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if verb == "check" and rest:
        try:
            _registry(rest[0], plain_http).check_auth(rest[1:])
        except PipelineError as err:
            print(f"--password: {err}", file=sys.stderr)
            return 1
        return 0
    if verb != "retag" or len(rest) < 4:
        print(USAGE, file=sys.stderr)
        return 2
    host, repository, pushed_tag, digest, *followers = rest
    try:
        moved = _registry(host, plain_http).promote(repository, pushed_tag, digest, followers)
    except PipelineError as err:
        print(f"moving tags failed: {err}", file=sys.stderr)
        return 1
    for tag in followers:
        print(f"{host}/{repository}:{tag} -> {moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
