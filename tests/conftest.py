"""Suite-wide pytest hooks."""

from __future__ import annotations


def pytest_report_header() -> str:
    # CI runs the suite twice, the second time with SOUPBINTCP_NO_EXTENSIONS=1: say which walker ran.
    from nasdaq_protocols.soup import framing

    return f"soupbintcp packet walker: {framing.WALKER}"
