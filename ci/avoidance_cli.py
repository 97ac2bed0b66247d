"""Build avoidance as pipeline steps (standard library only), for the Dagger path: the same
core calls the local driver makes (ci.avoidance, ci.avoidance_registry), one verb each.

  python -m ci.avoidance_cli decide [--plain-http] [--no-skip] HOST REPOSITORY --root DIR --dockerfile F
         --context C --builder B [--target T] [--build-arg K=V]... [--source-date-epoch N] [--rewrite-timestamp]
         [--buildkitd-config FILE]
      compute the input key of the build (base images resolved through FILE's mirrors first, as
      the BuildKit it configures pulls them) and look it up in HOST/REPOSITORY: one JSON line
      {"skip", "key", "detail", "image", "commit", "cache"} (image/commit/cache of the record found)
  python -m ci.avoidance_cli skip [--plain-http] HOST REPOSITORY DIGEST TAG...
      point the first TAG (the SHA tag) at DIGEST, then the others in order, each read back
  python -m ci.avoidance_cli record [--plain-http] HOST REPOSITORY KEY DIGEST COMMIT [CACHE]
      record KEY beside the pushed image DIGEST (the `inputs-<KEY>` artifact)

Credentials come from REGISTRY_USERNAME / REGISTRY_PASSWORD, never argv. `decide` never fails
for what only means "build as usual" (its detail says why); exit 1 when `skip` or `record` fail,
2 on bad input (one line naming the argument, before any registry call).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

from . import avoidance_registry
from .config import check_text
from .errors import InputError, PipelineError
from .explain.snapshot import DirSnapshot
from .model import BuildRequest, Output
from .pipeline import parse_build_args, validate_epoch
from .registry import Registry
from .tags import validate_host, validate_tag

_KEY = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError("usage", message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ci.avoidance_cli", add_help=False)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    decide = verbs.add_parser("decide", add_help=False)
    for verb in (decide, skip := verbs.add_parser("skip", add_help=False), record := verbs.add_parser("record", add_help=False)):
        verb.add_argument("--plain-http", action="store_true")
        verb.add_argument("host")
        verb.add_argument("repository")
    decide.add_argument("--no-skip", action="store_true")
    for name in ("--root", "--dockerfile", "--context", "--builder"):
        decide.add_argument(name, required=True)
    decide.add_argument("--target")
    decide.add_argument("--build-arg", action="append", default=[])
    decide.add_argument("--source-date-epoch", type=int)
    decide.add_argument("--rewrite-timestamp", action="store_true")
    decide.add_argument("--buildkitd-config")
    skip.add_argument("digest")
    skip.add_argument("tags", nargs="+")
    for name in ("key", "digest", "commit"):
        record.add_argument(name)
    record.add_argument("cache", nargs="?", default="")
    return parser


def _checked(argv: list[str]) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    validate_host(args.host, "HOST")
    check_text(args.repository, "REPOSITORY")
    if args.verb == "decide":
        for name in ("root", "dockerfile", "context", "builder", "target", "buildkitd_config"):
            if getattr(args, name) is not None:
                check_text(getattr(args, name), f"--{name.replace('_', '-')}")
        args.build_args = parse_build_args(args.build_arg)
        validate_epoch(args.source_date_epoch)
        try:
            text = pathlib.Path(args.buildkitd_config).read_text() if args.buildkitd_config else ""
        except (OSError, UnicodeDecodeError) as err:
            raise InputError("--buildkitd-config", f"cannot be read: {err.__class__.__name__}") from None
        args.mirrors = avoidance_registry.mirrors_from_buildkitd_toml(text)
    else:
        if not _DIGEST.match(args.digest):
            raise InputError("DIGEST", "must be sha256:<64 hex>")
        if args.verb == "skip":
            args.tags = [validate_tag(tag, "TAG") for tag in args.tags]
        else:
            if not _KEY.match(args.key):
                raise InputError("KEY", "must be 64 lower-case hex characters")
            check_text(args.commit, "COMMIT")
            check_text(args.cache, "CACHE")
    return args


def main(argv: list[str]) -> int:
    try:
        args = _checked(argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    registry = Registry(args.host, os.environ.get("REGISTRY_USERNAME") or None, os.environ.get("REGISTRY_PASSWORD") or None,
                        insecure=args.plain_http)
    if args.verb == "decide":
        request = BuildRequest(image="avoidance", context=args.context, dockerfile=args.dockerfile,
                               output=Output("push", rewrite_timestamp=args.rewrite_timestamp), target=args.target,
                               build_args=tuple(sorted(args.build_args)), source_date_epoch=args.source_date_epoch)
        resolve = avoidance_registry.RegistryResolver(args.host, registry.username, registry.password, mirrors=args.mirrors)
        decision = avoidance_registry.decide(DirSnapshot(pathlib.Path(args.root)), request, args.builder, resolve, registry,
                                             args.repository, args.no_skip)
        found = decision.record
        print(json.dumps({"skip": decision.skip, "key": decision.key.key, "detail": decision.detail,
                          "image": found.image if found else None, "commit": found.commit if found else None,
                          "cache": found.cache if found else None}))
        return 0
    try:
        if args.verb == "skip":
            digest = avoidance_registry.skip(registry, args.repository, avoidance_registry.Record("", args.digest, "", ""), args.tags)
            for tag in args.tags:
                print(f"{args.host}/{args.repository}:{tag} -> {digest}")
        else:
            avoidance_registry.record(registry, args.repository, avoidance_registry.Record(args.key, args.digest, args.commit, args.cache))
            print(f"{args.host}/{args.repository}:inputs-{args.key} -> {args.digest}")
    except PipelineError as err:
        print(f"{args.verb} failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
