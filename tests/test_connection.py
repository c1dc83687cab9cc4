"""The sans-IO core (``nasdaq_protocols.soup.connection``): no sockets, no event loop, no clock.

A :class:`ConnectionPair` passes bytes between a client and a server :class:`SoupConnection` (as
h11's tests do), so whole conversations are checked here; a table test covers every
(role, state, direction, packet type).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import core
from nasdaq_protocols.soup.connection import (
    TRANSITIONS,
    CloseAction,
    Direction,
    Role,
    SoupConnection,
    State,
    TimerEvent,
)
from nasdaq_protocols.soup.errors import InvalidSoupMessage, LocalProtocolError, RemoteProtocolError

EXAMPLES: dict[str, core.SoupMessage] = {
    "+": core.Debug("hello"),
    "A": core.LoginAccepted("FEED", 1),
    "J": core.LoginRejected("A"),
    "S": core.SequencedData(b"data"),
    "U": core.UnSequencedData(b"data"),
    "H": core.ServerHeartbeat(),
    "Z": core.EndOfSession(),
    "L": core.LoginRequest("user", "pass", "", "1"),
    "R": core.ClientHeartbeat(),
    "O": core.LogoutRequest(),
}


class ConnectionPair:
    """A client and a server connection wired back to back: what one sends, the other receives."""

    def __init__(self, **server_options: object) -> None:
        self.client = SoupConnection(Role.CLIENT)
        self.server = SoupConnection(Role.SERVER, **server_options)  # type: ignore[arg-type]
        self.client.start(0.0)
        self.server.start(0.0)

    def peer(self, connection: SoupConnection) -> SoupConnection:
        return self.server if connection is self.client else self.client

    def send(self, connection: SoupConnection, message: core.SoupMessage, now: float = 0.0) -> None:
        connection.send(message)
        self.flush(connection, now)

    def flush(self, connection: SoupConnection, now: float = 0.0) -> None:
        """What ``connection`` queued goes to its peer."""
        self.peer(connection).receive_data(connection.data_to_send(now), now)

    def events(self, connection: SoupConnection) -> list[core.SoupMessage]:
        received: list[core.SoupMessage] = []
        while batch := connection.next_events():
            received += batch
        return received

    def login(self, sequence: int = 1) -> None:
        self.send(self.client, core.LoginRequest("user", "pass", "", str(sequence)))
        assert self.events(self.server) == [core.LoginRequest("user", "pass", "", str(sequence))]
        self.send(self.server, core.LoginAccepted("FEED", sequence))
        assert self.events(self.client) == []  # the connection's own packet: taken, not handed out
        assert self.client.login_accepted == core.LoginAccepted("FEED", sequence)


def test_a_whole_conversation_without_sockets() -> None:
    pair = ConnectionPair()
    pair.login(sequence=5)
    assert pair.client.state is pair.server.state is State.LOGGED_IN
    assert pair.client.next_expected == pair.server.next_to_send == 5
    for payload in (b"a", b"b", b"c"):
        pair.server.send_sequenced(payload)
    assert pair.server.next_to_send == 8  # numbered as queued
    pair.flush(pair.server)
    pair.send(pair.client, core.UnSequencedData(b"order"))
    pair.server.send_unsequenced(b"ack")
    pair.flush(pair.server)
    received = pair.events(pair.client)
    assert [(m.data, m.sequence) for m in received[:3]] == [(b"a", 5), (b"b", 6), (b"c", 7)]  # type: ignore[attr-defined]
    assert received[3] == core.UnSequencedData(b"ack")
    assert pair.events(pair.server) == [core.UnSequencedData(b"order")]
    assert pair.client.next_expected == pair.server.next_to_send == 8
    pair.send(pair.server, core.EndOfSession())
    assert pair.server.state is State.CLOSED and pair.server.close_reason is CloseReason.END_OF_SESSION
    assert pair.server.close_action is CloseAction.HALF_CLOSE and pair.server.end_of_session
    assert pair.events(pair.client) == []
    assert pair.client.close_reason is CloseReason.END_OF_SESSION and pair.client.end_of_session
    ended = "the server ended the session after sequence 7"
    assert pair.client.close_detail == pair.server.close_detail == ended


def test_a_state_change_comes_alone_after_what_preceded_it() -> None:
    pair = ConnectionPair()
    pair.login()
    server = pair.server
    server.send_sequenced(b"1")
    server.send_sequenced(b"2")
    server.send(core.EndOfSession())
    pair.client.receive_data(server.data_to_send() + b"\x00\x01S")  # after End of Session: never decoded
    first = pair.client.next_events()
    assert [m.data for m in first] == [b"1", b"2"]  # type: ignore[attr-defined]
    assert pair.client.state is State.LOGGED_IN  # End of Session not taken yet
    assert pair.client.next_events() == []  # taken now: the connection's own packet
    assert pair.client.state is State.CLOSED
    assert pair.client.next_events() == []


def test_heartbeats_are_consumed_and_split_packets_join() -> None:
    pair = ConnectionPair()
    pair.login()
    pair.server.send_heartbeat()
    pair.server.send_sequenced(b"xyz")
    pair.server.send(core.ServerHeartbeat())
    wire = pair.server.data_to_send()
    for index in range(len(wire)):
        pair.client.receive_data(wire[index : index + 1], float(index))
    assert [m.data for m in pair.events(pair.client)] == [b"xyz"]  # type: ignore[attr-defined]
    assert pair.client.last_received == float(len(wire) - 1)


def test_end_of_stream_closes_as_peer_closed_after_the_data() -> None:
    pair = ConnectionPair()
    pair.login()
    pair.server.send_sequenced(b"last")
    pair.client.receive_data(pair.server.data_to_send() + b"\x00\x05S")
    pair.client.receive_eof()
    assert [m.data for m in pair.client.next_events()] == [b"last"]  # type: ignore[attr-defined]
    assert pair.client.next_events() == []
    assert pair.client.close_reason is CloseReason.PEER_CLOSED
    assert "middle of a packet" in pair.client.close_detail


def test_login_rejected_closes_both_ends() -> None:
    pair = ConnectionPair()
    pair.send(pair.client, core.LoginRequest("user", "bad", "", "1"))
    pair.events(pair.server)
    pair.send(pair.server, core.LoginRejected("A"))
    assert pair.server.close_reason is CloseReason.LOGIN_REJECTED
    assert pair.events(pair.client) == []
    assert pair.client.close_reason is CloseReason.LOGIN_REJECTED
    assert pair.client.login_rejected == core.LoginRejected("A")


def test_a_remote_violation_returns_the_good_packets_first_then_raises() -> None:
    pair = ConnectionPair()
    pair.login()
    pair.server.send_sequenced(b"ok")
    pair.client.receive_data(pair.server.data_to_send() + core.LoginAccepted("X", 1).to_bytes()[1])
    assert [m.data for m in pair.client.next_events()] == [b"ok"]  # type: ignore[attr-defined]
    expected = "unexpected Login Accepted from the server while logged in"
    with pytest.raises(RemoteProtocolError, match=expected):
        pair.client.next_events()
    with pytest.raises(RemoteProtocolError):  # it stays failed
        pair.client.next_events()


def test_malformed_bytes_raise_invalid_soup_message() -> None:
    pair = ConnectionPair()
    pair.login()
    pair.server.send_sequenced(b"ok")
    pair.client.receive_data(pair.server.data_to_send() + b"\x00\x00")
    assert len(pair.client.next_events()) == 1
    with pytest.raises(InvalidSoupMessage, match="length 0"):
        pair.client.next_events()


def test_a_local_mistake_raises_and_changes_nothing() -> None:
    client = SoupConnection(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="cannot send Unsequenced Data as a client while connected"):
        client.send_unsequenced(b"too early")
    with pytest.raises(LocalProtocolError):
        client.send(core.SequencedData(b"x"))
    assert client.state is State.CONNECTED
    server = SoupConnection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="Sequenced Data as a server while connected"):
        server.send_sequenced(b"x")
    assert server.next_to_send == 1 and server.data_to_send() == b""


def test_timers_heartbeat_timeout_and_login_timeout() -> None:
    server = SoupConnection(Role.SERVER, heartbeat_interval=1.0, peer_timeout=3.0, login_timeout=5.0)
    server.start(100.0)
    assert server.next_deadline() == 105.0
    assert server.handle_timer(104.0) is None
    assert server.handle_timer(105.0) is TimerEvent.TIMED_OUT
    assert server.close_reason is CloseReason.LOGIN_TIMEOUT
    assert server.next_deadline() is None

    pair = ConnectionPair(heartbeat_interval=1.0, peer_timeout=3.0)
    pair.login()
    server = pair.server
    server.data_sent(10.0)
    pair.client.send(core.ClientHeartbeat())
    server.receive_data(pair.client.data_to_send(), 10.0)
    assert server.next_deadline() == 11.0
    assert not server.heartbeat_due(10.8)
    assert server.handle_timer(10.95) is TimerEvent.HEARTBEAT  # a little early rather than late
    server.data_sent(11.0)
    assert server.next_deadline() == 12.0
    assert server.handle_timer(12.5, reading=False) is TimerEvent.HEARTBEAT  # our silence only
    server.data_sent(12.5)
    assert server.handle_timer(15.4) is TimerEvent.HEARTBEAT
    assert server.handle_timer(15.6) is TimerEvent.TIMED_OUT
    assert server.close_reason is CloseReason.TIMEOUT
    assert "nothing received for 3.10 s" in server.close_detail


@pytest.mark.parametrize(("start", "timeout"), [(1000.0, 0.3), (1000.0, 0.1), (12345.678, 0.7), (0.1, 0.2)])
def test_the_timer_acts_at_the_deadline_it_asked_for(start: float, timeout: float) -> None:
    """``handle_timer(next_deadline())`` acts, whatever the floating point sums: a caller that
    calls it at the deadline it was given must not get the same deadline back (on a clock that
    does not move by itself, such as a test's, the timer would fire again for ever)."""
    server = SoupConnection(Role.SERVER, login_timeout=timeout)
    server.start(start)
    deadline = server.next_deadline()
    assert deadline is not None
    assert server.handle_timer(deadline) is TimerEvent.TIMED_OUT, (
        f"login timeout: nothing at the deadline {deadline!r} (started {start!r}, timeout {timeout!r})"
    )

    pair = ConnectionPair(peer_timeout=timeout)
    pair.login()
    server = pair.server
    server.data_sent(start)
    server.receive_data(core.ClientHeartbeat().to_bytes()[1], start)
    assert server.next_events() == []
    deadline = server.next_deadline()
    assert deadline is not None
    assert server.handle_timer(deadline) is TimerEvent.TIMED_OUT, (
        f"peer timeout: nothing at the deadline {deadline!r} (heard at {start!r}, timeout {timeout!r})"
    )


def test_sequence_numbers_start_where_login_accepted_says() -> None:
    pair = ConnectionPair()
    pair.send(pair.client, core.LoginRequest("user", "pass", "", "0"))
    pair.events(pair.server)
    pair.send(pair.server, core.LoginAccepted("FEED", 1000))
    pair.server.send_sequenced(b"x")
    pair.flush(pair.server)
    events = pair.events(pair.client)
    assert events[-1].sequence == 1000  # type: ignore[attr-defined]
    assert pair.server.next_to_send == pair.client.next_expected == 1001


# --------------------------------------------------------------------------- the table, exhaustively


def connection_in(role: Role, state: State) -> SoupConnection:
    """A connection of ``role`` brought to ``state`` through the table itself."""
    connection = SoupConnection(role)
    if state is State.CONNECTED:
        return connection
    if role is Role.CLIENT:
        connection.send(EXAMPLES["L"])
        if state is State.LOGGED_IN:
            connection.receive_data(EXAMPLES["A"].to_bytes()[1])
            assert connection.next_events() == []
    else:
        connection.receive_data(EXAMPLES["L"].to_bytes()[1])
        assert connection.next_events() == [EXAMPLES["L"]]
        if state is State.LOGGED_IN:
            connection.send(EXAMPLES["A"])
    if state is State.CLOSED:
        connection.close(CloseReason.LOCAL_CLOSE)
    assert connection.state is state
    return connection


CASES = list(itertools.product(Role, State, Direction, sorted(EXAMPLES)))


@pytest.mark.parametrize(("role", "state", "direction", "kind"), CASES, ids=lambda v: getattr(v, "name", v))
def test_every_role_state_direction_and_packet(
    role: Role, state: State, direction: Direction, kind: str
) -> None:
    connection = connection_in(role, state)
    message = EXAMPLES[kind]
    step = TRANSITIONS.get((role, state, direction, kind))
    if direction is Direction.SEND:
        if step is None:
            with pytest.raises(LocalProtocolError):
                connection.send(message)
            assert connection.state is state
        else:
            connection.data_to_send()
            connection.send(message)
            assert connection.data_to_send() == message.to_bytes()[1]
            assert connection.state is step[0]
            assert connection.close_reason is step[1]
        return
    connection.receive_data(message.to_bytes()[1])
    if state is State.CLOSED:
        assert step is None
        assert connection.next_events() == []  # a closed connection reads nothing more
    elif step is None:
        with pytest.raises(RemoteProtocolError):
            connection.next_events()
    else:
        events = connection.next_events()
        delivered = {Role.CLIENT: "SU+", Role.SERVER: "LU+"}[role]
        assert events == ([message] if kind in delivered else [])
        assert connection.state is step[0]
        assert connection.close_reason is step[1]


def test_the_table_never_leaves_closed_and_allows_data_only_when_logged_in() -> None:
    for (role, state, direction, kind), (next_state, reason) in TRANSITIONS.items():
        assert state is not State.CLOSED
        assert (next_state is State.CLOSED) == (reason is not None)
        if kind in "SU":
            assert state is State.LOGGED_IN, (role, state, direction, kind)
        if kind == "S":
            sender = Role.SERVER if direction is Direction.SEND else Role.CLIENT
            assert role is sender if direction is Direction.SEND else role is Role.CLIENT


def test_the_core_loads_no_asyncio_and_no_store() -> None:
    code = (
        "import sys\n"
        "import nasdaq_protocols.soup.core, nasdaq_protocols.soup.framing, nasdaq_protocols.soup.connection\n"
        "from nasdaq_protocols import soup\n"
        "assert 'asyncio' not in sys.modules, sorted(m for m in sys.modules if 'asyncio' in m)\n"
        "stores = [m for m in sys.modules if m.startswith('nasdaq_protocols.soup.store')]\n"
        "assert not stores, stores\n"
        "soup.connect_async\n"
        "assert 'asyncio' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_common_does_not_import_the_soup_package() -> None:
    code = (
        "import sys\n"
        "import nasdaq_protocols.common, nasdaq_protocols.common.session, nasdaq_protocols.common.utils\n"
        "assert not [m for m in sys.modules if m.startswith('nasdaq_protocols.soup')], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
