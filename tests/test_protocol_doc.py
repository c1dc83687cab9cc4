"""docs/protocol.md says what the code does: its tables are read and compared with the code's.

The page restates, for readers, two things the code keeps in one place each: the transition
table (``connection.TRANSITIONS``) and the closes that half-close and linger
(``GRACEFUL_CLOSES``). A change to either that the page does not follow fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.connection import GRACEFUL_CLOSES, TRANSITIONS, Direction

PAGE = Path(__file__).resolve().parents[1] / "docs/protocol.md"


def section(heading: str) -> str:
    """The text of the page under ``## heading``, up to the next heading of that level."""
    text = PAGE.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in {PAGE.name}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cells."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_the_state_table_is_the_transition_table() -> None:
    documented = {}
    for role, state, sends, receives in table_rows(section("State table")):
        for direction, cell in ((Direction.SEND, sends), (Direction.RECEIVE, receives)):
            for packet, target in re.findall(r"`(.)`(?: → ([a-z ]+[a-z]))?", cell):
                documented[(role, state, direction.value, packet)] = target or state
    in_code = {
        (role.value, state.value, direction.value, packet): next_state.value
        for (role, state, direction, packet), (next_state, _) in TRANSITIONS.items()
    }
    assert documented == in_code


def test_the_closing_table_is_the_graceful_set() -> None:
    rows = table_rows(section("Closing"))
    named = [set(re.findall(r"`([A-Z_]+)`", reasons)) for reasons, _ in rows]
    assert [how.split(":")[0] for _, how in rows] == ["**Graceful**", "**At once**"]
    assert named[0] == {reason.name for reason in GRACEFUL_CLOSES}
    assert named[0] | named[1] == {reason.name for reason in CloseReason}
    assert not named[0] & named[1]
