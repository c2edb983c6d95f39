"""`modpipe config show` (the effective settings, secrets redacted) and `config check FILE`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from modpipe.core.settings import Settings, load_settings, redacted


def cmd_config(settings: Settings | None, args: argparse.Namespace) -> int:
    if args.action == "check":
        load_settings(args.file)  # raises ConfigError naming the problem
        print(f"{args.file}: valid")
        return 0
    assert settings is not None
    print(yaml.safe_dump(redacted(settings), sort_keys=False), end="")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("config", help="show the effective settings, or check a settings file")
    actions = s.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="the effective settings (file + environment), secrets redacted")
    check = actions.add_parser("check", help="validate a settings file")
    check.add_argument("file", type=Path)
    s.set_defaults(func=cmd_config)
