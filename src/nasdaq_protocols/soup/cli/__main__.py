"""``python -m nasdaq_protocols.soup.cli``: the ``soup`` command."""

from __future__ import annotations

from . import main

main()
