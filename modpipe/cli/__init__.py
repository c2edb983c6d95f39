"""The roof: the `modpipe` command line. Only this package prints, parses arguments, calls
`asyncio.run` or traps signals.

Each module registers its subcommands (`register(sub)`) and holds thin `cmd_*` functions:
parse, build the component from settings, run it, return the exit code. Where a new
command goes: a module here with a `register`, listed in COMMANDS below.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modpipe.cli import (
    bench,
    config,
    cost,
    dataset,
    demo,
    doctor,
    finetune,
    flywheel,
    plan,
    produce,
    promote,
    quality,
    review,
    rules,
    shadow,
    stack,
    statements,
    transparency,
    workers,
)
from modpipe.core.errors import ModpipeError
from modpipe.core.logs import configure_logging
from modpipe.core.settings import CONFIG_ENV, load_settings

COMMANDS = (
    stack,
    workers,
    produce,
    demo,
    cost,
    plan,
    quality,
    bench,
    config,
    review,
    dataset,
    flywheel,
    finetune,
    rules,
    promote,
    shadow,
    statements,
    transparency,
    doctor,
)


def parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="modpipe", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default: ${CONFIG_ENV}, else the packaged configs/default.yaml)",
    )
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `modpipe` console script."""
    args = parser().parse_args(argv)
    configure_logging(args.log_level)  # text until the settings say otherwise
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "stack":  # refused connections while a broker boots are expected
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.command == "config" and args.action == "check":
            return int(args.func(None, args))  # validates its own file
        settings = load_settings(args.config)
        configure_logging(
            args.log_level,
            settings.logging.format,
            settings.logging.per_record_limit,
            settings.logging.per_record_interval_s,
        )
        return int(args.func(settings, args))
    except ModpipeError as exc:
        print(f"modpipe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
