"""The benchmark suite (issue 7): ``python -m bench`` from the repository root.

Every scenario is measured three ways in the same run: OURS (this package), the REFERENCE
implementation (``nasdaq-protocols==1.3.0``, from its own virtualenv, in subprocesses) and a
RAW-ASYNCIO baseline (a bare ``asyncio.Protocol`` that only walks length fields: the practical
limit of Python on this machine). Servers and clients run in separate processes.

Layout:

* ``__main__`` / :mod:`bench.runner`: the command line, the scenarios, the table and BENCHMARKS.md.
* :mod:`bench.harness`: starting worker processes and reading their one-line JSON reports.
* :mod:`bench.wire`: SoupBinTCP bytes and process measurements, standard library only, so that the
  reference implementation's interpreter can import it too.
* ``bench/workers/``: the processes themselves, one module per implementation (``ours``, ``raw``,
  ``ref``).

This package must import nothing but the standard library: the reference workers import
``bench.wire`` from an interpreter where our ``nasdaq_protocols`` does not exist.
"""
