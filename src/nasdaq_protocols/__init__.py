"""SoupBinTCP for Python, under the import name of the ``nasdaq_protocols.soup`` API it implements.

This distribution (``soupbintcp``) provides ``nasdaq_protocols.soup`` and
``nasdaq_protocols.common``; it replaces the ``soup`` part of the ``nasdaq-protocols``
package and cannot be installed beside it.

Logging: every module logs to ``logging.getLogger(__name__)``. Until the application configures
logging (a handler on the root logger, or on ``nasdaq_protocols``), errors (an exception raised
by an application's handler, with its traceback) go to standard error, as Python's own last
resort does; nothing else is printed. Once the application configures logging, everything goes
where it says and nothing more is printed here.
"""

from __future__ import annotations

import logging
import sys

__version__ = "0.1.0"
__all__ = ["__version__"]


class _ErrorsUntilConfigured(logging.Handler):
    """Python's last-resort behaviour, kept for ERROR records: a library that only added a
    ``NullHandler`` would hide an application handler's traceback when nothing is configured."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers or len(logging.getLogger(__name__).handlers) > 1:
            return  # the application configured logging: its handlers have the record
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a closed stderr must not break the library
            self.handleError(record)


logging.getLogger(__name__).addHandler(_ErrorsUntilConfigured())
