"""Notes and warnings of the library: one logger, ``deepsdf_ad``, whose records print as one line on stderr,
``deepsdf-ad: note: ...`` (INFO) or ``deepsdf-ad: warning: ...`` (WARNING), as the command line shows them.

Library users silence them with ``logging.getLogger("deepsdf_ad").setLevel(logging.ERROR)``, or route them
into their own logging with ``logger.handlers.clear(); logger.propagate = True``.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("deepsdf_ad")


class _Stderr(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (not the one at import: tests and tools swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = "warning" if record.levelno >= logging.WARNING else "note"
            print(f"deepsdf-ad: {kind}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a logging call never raises
            self.handleError(record)


if not LOGGER.handlers:
    LOGGER.addHandler(_Stderr())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def note(message: str) -> None:
    LOGGER.info(message)


def warn(message: str) -> None:
    LOGGER.warning(message)


BAR_DELAY = 2.0
"""Seconds of work before a progress bar appears: quick work shows none."""


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool):
    """A tqdm bar on stderr for work that may take long; shown only when ``enabled`` (the library's functions
    default to off, the commands turn it on unless ``--quiet``), when stderr is a terminal (no bar in logs or
    pipes) and once the work has taken :data:`BAR_DELAY` seconds; cleared when closed. Use it as a context."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, delay=BAR_DELAY,
                leave=False)
