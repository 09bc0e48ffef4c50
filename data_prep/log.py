"""Notes and warnings of the library: one logger, ``deepsdf_ad``, whose records print as one line on stderr,
``deepsdf-ad: note: ...`` (INFO) or ``deepsdf-ad: warning: ...`` (WARNING), as the command line shows them.

Library users silence them with ``logging.getLogger("deepsdf_ad").setLevel(logging.ERROR)``, or route them into
their own logging with ``logger.handlers.clear(); logger.propagate = True``.
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
