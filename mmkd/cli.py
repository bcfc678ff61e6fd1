"""The `mmkd` command: one parser, one module per subcommand in `mmkd/commands/`.

Each subcommand module defines `register(subparsers) -> None`, which adds its parser and sets
`func=run` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mmkd import __version__
from mmkd.errors import MMKDError

SUBCOMMANDS = ["corpus", "init_student", "cache_teacher", "pipeline"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmkd",
        description="Distil an English teacher into a multilingual student (MMKD, Li et al. 2022).",
    )
    parser.add_argument("--version", action="version", version=f"mmkd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"mmkd.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMKDError as err:
        print(f"mmkd {args.command}: error: {err}", file=sys.stderr)
        return 2
