"""Captures by software nobody here wrote: Wireshark's dumpcap and tshark (CI installs tshark).

A real ``soup serve`` -> ``soup tail`` conversation on the loopback interface is captured with
dumpcap (pcapng, nanosecond times), imported, and compared with what was sent and with tshark's
own SoupBinTCP dissection (which packet completed each message, and its time); the same capture
with one data segment removed (editcap) imports with the gap reported. A journal exported as a
pcap dissects in tshark with no malformed packet and every Sequenced Data counted.

These tests fail, never skip, when tshark is missing: install it (``apt-get install tshark``).
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cliutil import (
    AWKWARD,
    WAIT,
    Feed,
    Processes,
    escaped,
    json_messages,
    make_payloads,
    processes,
    soup,
    wait_until,
)
from feedutil import timed_journal
from nasdaq_protocols.soup.cli.output import format_time
from nasdaq_protocols.soup.feeds import FeedFormatError
from nasdaq_protocols.soup.feeds.capture import FIN, read_segments
from nasdaq_protocols.soup.store import FileStore
from netutil import free_port

pytestmark = pytest.mark.interop

__all__ = ["processes"]  # a fixture, imported for the tests below


def wireshark_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install tshark (CI's .ci/run does)")
    return path


def tshark_sequenced(capture: Path, port: int) -> list[tuple[int, int]]:
    """``(frame number, time in ns)`` of each Sequenced Data tshark dissects, in order."""
    result = subprocess.run(
        [
            wireshark_tool("tshark"), "-r", str(capture), "-d", f"tcp.port=={port},soupbintcp",
            "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch", "-e", "soupbintcp.packet_type",
            "-E", "occurrence=a",
        ],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )  # fmt: skip
    found = []
    for line in result.stdout.splitlines():
        number, epoch, types = [*line.split("\t"), "", ""][:3]
        seconds, _, fraction = epoch.partition(".")
        time_ns = int(seconds) * 10**9 + int(fraction.ljust(9, "0")[:9])
        found += [(int(number), time_ns)] * types.split(",").count("'S'")
    return found


def malformed(capture: Path, port: int) -> str:
    result = subprocess.run(
        [
            wireshark_tool("tshark"), "-r", str(capture), "-d", f"tcp.port=={port},soupbintcp",
            "-Y", "_ws.malformed",
        ],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )  # fmt: skip
    return result.stdout


def stored(journal: Path) -> tuple[list[bytes], list[int]]:
    with FileStore(journal, readonly=True) as store:
        count = store.last_sequence
        return [store.get(n) for n in range(1, count + 1)], list(store.received_times(1, count))


def fins_written(capture: Path) -> int:
    """TCP segments with FIN in the capture written so far (a block being written is not read)."""
    fins = 0
    try:
        with open(capture, "rb") as stream:
            for segment in read_segments(stream):
                fins += bool(segment.flags & FIN)
    except (FeedFormatError, OSError):
        pass
    return fins


@pytest.fixture
def captured(tmp_path: Path, processes: Processes) -> tuple[Path, int, list[bytes], list[dict[str, object]]]:
    """A dumpcap capture of ``soup serve`` -> ``soup tail``: (capture, port, payloads, tail's json)."""
    port = free_port()
    capture = tmp_path / "conversation.pcapng"
    dumpcap = subprocess.Popen(
        [wireshark_tool("dumpcap"), "-i", "lo", "-f", f"tcp port {port}", "-w", str(capture)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert dumpcap.stderr is not None
        started = dumpcap.stderr.readline()  # "Capturing on 'Loopback: lo'" once it captures
        assert "Capturing on" in started, started + dumpcap.stderr.read()
        feed = Feed(processes, tmp_path / "served.journal", listen=f"127.0.0.1:{port}")
        payloads = AWKWARD + make_payloads(3000, random.Random(25))
        tail = processes.start("tail", feed.address, "--user", "u", "--password", "p", "--format", "json",
                               "--count", str(len(payloads)))  # fmt: skip
        for start in range(0, len(payloads), 300):  # chunks that go out live, in separate segments
            feed.publish(payloads[start : start + 300])
            printed = min(start + 300, len(payloads))
            wait_until(lambda printed=printed: tail.stdout().count("\n") >= printed, "tail", tail)
        assert tail.wait() == 0, tail.stderr()
        assert feed.server.stop() == 128 + signal.SIGTERM
        # dumpcap may lag behind a loaded machine and stops without draining the kernel's buffer:
        # wait until both sides' FINs are written, so the capture holds the whole conversation.
        wait_until(lambda: fins_written(capture) >= 2, "dumpcap to write the whole conversation")
    finally:
        dumpcap.send_signal(signal.SIGINT)
        dumpcap.wait(WAIT)
        if dumpcap.stderr is not None:
            dumpcap.stderr.close()
    return capture, port, payloads, json_messages(tail.stdout().splitlines())


def test_a_captured_conversation_imports_as_it_was_sent(
    tmp_path: Path, captured: tuple[Path, int, list[bytes], list[dict[str, object]]]
) -> None:
    capture, port, payloads, _ = captured
    journal = tmp_path / "imported.journal"
    result = soup("import", str(capture), "--journal", str(journal))
    assert result.returncode == 0, result.stderr
    assert f"imported messages 1..{len(payloads)} of session 'FEED'" in result.stderr
    assert f"with server 127.0.0.1:{port}" in result.stderr
    messages, times = stored(journal)
    assert messages == payloads == stored(tmp_path / "served.journal")[0]
    # Each message's time is that of the packet tshark says completed it.
    dissected = tshark_sequenced(capture, port)
    assert len(dissected) == len(payloads)
    assert times == [time_ns for _, time_ns in dissected]
    # soup cat shows them.
    cat = soup("cat", str(journal), "--from", "7", "--count", "1", "--timestamps")
    assert cat.stdout == f"7 {format_time(times[6])} {escaped(payloads[6])}\n"
    assert format_time(times[6]).endswith(f".{times[6] % 10**9:09d}Z")


def test_a_capture_with_a_segment_removed_imports_with_the_gap_reported(
    tmp_path: Path, captured: tuple[Path, int, list[bytes], list[dict[str, object]]]
) -> None:
    capture, port, payloads, _ = captured
    dissected = tshark_sequenced(capture, port)
    frames = sorted({frame for frame, _ in dissected})
    removed = frames[len(frames) // 2]
    resumed = frames[len(frames) // 2 + 1] - 1  # the next data segment's number once one is gone
    before = sum(1 for frame, _ in dissected if frame < removed)  # messages completed before it
    edited = tmp_path / "gap.pcap"
    subprocess.run(
        [wireshark_tool("editcap"), "-F", "pcap", str(capture), str(edited), str(removed)],
        check=True, capture_output=True, timeout=WAIT,
    )  # fmt: skip
    journal = tmp_path / "imported.journal"
    result = soup("import", str(edited), "--journal", str(journal))
    assert result.returncode == 0, result.stderr
    messages, _ = stored(journal)
    assert messages == payloads[: len(messages)]
    assert before <= len(messages) < len(payloads)
    assert (
        f"from the capture after message {len(messages)} (before packet {resumed}): messages from"
        in result.stderr
    )
    assert f"imported messages 1..{len(messages)} of session 'FEED'" in result.stderr


def test_an_exported_pcap_dissects_in_tshark_with_no_malformed_packet(tmp_path: Path) -> None:
    rng = random.Random(5)
    # No empty payload: SoupBinTCP allows one, but Wireshark's dissector calls it malformed.
    sizes = [1, 100, 1500, 3000, 65534] + [rng.randrange(1, 200) for _ in range(5000)]
    payloads = [bytes(rng.randrange(256) for _ in range(size)) for size in sizes]
    times = [1_700_000_000 * 10**9 + n * 1_000 for n in range(len(payloads))]
    journal = timed_journal(tmp_path / "j", payloads, times)
    pcap = tmp_path / "export.pcap"
    result = soup("export", str(journal), "--format", "pcap", "-o", str(pcap), "--port", "26400")
    assert result.returncode == 0, result.stderr
    assert malformed(pcap, 26400) == ""
    dissected = tshark_sequenced(pcap, 26400)
    assert len(dissected) == len(payloads)
    assert [time_ns for _, time_ns in dissected] == times


@pytest.mark.parametrize(
    ("file_format", "resolution"),
    [("pcapng", 1), ("pcap", 1000)],  # editcap writes pcapng in ns, classic pcap in us
)
def test_captures_rewritten_by_editcap_import_the_same(
    tmp_path: Path, file_format: str, resolution: int
) -> None:
    payloads = [b"m%d" % n for n in range(1, 301)]
    times = [1_700_000_000 * 10**9 + n * 1_234_567 for n in range(300)]
    journal = timed_journal(tmp_path / "j", payloads, times)
    ours = tmp_path / "ours.pcap"
    assert soup("export", str(journal), "--format", "pcap", "-o", str(ours)).returncode == 0
    rewritten = tmp_path / f"rewritten.{file_format}"
    subprocess.run(
        [wireshark_tool("editcap"), "-F", file_format, str(ours), str(rewritten)],
        check=True, capture_output=True, timeout=WAIT,
    )  # fmt: skip
    imported = tmp_path / "imported"
    result = soup("import", str(rewritten), "--journal", str(imported))
    assert result.returncode == 0, result.stderr
    assert stored(imported) == (payloads, [t // resolution * resolution for t in times])
