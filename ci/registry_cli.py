"""Registry steps inside the pipeline (standard library only):

  python -m ci.registry_cli check HOST                          are the credentials accepted?
  python -m ci.registry_cli retag HOST REPOSITORY DIGEST TAG...  move tags to DIGEST

Credentials come from REGISTRY_USERNAME / REGISTRY_PASSWORD (a Dagger secret variable),
never from argv. Tags move in the order given (the plan puts `latest` last); each is read
back and must resolve to DIGEST. One line per tag on stdout; exit 1 with the reason.
"""

from __future__ import annotations

import os
import sys

from .errors import PipelineError
from .registry import Registry


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "check":
        try:
            Registry(argv[1], os.environ.get("REGISTRY_USERNAME") or None, os.environ.get("REGISTRY_PASSWORD") or None).check_auth()
        except PipelineError as err:
            print(f"--password: {err}", file=sys.stderr)
            return 1
        return 0
    if len(argv) < 4 or argv[0] != "retag":
        print("usage: python -m ci.registry_cli check HOST | retag HOST REPOSITORY DIGEST TAG...", file=sys.stderr)
        return 2
    _, host, repository, digest, *followers = argv
    registry = Registry(host, os.environ.get("REGISTRY_USERNAME") or None, os.environ.get("REGISTRY_PASSWORD") or None)
    try:
        for tag in followers:
            registry.move_tag(repository, digest, tag)
            print(f"{host}/{repository}:{tag} -> {digest}")
    except PipelineError as err:
        print(f"retag failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
