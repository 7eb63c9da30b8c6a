"""The ``shipper`` command line: one argparse parser, one function per subcommand.

Subcommands live in a registry (:data:`SUBCOMMANDS`) so another module can add its own
with :func:`register_subcommand` without touching the parser code: ``dlq ...``
(:mod:`shipper.cli.dlq`) registers here, and the commands that need Ray (``run``)
register from :mod:`actors.cli`, which is what the ``shipper`` script runs. This
package imports neither Ray nor the actors.

Every handler takes the parsed arguments and returns the process exit code:

* 0 - success,
* 2 - the user's input is wrong (bad config, bad arguments); details on stderr.

Nothing here prints a secret: configs are shown through :func:`shipper.config.to_yaml`,
which masks them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shipper import __version__
from shipper.cli.dlq import register as register_dlq
from shipper.config import check_files, load_config, to_yaml
from shipper.errors import ConfigError

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "SUBCOMMANDS",
    "Subcommand",
    "build_parser",
    "main",
    "register_subcommand",
]

EXIT_OK = 0
EXIT_USAGE = 2


@dataclass(frozen=True)
class Subcommand:
    """One ``shipper <name>`` command: how to declare its arguments and how to run it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Registered subcommands by name, in the order ``--help`` lists them.
SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> Subcommand:
    """Add (or replace) a subcommand; :func:`build_parser` picks it up."""
    command = Subcommand(name, help, add_arguments, run)
    SUBCOMMANDS[name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    """The whole parser, with one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="shipper", description="Ship log entries to Apache Kafka on Ray actors."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shipper`` script; returns the exit code instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help/--version (0) and on usage errors (2); report the
        # code so callers (and tests) get an int either way.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run(args)


# --------------------------------------------------------------------------- check-config


def _check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="YAML config file to check")
    parser.add_argument(
        "--skip-file-checks",
        action="store_true",
        help="do not check that the TLS files exist (for configs meant for another machine)",
    )


def check_config(args: argparse.Namespace) -> int:
    """Print the effective config (secrets masked) or every problem; 0 or 2."""
    return _check_config(args.file, args.skip_file_checks, sys.stdout, sys.stderr)


def _check_config(path: str, skip_files: bool, out: TextIO, err: TextIO) -> int:
    try:
        # A name on the command line is always a file, never YAML text.
        cfg = load_config(Path(path))
    except ConfigError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    out.write(to_yaml(cfg))
    problems = [] if skip_files else check_files(cfg)
    if problems:
        print(str(ConfigError(problems, path)), file=err)
        return EXIT_USAGE
    print(f"{path}: configuration is valid", file=err)
    return EXIT_OK


register_subcommand(
    "check-config",
    "validate a config file and print the effective configuration (secrets masked)",
    _check_config_arguments,
    check_config,
)

register_dlq(register_subcommand)  # shipper dlq stats|list|replay|purge|export

if __name__ == "__main__":  # pragma: no cover - python -m shipper.cli
    sys.exit(main())
