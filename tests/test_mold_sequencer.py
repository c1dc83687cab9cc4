"""The receiving core alone: datagrams and a clock in, requests and ordered messages out (no sockets)."""

from __future__ import annotations

import pytest

from nasdaq_protocols.moldudp64.codec import Packer, decode_request, encode_downstream
from nasdaq_protocols.moldudp64.errors import RecoveryFailed
from nasdaq_protocols.moldudp64.sequencer import REREQUEST, SOUP, Sequencer

PACKER = Packer("FEED", payload_size=20 + 3 * 4)  # three 2-byte messages a datagram


def messages(first: int, count: int) -> list[bytes]:
    return [b"%02d" % (n % 100) for n in range(first, first + count)]


def datagram(first: int, count: int, session: str = "FEED") -> bytes:
    return encode_downstream(session, first, messages(first, count))


def taken(sequencer: Sequencer) -> list[int]:
    return [message.sequence for message in sequencer.take()]


def requests(sequencer: Sequencer, now: float) -> list[tuple[int, int]]:
    return [(r.sequence, r.count) for r in map(decode_request, sequencer.poll(now))]


def test_in_order_datagrams_are_handed_out_with_their_numbers() -> None:
    sequencer = Sequencer()
    for data in PACKER.pack(messages(1, 7), 1):
        sequencer.datagram("A", data, 0.0)
    batch = sequencer.take()
    assert [(m.sequence, m.data) for m in batch] == list(enumerate(messages(1, 7), 1))
    assert sequencer.session == "FEED" and sequencer.next_sequence == 8
    assert sequencer.stats.messages == 7 and sequencer.stats.gaps_detected == 0


def test_the_first_copy_wins_and_the_other_lines_copies_are_counted() -> None:
    sequencer = Sequencer()
    sequencer.datagram("A", datagram(1, 3), 0.0)
    sequencer.datagram("B", datagram(1, 3), 0.0)
    sequencer.datagram("B", datagram(4, 3), 0.0)
    sequencer.datagram("A", datagram(4, 3), 0.0)
    assert taken(sequencer) == [1, 2, 3, 4, 5, 6]
    lines = sequencer.stats.lines
    assert (lines["A"].messages, lines["A"].duplicates, lines["B"].messages, lines["B"].duplicates) == (
        3,
        3,
        3,
        3,
    )
    assert sequencer.stats.duplicates_dropped == 6


def test_a_gap_is_asked_for_only_after_the_grace_and_not_if_line_b_fills_it() -> None:
    sequencer = Sequencer(rerequest=True, gap_grace=0.02)
    sequencer.datagram("A", datagram(1, 3), 0.0)
    sequencer.datagram("A", datagram(7, 3), 1.0)  # 4..6 lost on A
    assert taken(sequencer) == [1, 2, 3]
    assert requests(sequencer, 1.019) == []
    assert sequencer.deadline() == pytest.approx(1.02)
    sequencer.datagram("B", datagram(4, 3), 1.019)
    assert requests(sequencer, 5.0) == []
    assert taken(sequencer) == [4, 5, 6, 7, 8, 9]
    assert sequencer.stats.gaps_detected == 1 and sequencer.stats.requests_sent == 0


def test_a_request_is_retried_at_its_timeout_then_recovery_fails() -> None:
    sequencer = Sequencer(rerequest=True, gap_grace=0.0, request_timeout=0.5, request_retries=3)
    sequencer.datagram("A", datagram(1, 3), 0.0)
    sequencer.datagram("A", datagram(10, 3), 0.0)
    assert requests(sequencer, 0.0) == [(4, 6)]
    assert requests(sequencer, 0.4) == []
    assert requests(sequencer, 0.5) == [(4, 6)]
    assert requests(sequencer, 1.0) == [(4, 6)]
    assert requests(sequencer, 1.5) == []
    assert isinstance(sequencer.error, RecoveryFailed) and sequencer.error.first == 4
    assert sequencer.stats.request_retries == 2


def test_a_partial_answer_is_followed_by_a_request_for_the_rest() -> None:
    sequencer = Sequencer(rerequest=True, gap_grace=0.0, answer_idle=0.05)
    sequencer.datagram("A", datagram(1, 1), 0.0)
    sequencer.datagram("A", datagram(100, 1), 0.0)
    assert requests(sequencer, 0.0) == [(2, 98)]
    sequencer.datagram(REREQUEST, datagram(2, 40), 0.01)  # the server capped its answer
    assert requests(sequencer, 0.03) == []
    assert requests(sequencer, 0.07) == [(42, 58)]
    sequencer.datagram(REREQUEST, datagram(42, 58), 0.08)
    assert taken(sequencer) == list(range(1, 101))
    assert sequencer.stats.request_retries == 0 and sequencer.stats.recovered_rerequest == 98


