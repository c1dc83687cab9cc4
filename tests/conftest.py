"""Suite-wide pytest hooks."""

from __future__ import annotations

from typing import Any


def pytest_report_header() -> str:
    # CI runs the suite twice, the second time with SOUPBINTCP_NO_EXTENSIONS=1: say which walker ran.
    from nasdaq_protocols.soup import framing

    return f"soupbintcp packet walker: {framing.WALKER}"


# --------------------------------------------------------------------------- fault tests (issue 28)
# The fault tests report figures (record_property("fault figure", text)) and the kernel fault
# cases (marker `kernel`) may be skipped where nftables cannot be used: both are said at the end
# of the run, in plain words, so that CI's output shows them.


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reports = [
        report for kind in ("passed", "failed", "skipped") for report in terminalreporter.stats.get(kind, [])
    ]
    figures = [
        str(value)
        for report in reports
        if report.when == "call"
        for name, value in report.user_properties
        if name == "fault figure"
    ]
    kernel: dict[str, list[Any]] = {}
    for report in reports:
        # A module skipped at collection (e.g. the compiled walker's tests without it) has no keywords.
        if "kernel" in getattr(report, "keywords", ()) and (report.when == "call" or report.skipped):
            kernel.setdefault(report.outcome, []).append(report)
    if not figures and not kernel:
        return
    terminalreporter.section("faults on the wire")
    for figure in figures:
        terminalreporter.write_line(figure)
    if kernel:
        counts = ", ".join(f"{len(found)} {outcome}" for outcome, found in sorted(kernel.items()))
        terminalreporter.write_line(f"kernel fault cases: {counts}")
        reasons = sorted(
            {str(report.longrepr[2]).removeprefix("Skipped: ") for report in kernel.get("skipped", [])}
        )
        for reason in reasons:
            terminalreporter.write_line(f"kernel fault cases SKIPPED because {reason}")
