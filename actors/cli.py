"""The ``shipper`` command: :mod:`shipper.cli`'s commands plus those that need Ray.

``run`` (:mod:`actors.run`) ships files, stdin or the config's sources; ``status``
(:mod:`actors.status`) shows a running shipper; ``reload`` (:mod:`actors.reload`)
makes it read its configuration again. Ray is imported only when one of them
runs, so ``shipper`` itself stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shipper.cli import main as cli_main
from shipper.cli import register_subcommand

__all__ = ["main"]


def _status_arguments(p: argparse.ArgumentParser) -> None:
    from actors.status import add_status_arguments

    add_status_arguments(p)


def _status(args: argparse.Namespace) -> int:
    from actors.status import status_command

    return status_command(args)


register_subcommand(
    "status",
    "per node of a running shipper: actors, queues, breaker, DLQ depth, entries/s",
    _status_arguments,
    _status,
)


def _reload_arguments(p: argparse.ArgumentParser) -> None:
    from actors.reload import add_reload_arguments

    add_reload_arguments(p)


def _reload(args: argparse.Namespace) -> int:
    from actors.reload import reload_command

    return reload_command(args)


register_subcommand(
    "reload",
    "make a running shipper run read its configuration file again (like SIGHUP)",
    _reload_arguments,
    _reload,
)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    from actors.run import add_run_arguments

    add_run_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from actors.run import run_command

    return run_command(args)


register_subcommand(
    "run",
    "ship JSON lines or text lines from files, stdin or the config's sources to Kafka",
    _run_arguments,
    _run,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shipper`` script."""
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover - python -m actors.cli
    sys.exit(main())