def test_requests_are_split_at_max_request_count_and_gaps_asked_for_together() -> None:
    sequencer = Sequencer(rerequest=True, gap_grace=0.0, max_request_count=10)
    sequencer.datagram("A", datagram(1, 1), 0.0)
    sequencer.datagram("A", datagram(50, 1), 0.0)
    sequencer.datagram("A", datagram(60, 1), 0.0)
    assert requests(sequencer, 0.0) == [(2, 10), (51, 9)]


def test_a_heartbeat_reveals_a_lost_tail_and_end_of_session_finishes() -> None:
    sequencer = Sequencer(rerequest=True, gap_grace=0.0)
    sequencer.datagram("A", datagram(1, 3), 0.0)
    sequencer.datagram("A", PACKER.heartbeat(6), 1.0)
    assert requests(sequencer, 1.0) == [(4, 2)]
    sequencer.datagram("A", PACKER.end_of_session(6), 1.1)
    assert not sequencer.finished
    sequencer.datagram(REREQUEST, datagram(4, 2), 1.2)
    assert taken(sequencer) == [1, 2, 3, 4, 5]
    assert sequencer.finished and sequencer.end_of_session == 6


def test_other_sessions_and_malformed_datagrams_are_dropped_and_counted() -> None:
    sequencer = Sequencer("FEED")
    sequencer.datagram("A", datagram(1, 2, session="OTHER"), 0.0)
    sequencer.datagram("A", b"short", 0.0)
    sequencer.datagram("A", datagram(1, 2)[:-1], 0.0)
    sequencer.datagram("A", b"FEED      " + datagram(1, 1)[10:], 0.0)  # padded the other way: same session
    assert taken(sequencer) == [1]
    assert sequencer.stats.other_session == 1 and sequencer.stats.malformed == 2


def test_sequence_zero_starts_at_the_first_live_message() -> None:
    sequencer = Sequencer(next_sequence=0, rerequest=True, gap_grace=0.0)
    sequencer.datagram("A", datagram(500, 2), 0.0)
    assert taken(sequencer) == [500, 501]
    assert requests(sequencer, 1.0) == []


def test_without_recovery_a_gap_fails_or_with_allow_gaps_is_skipped() -> None:
    strict = Sequencer(gap_grace=0.0)
    strict.datagram("A", datagram(1, 1), 0.0)
    strict.datagram("A", datagram(5, 1), 0.0)
    strict.poll(0.0)
    assert isinstance(strict.error, RecoveryFailed) and "no recovery is configured" in str(strict.error)
    lenient = Sequencer(gap_grace=0.0, allow_gaps=True)
    lenient.datagram("A", datagram(1, 1), 0.0)
    lenient.datagram("A", datagram(5, 1), 0.0)
    lenient.poll(0.0)
    assert taken(lenient) == [1, 5] and lenient.stats.messages_lost == 3


def test_soupbintcp_recovery_alone_and_after_re_request_gives_up() -> None:
    soup = Sequencer(soup_recovery=True, gap_grace=0.0)
    soup.datagram("A", datagram(1, 1), 0.0)
    soup.datagram("A", datagram(9, 1), 0.0)
    assert soup.poll(0.0) == [] and soup.recovery_start(0.0) == 2
    soup.recovered(2, messages(2, 10), 0.1)  # a recovery runs on past the gap: 9 is a copy
    assert taken(soup) == list(range(1, 12)) and soup.recovery_done()
    assert soup.stats.recovered_soupbintcp == 10 and soup.stats.lines["A"].duplicates == 1
    assert SOUP in soup.stats.lines
    both = Sequencer(
        rerequest=True, soup_recovery=True, gap_grace=0.0, request_timeout=0.1, request_retries=1
    )
    both.datagram("A", datagram(1, 1), 0.0)
    both.datagram("A", datagram(9, 1), 0.0)
    assert requests(both, 0.0) == [(2, 7)]
    assert both.recovery_start(0.05) is None
    assert requests(both, 0.2) == []
    assert both.error is None and both.recovery_start(0.2) == 2


def test_overlapping_runs_are_trimmed_never_delivered_twice() -> None:
    sequencer = Sequencer(soup_recovery=True)
    sequencer.datagram("A", datagram(1, 1), 0.0)
    sequencer.recovered(5, messages(5, 5), 0.0)
    sequencer.recovered(3, messages(3, 4), 0.0)
    sequencer.datagram("B", datagram(2, 3), 0.0)
    assert taken(sequencer) == list(range(1, 10))
    first, payloads = 10, messages(10, 2)
    sequencer.datagram("A", datagram(first, 2), 0.0)
    assert sequencer.take_payloads() == (10, payloads)
