"""Build the optional compiled packet walker, ``nasdaq_protocols.soup.cwalker``.

Everything else about the package is in ``pyproject.toml``; this file only adds the C extension
and makes it optional:

* built by ``pip install .`` and ``pip install -e .`` when a C compiler and the Python headers are
  present;
* when the build fails (no compiler, no headers), a one-line warning and a pure-Python install:
  ``nasdaq_protocols.soup.framing`` then uses its Python walker (``framing.WALKER`` says which);
* ``SOUPBINTCP_NO_EXTENSIONS=1`` skips the build altogether (and, at run time, the import).

The C source is in the sdist (``MANIFEST.in``), never needed by a wheel.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

NO_EXTENSIONS = bool(os.environ.get("SOUPBINTCP_NO_EXTENSIONS"))

WALKER = Extension(
    "nasdaq_protocols.soup.cwalker",
    sources=["src/nasdaq_protocols/soup/cwalker.c"],
)


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns and carries on when the extension cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            self._fallback(exc)

    @staticmethod
    def _fallback(exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"WARNING: soupbintcp: the compiled packet walker was not built ({reason}); "
            "using the pure-Python walker",
            file=sys.stderr,
        )


setup(
    ext_modules=[] if NO_EXTENSIONS else [WALKER],
    cmdclass={"build_ext": OptionalBuildExt},
)
