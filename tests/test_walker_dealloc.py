"""Freeing Sequenced Data: the compiled walker's dealloc (``sequenced_dealloc`` in ``cwalker.c``).

``cwalker.setup()`` gives the class it builds (``SequencedData``) a dealloc of its own, faster than
CPython's generic one for classes defined in Python, when the class's instances hold nothing but
object slots and perhaps a weak reference list. These tests check that it is installed only then,
and that instances (and instances of subclasses, with slots, a ``__dict__``, a finalizer, weak
references, reference cycles) are freed completely: no reference kept, no memory left, weak
references cleared and their callbacks run.

Without the compiled walker these tests are skipped when ``SOUPBINTCP_NO_EXTENSIONS`` is set and
fail otherwise, as in ``test_walker.py``.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tracemalloc
import weakref
from collections.abc import Iterator
from types import ModuleType

import pytest

from nasdaq_protocols.soup.core import InvalidSoupMessage, SequencedData, decode_payload
from nasdaq_protocols.soup.framing import MAX_PACKET_SIZE, frame_packets, length_error

if os.environ.get("SOUPBINTCP_NO_EXTENSIONS"):
    pytest.skip("SOUPBINTCP_NO_EXTENSIONS forces the pure-Python walker", allow_module_level=True)

#: Where a type object keeps tp_dealloc on a 64-bit CPython: after ob_refcnt, ob_type, ob_size,
#: tp_name, tp_basicsize and tp_itemsize.
TP_DEALLOC_OFFSET = 6 * ctypes.sizeof(ctypes.c_void_p)


def tp_dealloc(cls: type) -> int:
    return int(ctypes.c_void_p.from_address(id(cls) + TP_DEALLOC_OFFSET).value or 0)


class Generic:
    """A class defined in Python: CPython's generic dealloc."""

    __slots__ = ("data", "sequence")


@pytest.fixture
def cwalker() -> Iterator[ModuleType]:
    """The compiled walker; set up again with the package's own objects after the test."""
    try:
        from nasdaq_protocols.soup import cwalker as module
    except ImportError:
        pytest.fail("the compiled walker (nasdaq_protocols.soup.cwalker) is not built")
    yield module
    module.setup(SequencedData, decode_payload, InvalidSoupMessage, length_error)


def set_up(cwalker: ModuleType, cls: type) -> None:
    cwalker.setup(cls, decode_payload, InvalidSoupMessage, length_error)


def fresh_class() -> type:
    """A class the compiled dealloc can take (a new one each time: setup changes the class)."""

    class Message:
        __slots__ = ("__weakref__", "data", "sequence")

    return Message


def test_sequenced_data_has_the_compiled_dealloc(cwalker: ModuleType) -> None:
    assert sys.maxsize > 2**32, "TP_DEALLOC_OFFSET is for 64-bit builds"
    assert tp_dealloc(SequencedData) != tp_dealloc(Generic)
    message = fresh_class()
    before = tp_dealloc(message)
    assert before == tp_dealloc(Generic)
    set_up(cwalker, message)
    assert tp_dealloc(message) == tp_dealloc(SequencedData)


def test_a_class_it_cannot_free_alone_keeps_the_generic_dealloc(cwalker: ModuleType) -> None:
    class Finalized:
        __slots__ = ("data", "sequence")

        def __del__(self) -> None:
            pass

    class WithDict:
        __slots__ = ("__dict__", "data", "sequence")

    class Base:
        __slots__ = ("extra",)

    class SlottedBase(Base):
        __slots__ = ("data", "sequence")

    for cls in (Finalized, WithDict, SlottedBase):
        generic = tp_dealloc(cls)
        set_up(cwalker, cls)
        assert tp_dealloc(cls) == generic, cls.__name__


def test_walked_messages_are_freed_whole(cwalker: ModuleType) -> None:
    # Every payload and sequence number the walk made is released with its message: memory comes
    # back to where it was, however many walks.
    data = frame_packets(b"S", [bytes([i]) * 40 for i in range(200)])

    def walk_and_drop() -> None:
        messages = cwalker.walk_packets(data, 0, 1000, 10**6, MAX_PACKET_SIZE)[0]
        assert len(messages) == 200
        del messages

    for _ in range(20):
        walk_and_drop()
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            walk_and_drop()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 16_384, f"{grown} bytes kept after 100,000 messages were freed"


def test_references_held_by_a_message_are_released() -> None:
    payload = bytes(range(50))
    number = 10**30
    before = sys.getrefcount(payload), sys.getrefcount(number)
    messages = [SequencedData(payload, sequence=number) for _ in range(1000)]
    assert sys.getrefcount(payload) == before[0] + 1000
    del messages
    assert (sys.getrefcount(payload), sys.getrefcount(number)) == before


def test_weak_references_are_cleared_and_their_callbacks_run() -> None:
    message = SequencedData(b"abc", sequence=7)
    called: list[object] = []
    reference = weakref.ref(message, called.append)
    del message
    assert reference() is None
    assert called == [reference]


def test_subclass_instances_are_freed_with_everything_they_hold() -> None:
    payload, extra = b"payload" * 5, b"extra" * 5
    before = sys.getrefcount(payload), sys.getrefcount(extra)
    finalized: list[bytes] = []

    class Slotted(SequencedData):
        __slots__ = ("extra",)
        extra: bytes

    class Dicted(SequencedData):  # a __dict__
        pass

    class Finalized(SequencedData):
        __slots__ = ()

        def __del__(self) -> None:
            finalized.append(self.data)

    slotted = Slotted(payload)
    slotted.extra = extra
    dicted = Dicted(payload)
    dicted.extra = extra  # type: ignore[attr-defined]
    references: list[weakref.ref[SequencedData]] = [
        weakref.ref(slotted),
        weakref.ref(dicted),
        weakref.ref(fin := Finalized(payload)),
    ]
    del slotted, dicted, fin
    assert [reference() for reference in references] == [None, None, None]
    assert finalized == [payload]
    finalized.clear()
    assert (sys.getrefcount(payload), sys.getrefcount(extra)) == before


def test_a_subclass_instance_in_a_reference_cycle_is_collected() -> None:
    class Dicted(SequencedData):
        pass

    message = Dicted(b"cycle")
    message.me = message  # type: ignore[attr-defined]
    reference = weakref.ref(message)
    del message
    assert reference() is not None  # held by its cycle
    gc.collect()
    assert reference() is None


def test_a_finalizer_that_resurrects_its_message_keeps_it_whole() -> None:
    kept: list[SequencedData] = []

    class Resurrected(SequencedData):
        __slots__ = ()

        def __del__(self) -> None:
            kept.append(self)

    Resurrected(b"again", sequence=3)
    assert len(kept) == 1
    assert (kept[0].data, kept[0].sequence) == (b"again", 3)
    kept.clear()  # freed for good this time (a finalizer runs once)
