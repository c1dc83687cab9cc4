"""``python -m conformance [--list] [--timeout S] [PYTEST ARGS...]``: run the upstream soup tests.

Downloads (once) and unpacks nasdaq-protocols 1.3.0's soup tests and runs them against the
installed ``nasdaq_protocols`` (see :mod:`conformance`). Arguments it does not know go to pytest;
a positional one (``tests/test_soup_core.py``, a node id) replaces the default three files.
``--list`` prints the expected failures with their reasons and exits.

Exit status: pytest's (0 when every test passed or failed as expected), 3 when the sdist could not
be fetched or unpacked, 124 when the run timed out.
"""

from __future__ import annotations

import argparse
import sys

from conformance import (
    REFERENCE_VERSION,
    RUN_TIMEOUT,
    ConformanceSetupError,
    extract_tests,
    fetch_sdist,
    run_tests,
)
from conformance.expected_failures import EXPECTED_FAILURES

SETUP_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    """Run the conformance suite; return the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description=f"Run nasdaq-protocols {REFERENCE_VERSION}'s soup tests against this package.",
        epilog="Other arguments are passed to pytest.",
    )
    parser.add_argument("--list", action="store_true", help="print the expected failures and exit")
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT, help="seconds before the run is killed (%(default)s)"
    )
    options, pytest_args = parser.parse_known_args(argv)
    if options.list:
        for nodeid, reason in EXPECTED_FAILURES.items():
            print(f"{nodeid}\n    {reason}")
        return 0
    try:
        workdir = extract_tests(fetch_sdist())
    except ConformanceSetupError as exc:
        print(f"conformance: FAILED to set up: {exc}", file=sys.stderr)
        return SETUP_FAILED
    status = run_tests(workdir, pytest_args, timeout=options.timeout)
    verdict = "passed" if status == 0 else f"FAILED (pytest exit status {status})"
    print(f"conformance: nasdaq-protocols {REFERENCE_VERSION} soup tests against this package: {verdict}")
    return status


if __name__ == "__main__":
    sys.exit(main())
