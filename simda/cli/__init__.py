"""The ``simda`` command: one module per subcommand, each registering its own parser.

Every command that loads a model takes ``--seed``, ``--device``, ``--dtype``, ``--output``
(default ``out/``), ``--quiet`` and ``--debug``, shows progress bars on long loops and writes
mp4 + gif + png with the settings beside them (JSON). User errors print one line and exit with
code 2 (``--debug`` shows the traceback). Every command sets the CPU thread policy of
``simda.cpu`` before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from simda import cpu
from simda.cli import (
    bench,
    common,
    demo,
    edit,
    env,
    eval_toyworld,
    generate,
    superres,
    toyworld,
    train,
)
from simda.errors import SimDAError

#: the subcommands, in the order ``simda --help`` lists them
COMMANDS = (demo, generate, edit, train, superres, toyworld, eval_toyworld, bench, env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simda", description="SimDA text-to-video tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _check_paths(args) -> None:
    """The folders a command will write, checked before it starts (those it uses only)."""
    report = getattr(args, "report", None)
    if report:
        common.check_output_folder(os.path.dirname(os.path.abspath(report)), "--report's folder")
    if getattr(args, "output", None) is not None and not report:
        common.check_output_folder(args.output)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = bench.split_args(argv) if argv[:1] == ["bench"] else build_parser().parse_args(argv)
    try:
        # A command owns its process, so it sets the CPU policy before torch loads; called from
        # a program that already imported torch, the process is that program's.
        if "torch" not in sys.modules:
            cpu.cpu_threads()
        with (
            warnings.catch_warnings(),
            common.logging_for(args.command, getattr(args, "quiet", False)),
        ):
            warnings.showwarning = common.one_line_warnings(args.command)
            _check_paths(args)
            return args.func(args)
    except SimDAError as exc:
        if args.debug:
            raise
        print(f"simda {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simda {args.command}: interrupted", file=sys.stderr)
        return 130
