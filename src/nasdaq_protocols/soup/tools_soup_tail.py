"""The ``nasdaq-soup-tail`` command at the module path nasdaq-protocols 1.3.0 gives it.

``from nasdaq_protocols.soup.tools_soup_tail import command`` is the click command (the
``nasdaq-soup-tail`` console script). It lives in :mod:`nasdaq_protocols.soup.cli.compat_tail`,
an alias of ``soup tail`` with the original's options and output.
"""

from __future__ import annotations

from .cli.compat_tail import command

__all__ = ["command"]
