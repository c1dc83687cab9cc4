"""The benchmark suite (issue 7): ``python -m bench`` from the repository root.

Every scenario is measured three ways in the same run: OURS (this package), the REFERENCE
implementation (``nasdaq-protocols==1.3.0``, from its own virtualenv, in subprocesses) and a
RAW-ASYNCIO baseline (a bare ``asyncio.Protocol`` that only walks length fields: the practical
limit of Python on this machine). Servers and clients run in separate processes.

Layout:

* ``__main__`` / :mod:`bench.runner`: the command line, which runs the scenarios chosen.
* :mod:`bench.rows`: the table's columns, rows and cells, and the targets; :mod:`bench.context`:
  the sizes (full and quick) and what a scenario runs with (implementations, repetitions).
* ``bench/scenarios/``: one module per scenario (``stream``, ``cli``, ``roundtrip``, ``replay``,
  ``fanout``, ``memory``, ``walker``), each making its table rows.
* :mod:`bench.report`: the printed table and BENCHMARKS.md, with "What is not met, and why".
* :mod:`bench.harness`: starting worker processes and reading their one-line JSON reports.
* :mod:`bench.wire`: SoupBinTCP bytes and process measurements, standard library only, so that the
  reference implementation's interpreter can import it too.
* ``bench/workers/``: the processes themselves, one module per implementation (``ours``, ``raw``,
  ``ref``).

This package must import nothing but the standard library: the reference workers import
``bench.wire`` from an interpreter where our ``nasdaq_protocols`` does not exist.
"""
