"""SoupBinTCP for Python, under the import name of the ``nasdaq_protocols.soup`` API it implements.

This distribution (``soupbintcp``) provides ``nasdaq_protocols.soup`` and
``nasdaq_protocols.common``; it replaces the ``soup`` part of the ``nasdaq-protocols``
package and cannot be installed beside it.
"""

from __future__ import annotations

import logging

# A library never prints: records go nowhere until the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["__version__"]
