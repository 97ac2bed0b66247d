"""`python -m ci.explain --repo DIR [--base REV] [--head REV] [--image NAME]...`: JSON on stdout.

Standard library only, so it runs in any Python container (the Dagger `explain` function
uses it); people use `dimbybot-ci explain`, which has tables and help.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ..errors import InputError
from .run import explain_repository


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci.explain")
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path("."))
    parser.add_argument("--base")
    parser.add_argument("--head")
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--target")
    parser.add_argument("--build-arg", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        pairs = dict(item.split("=", 1) for item in args.build_arg if "=" in item)
        results = explain_repository(args.repo, args.base, args.head, args.image, target=args.target, build_args=pairs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"images": [r.to_dict() for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
