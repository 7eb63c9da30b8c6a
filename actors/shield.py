"""Keep the Ray that ``shipper run`` starts out of its caller's process group.

A shell, ``timeout``, job control and process supervisors stop a command by sending a
signal to its whole process group (``kill -TERM -PGID``). A local Ray started by the
command (its GCS, raylet and workers) is in that group too: it would die at once,
while the command itself is still draining, and what was in flight would be lost.

:func:`shield` forks before anything else starts. The parent stays in the caller's
group and only relays stop signals (SIGTERM, SIGINT, SIGHUP) to the child, then exits
with the child's code. The child starts a session of its own and does the work, Ray
included, so a signal to the caller's group reaches the parent alone, which passes it
on once: the child drains as it would for a signal of its own. Should the parent die
(even by SIGKILL), the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``), which
drains as well.

Linux only (``prctl``); elsewhere, and with ``SHIPPER_NO_SHIELD=1``, the work runs in
the calling process as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["shield"]

_PR_SET_PDEATHSIG = 1
_RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def shield(work: Callable[[], int]) -> int:
    """Run ``work`` in a child process in a session of its own; return its exit code.
    The child never returns from here: it exits with ``work()``'s code."""
    if not sys.platform.startswith("linux") or os.environ.get("SHIPPER_NO_SHIELD") == "1":
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        _run_child(work, parent)
    # The parent: relay stop signals, wait, report the child's end as our own.
    for sig in _RELAYED:
        signal.signal(sig, lambda signum, _frame: _relay(child, signum))
    _pid, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _relay(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def _run_child(work: Callable[[], int], parent: int) -> None:
    code = 1
    try:
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
        code = work()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
