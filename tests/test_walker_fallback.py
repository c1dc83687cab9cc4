"""The pure-Python fallbacks' own speed tricks, on any build: the packet walker pauses the cyclic
collector while it builds a large batch, and the framer looks its headers up with C loops. Their
results are checked against the compiled twins in ``test_walker.py``; these check the tricks'
edges (a collector left as found, headers not cached yet or too large to be)."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from nasdaq_protocols.soup import framing
from nasdaq_protocols.soup.core import LoginAccepted, SoupMessage
from nasdaq_protocols.soup.framing import (
    MAX_PACKET_SIZE,
    WalkResult,
    frame_packets,
    frame_sequenced,
    python_walk_packets,
)

LOGIN_ACCEPTED = LoginAccepted("SESSION", 42).to_bytes()[1]


def one_by_one(indicator: bytes, payloads: list[bytes]) -> bytes:
    return b"".join((len(p) + 1).to_bytes(2, "big") + indicator + bytes(p) for p in payloads)


@pytest.mark.parametrize("indicator", [b"S", b"U", b"+"])  # cached headers, and a type without
def test_the_python_framer_builds_uncached_and_large_headers(
    indicator: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "SEQUENCED_HEADERS", [None] * framing.HEADER_CACHE_SIZE)
    monkeypatch.setattr(framing, "UNSEQUENCED_HEADERS", [None] * framing.HEADER_CACHE_SIZE)
    monkeypatch.setattr(
        framing, "_HEADER_CACHES", {0x53: framing.SEQUENCED_HEADERS, 0x55: framing.UNSEQUENCED_HEADERS}
    )
    small = [b"a" * 7, b"", b"b" * 7, b"c" * 300]  # none cached yet
    large = [b"d" * 4095, b"e" * 4096, b"f" * 65534]  # the last cached size, and beyond
    for payloads in (small, small, small + large, large + small, [bytearray(b"g"), memoryview(b"hh")]):
        assert frame_packets(indicator, payloads) == one_by_one(indicator, payloads)
        assert frame_packets(indicator, iter(payloads)) == one_by_one(indicator, payloads)
    if indicator != b"+":
        assert framing._HEADER_CACHES[indicator[0]][7] == b"\x00\x08" + indicator
    with pytest.raises(TypeError, match="str found"):
        frame_packets(indicator, [b"a" * 9, "text"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- the collector pause


def collections_during(run: Callable[[], object]) -> int:
    """How many cyclic collections started while ``run`` ran (read before anything is allocated)."""
    started = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] += 1

    gc.callbacks.append(count)
    try:
        run()
        return started[0]
    finally:
        gc.callbacks.remove(count)


def test_the_python_walker_builds_a_large_batch_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = frame_sequenced([b"x" * 8] * 20_000)  # far above the collector's threshold of 700

    walked: list[WalkResult] = []

    def walk() -> None:
        # Nothing allocated after the walk within the count: the collection that the allocation
        # count calls for runs at the first allocation after it, as it would have.
        walked.append(python_walk_packets(data, 0, 1 << 30, 0, MAX_PACKET_SIZE))

    gc.collect()
    assert collections_during(walk) == 0
    assert len(walked[0][0]) == 20_000
    assert gc.isenabled()
    # The same walk below the pause limit: the allocations trigger collections, as they always did.
    monkeypatch.setattr(framing, "GC_PAUSE_LIMIT", 1 << 31)
    gc.collect()
    assert collections_during(walk) > 0


def test_the_python_walker_leaves_the_collector_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_decoder(packet_type: int, payload: bytes) -> SoupMessage:
        raise RuntimeError("decoder broke")

    data = frame_sequenced([b"x"] * 1000) + LOGIN_ACCEPTED
    assert gc.isenabled()
    assert len(python_walk_packets(data, 0, 1 << 30, 0, MAX_PACKET_SIZE)[0]) == 1001
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(python_walk_packets(data, 0, 1 << 30, 0, MAX_PACKET_SIZE)[0]) == 1001
        assert not gc.isenabled()  # a program that runs without the collector keeps it off
    finally:
        gc.enable()
    monkeypatch.setattr(framing, "decode_payload", broken_decoder)
    with pytest.raises(RuntimeError, match="decoder broke"):
        python_walk_packets(data, 0, 1 << 30, 0, MAX_PACKET_SIZE)
    assert gc.isenabled()
