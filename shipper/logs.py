"""Where the libraries' and the actors' log lines go: a file, never the user's terminal.

librdkafka reports every connection attempt, retry and purge through its log
callback; on a terminal those lines tear progress output apart and read like errors
while they are routine. The failures that matter reach the shipper another way
(delivery reports and the error callback become acknowledgements, DLQ records,
breaker transitions and metrics), so librdkafka's lines go to the file named by
``logging.file`` in the config, where they are there for a post-mortem.

The shipper's own actors log there too (:func:`route_shipper_logs`): an actor's
warning would otherwise reach the driver's terminal through Ray, prefixed with the
actor's class and pid. What a user must know reaches them as the command's own lines
(``shipper run`` says when a breaker opens and why it waits), as metrics, ``/ready`` and
``shipper status``; the driver process itself keeps logging to stderr.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["append_traceback", "librdkafka_logger", "route_shipper_logs"]

_lock = threading.Lock()
_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def librdkafka_logger(path: str | None = None) -> logging.Logger:
    """The logger to pass as librdkafka's ``logger`` setting.

    With ``path`` its lines are appended to that file (created with its folder); with
    None, until some caller names a file, they are dropped. It never propagates to the
    root logger, so nothing of it reaches stderr. One file per process: the first
    one named.
    """
    logger = logging.getLogger("shipper.librdkafka")
    with _lock:
        if path and all(isinstance(h, logging.NullHandler) for h in logger.handlers):
            for h in list(logger.handlers):
                logger.removeHandler(h)  # a file was named after all: it replaces nothing
        if not logger.handlers:
            logger.propagate = False
            handler: logging.Handler = logging.NullHandler()
            if path:
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
                    handler.setFormatter(logging.Formatter(_FORMAT))
                except OSError as exc:
                    logging.getLogger("shipper").warning(
                        "cannot write librdkafka's log to %s (%s); its lines are dropped",
                        path,
                        exc,
                    )
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
    return logger


def route_shipper_logs(path: str) -> None:
    """In an actor's process: the ``shipper`` loggers (INFO and up) append to ``path``
    and no longer reach stderr. Once per process; a path that cannot be written leaves
    them as they were."""
    logger = logging.getLogger("shipper")
    with _lock:
        if any(getattr(h, "_shipper_route", False) for h in logger.handlers):
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        except OSError:
            return
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._shipper_route = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def append_traceback(path: str, what: str, exc: BaseException) -> str | None:
    """Append ``what`` and ``exc``'s traceback to the file ``path`` (created with its
    folder); the file's path, or None when it cannot be written."""
    import time
    import traceback

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {os.getpid()} {what}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return os.path.abspath(path)
