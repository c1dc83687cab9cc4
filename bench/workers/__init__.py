"""Benchmark worker processes: ``ours``, ``raw`` (and the pre-framed sender) and ``ref``.

Each module is a small command line, ``<module> ROLE [options]``. A server role prints
``{"port": N}`` as its first stdout line, serves until its stdin closes, then prints one JSON line of
measurements and exits. A client role prints one JSON line of measurements and exits. Everything
else (logs, errors) goes to stderr.
"""
