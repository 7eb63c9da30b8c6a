"""Where the libraries' own log lines go: a file, never the user's terminal.

librdkafka reports every connection attempt, retry and purge through its log
callback; on a terminal those lines tear progress output apart and read like errors
while they are routine. The failures that matter reach the shipper another way
(delivery reports and the error callback become acknowledgements, DLQ records,
breaker transitions and metrics), so librdkafka's lines go to the file named by
``logging.file`` in the config, where they are there for a post-mortem.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["librdkafka_logger"]

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
