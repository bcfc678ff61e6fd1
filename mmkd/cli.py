"""The `mmkd` command: one parser, one module per subcommand in `mmkd/commands/`.

The table below owns each subcommand's name and one-line help; only the module of the subcommand
being run is imported (the others pull in torch, transformers or datasets, seconds of start-up).
Each module defines `configure(parser) -> None`, which adds its arguments and sets `func=run`
(a callable taking the parsed namespace and returning an exit code), and `leading_options=NAME` when
its REMAINDER argument NAME may start with options (argparse leaves those unparsed: `main` puts them
back in front).

`main` is every entry point's way in: `mmkd ...`, and `python -m mmkd.train`, `mmkd.profiling` and
`mmkd.teacher_cache` (what `deepspeed --module` runs), which call it with their subcommand's name.
It drops the launcher's --local_rank=N (ranks come from the environment) and turns an MMKDError into
one line `mmkd <command>: error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mmkd import __version__
from mmkd.errors import MMKDError

COMMANDS = {  # name -> (module in mmkd.commands, one-line help)
    "corpus": ("corpus", "build, import or inspect a parallel corpus"),
    "init-student": ("init_student", "make a multilingual student from the corpus and an encoder"),
    "cache-teacher": ("cache_teacher", "run the frozen teacher once over a corpus split, cache its outputs"),
    "train": ("train", "distil the teacher into the student on DeepSpeed"),
    "pipeline": ("pipeline", "the main job: corpus -> student -> teacher cache -> train -> evaluate"),
    "profile": ("profile", "time N training steps and write a throughput report"),
    "eval": ("eval", "evaluate teacher and students: translation retrieval, downstream tasks"),
}
LAUNCHER_ARGUMENT = ("--local_rank=", "--local-rank=")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the arguments of the subcommand named in `argv` (none: help lines only)."""
    parser = argparse.ArgumentParser(
        prog="mmkd",
        description="Distil an English teacher into a multilingual student (MMKD, Li et al. 2022).",
    )
    parser.add_argument("--version", action="version", version=f"mmkd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_line) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_line, formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            importlib.import_module(f"mmkd.commands.{module}").configure(subparser)
    return parser


def without_local_rank(argv: Sequence[str]) -> list[str]:
    """`argv` without the --local_rank=N (or --local-rank=N) that the deepspeed launcher passes before a
    program's own arguments; mmkd reads RANK, LOCAL_RANK and WORLD_SIZE from the environment instead."""
    return [arg for arg in argv if not arg.startswith(LAUNCHER_ARGUMENT)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand `argv` names (default: sys.argv[1:]); returns its exit code, 2 on an MMKDError."""
    argv = without_local_rank(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # options before a subcommand's first positional: only one that names where they go takes them
        if getattr(args, "leading_options", None) is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        setattr(args, args.leading_options, [*unknown, *getattr(args, args.leading_options)])
    try:
        return int(args.func(args) or 0)
    except MMKDError as err:
        print(f"mmkd {args.command}: error: {err}", file=sys.stderr)
        return 2
