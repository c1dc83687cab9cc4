"""Attributes a package imports on first use, so that importing it stays light.

``nasdaq_protocols.common`` and ``nasdaq_protocols.soup`` keep their asyncio layer out of a plain
import (the sans-IO core must load no event loop) while ``from nasdaq_protocols import soup;
soup.connect_async`` keeps working: their ``__getattr__`` comes from :func:`lazy_attributes`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for names imported on first use.

    Args:
        package: the package's ``__name__``.
        where: name -> the relative module that defines it (e.g. ``{"connect_async": ".session"}``).

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``. The first access to a
        name imports its module and keeps the value in the package, so later look-ups are plain.
    """

    def __getattr__(name: str) -> object:
        try:
            module = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        namespace = vars(sys.modules[package])
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(where))

    return __getattr__, __dir__
