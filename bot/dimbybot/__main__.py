"""Entry point: `python -m dimbybot` runs the bot; `--self-check` only checks and exits."""

from __future__ import annotations

import argparse
import sys

from . import __version__, config, selfcheck


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dimbybot", description="Discord music bot (Lavalink v4).")
    parser.add_argument("--self-check", action="store_true",
                        help="validate the configuration and check that Lavalink answers, then exit 0/1")
    parser.add_argument("--version", action="version", version=f"dimbybot {__version__}")
    args = parser.parse_args(argv)
    if args.self_check:
        code, message = selfcheck.run()
        print(message, file=sys.stdout if code == 0 else sys.stderr)
        return code
    try:
        settings = config.load()
    except config.ConfigError as err:
        print(f"dimbybot: configuration: {err}", file=sys.stderr)
        return 2
    from .bot import run  # imported late: discord.py is only needed to really run

    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
