"""pytest plugin the conformance runner loads (``-p conformance.plugin``) into the upstream test run.

It does four things and nothing else; the upstream tests and their ``conftest.py`` run unchanged:

* refuses to run when the reference distribution itself is importable (the run would test it,
  not this package) and reports which ``nasdaq_protocols`` is under test;
* marks each test of :data:`conformance.expected_failures.EXPECTED_FAILURES`
  ``xfail(strict=True)`` with its reason;
* removes upstream's own ``xfail`` marks from the files of
  :data:`conformance.expected_failures.UPSTREAM_XFAIL_DROPPED`;
* fails the run when an entry of the list names a test the upstream files do not contain, and
  sums up the expected failures, with their reasons, at the end.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from conformance.expected_failures import EXPECTED_FAILURES, UPSTREAM_XFAIL_DROPPED

REFERENCE_DISTRIBUTION = "nasdaq-protocols"


def _module_under_test() -> str:
    import nasdaq_protocols

    return str(Path(nasdaq_protocols.__file__).resolve().parent)


def pytest_configure(config: pytest.Config) -> None:
    try:
        version = importlib.metadata.version(REFERENCE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return
    raise pytest.UsageError(
        f"{REFERENCE_DISTRIBUTION} {version} is installed in this environment: the conformance"
        " suite would test it instead of this package. Run it from a virtualenv without it."
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"conformance: nasdaq_protocols under test from {_module_under_test()}"


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _selects_whole_files(config: pytest.Config) -> bool:
    """True when the run was asked for whole files, with no -k/-m: then every listed test of a
    collected file must have been collected."""
    if config.option.keyword or config.option.markexpr:
        return False
    return all("::" not in str(arg) for arg in config.args)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so the stale check sees every test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    collected = {item.nodeid for item in items}
    for item in items:
        if _file_of(item.nodeid) in UPSTREAM_XFAIL_DROPPED:
            for node in item.listchain():
                node.own_markers[:] = [mark for mark in node.own_markers if mark.name != "xfail"]
        reason = EXPECTED_FAILURES.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    if _selects_whole_files(config):
        files = {_file_of(nodeid) for nodeid in collected}
        stale = sorted(n for n in EXPECTED_FAILURES if _file_of(n) in files and n not in collected)
        if stale:
            raise pytest.UsageError(
                "conformance/expected_failures.py lists tests the upstream files do not contain:\n  "
                + "\n  ".join(stale)
            )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    expected = [report.nodeid for report in terminalreporter.stats.get("xfailed", [])]
    if not expected:
        return
    terminalreporter.section("expected failures (conformance/expected_failures.py)")
    for nodeid in expected:
        reason = EXPECTED_FAILURES.get(nodeid, "(not listed: an upstream xfail mark)")
        terminalreporter.write_line(f"XFAIL {nodeid}\n      {reason}")
