"""``soup mold-serve``, ``soup mold-tail`` and ``soup mold-record`` as real processes on loopback.

Between the publisher and the receiver runs :class:`moldutil.ThreadRelay`, dropping 1 datagram
in 20 or 30 in a row: ``mold-tail`` must print messages 1..N exactly once, in order, recovered by
re-request alone, or by SoupBinTCP recovery alone (from ``soup serve`` on the journal the
publisher follows). Errors are one line.
"""

from __future__ import annotations

import random
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from cliutil import (
    Processes,
    password_env,
    password_file,
    processes,
    single_error_line,
    soup,
    stored_count,
    text_lines,
    wait_until,
)
from moldutil import LOOPBACK, Rule, ThreadRelay, every, free_udp_port, run_of
from netutil import free_port

__all__ = ["processes"]  # a fixture, imported for the tests below

N = 5000


def lines_fed(count: int = N, seed: int = 26) -> list[bytes]:
    generator = random.Random(seed)
    alphabet = bytes(b for b in range(0x21, 0x7F))
    return [
        b"m%d " % n + bytes(generator.choices(alphabet, k=generator.randrange(0, 40)))
        for n in range(1, count + 1)
    ]


def bound(port: int) -> bool:
    """True once something is bound to UDP ``port`` on loopback (the receiver is listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([\d.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} not in the metrics"
    return float(found.group(1))


@pytest.mark.parametrize("rule", [every(20, 5), run_of(20, 30)], ids=["1-in-20", "30-in-a-row"])
def test_mold_tail_prints_every_message_once_by_rerequest_alone(processes: Processes, rule: Rule) -> None:
    payloads = lines_fed()
    port, rerequest = free_udp_port(), free_udp_port()
    relay = ThreadRelay([((LOOPBACK, port), rule)]).begin()
    try:
        tail = processes.start("mold-tail", f":{port}", "--rerequest", f":{rerequest}")
        wait_until(lambda: bound(port), "mold-tail listening", tail)
        server = processes.start(
            "mold-serve", "--stdin", "--to", f"{relay.address[0]}:{relay.address[1]}",
            "--rerequest", f":{rerequest}", "--session", "FEED", "--heartbeat", "0.1",
            stdin=True,
        )  # fmt: skip
        server.write_stdin(b"\n".join(payloads) + b"\n")
        server.process.stdin.close()
        assert tail.wait() == 0, tail.stderr()
    finally:
        relay.close()
    assert relay.dropped[0], "nothing was dropped: the test proves nothing"
    assert tail.stdout().splitlines() == text_lines(payloads)
    assert f"end of session 'FEED' after sequence {N}" in tail.stderr()


@pytest.mark.parametrize("rule", [every(20, 9), run_of(35, 30)], ids=["1-in-20", "30-in-a-row"])
def test_mold_tail_prints_every_message_once_by_soupbintcp_recovery_alone(
    processes: Processes, tmp_path: Path, rule: Rule
) -> None:
    payloads = lines_fed()
    journal = tmp_path / "feed.journal"
    secret = str(password_file(tmp_path / "password", "p"))
    soup_port, port = free_port(), free_udp_port()
    writer = processes.start(
        "serve", "--listen", f"127.0.0.1:{soup_port}", "--journal", str(journal), "--session", "FEED",
        "--user", "u", "--stdin",
        stdin=True, env=password_env(),
    )  # fmt: skip
    writer.wait_stderr("soup serve: session 'FEED'")
    relay = ThreadRelay([((LOOPBACK, port), rule)]).begin()
    try:
        tail = processes.start(
            "mold-tail", f":{port}", "--recover", f":{soup_port}", "--user", "u", "--password-file", secret,
            "--count", str(N), "--format", "text",
        )  # fmt: skip
        wait_until(lambda: bound(port), "mold-tail listening", tail)
        # The publisher follows the journal soup serve writes: SoupBinTCP to MoldUDP64, no re-request.
        follower = processes.start(
            "mold-serve", "--journal", str(journal), "--to", f"{relay.address[0]}:{relay.address[1]}"
        )
        follower.wait_stderr("soup mold-serve: session 'FEED'")
        assert writer.process.stdin is not None
        for start in range(0, N, 500):
            writer.process.stdin.write(b"\n".join(payloads[start : start + 500]) + b"\n")
            writer.process.stdin.flush()
            time.sleep(0.01)  # a real process's input, paced as a live feed
        assert tail.wait() == 0, tail.stderr()
    finally:
        relay.close()
    assert relay.dropped[0]
    assert tail.stdout().splitlines() == text_lines(payloads)
    assert "rerequest" not in tail.stderr()


def test_mold_tail_on_ab_lines_dropping_different_datagrams_asks_for_nothing(processes: Processes) -> None:
    payloads = lines_fed()
    line_a, line_b, rerequest, metrics = free_udp_port(), free_udp_port(), free_udp_port(), free_port()
    relay = ThreadRelay([((LOOPBACK, line_a), every(20, 1)), ((LOOPBACK, line_b), every(20, 11))]).begin()
    try:
        tail = processes.start(
            "mold-tail", f":{line_a}", f":{line_b}", "--rerequest", f":{rerequest}", "--format", "hex"
        )
        wait_until(lambda: bound(line_a) and bound(line_b), "mold-tail listening", tail)
        server = processes.start(
            "mold-serve", "--stdin", "--to", f"{relay.address[0]}:{relay.address[1]}",
            "--rerequest", f":{rerequest}", "--session", "AB", "--metrics", f"127.0.0.1:{metrics}",
            stdin=True,
        )  # fmt: skip
        server.wait_stderr("metrics on")
        assert server.process.stdin is not None
        server.process.stdin.write(b"\n".join(payloads))
        server.process.stdin.close()
        assert tail.wait() == 0, tail.stderr()
        served = scrape(metrics)
    finally:
        relay.close()
    assert relay.dropped[0] and relay.dropped[1] and not relay.dropped[0] & relay.dropped[1]
    assert tail.stdout().splitlines() == [f"{n} {p.hex()}" for n, p in enumerate(payloads, 1)]
    assert metric(served, 'mold_requests_served_total{session="AB"}') == 0
    assert metric(served, 'mold_publisher_messages_sent_total{session="AB"}') == N
    assert server.stop() == 143


def test_mold_record_writes_a_journal_that_soup_cat_reads_and_resumes(
    processes: Processes, tmp_path: Path
) -> None:
    payloads = lines_fed(1000)
    journal = tmp_path / "mold.journal"
    port, rerequest, metrics = free_udp_port(), free_udp_port(), free_port()
    relay = ThreadRelay([((LOOPBACK, port), every(20, 3))]).begin()
    try:
        server = processes.start(
            "mold-serve", "--stdin", "--to", f"{relay.address[0]}:{relay.address[1]}",
            "--rerequest", f":{rerequest}", "--session", "REC", "--heartbeat", "0.1",
            stdin=True,
        )  # fmt: skip
        server.wait_stderr("soup mold-serve: session 'REC'")
        assert server.process.stdin is not None
        server.process.stdin.write(b"\n".join(payloads))
        server.process.stdin.close()
        server.wait_stderr("End of Session sent")
        # Started after everything was sent: recovered from the re-request server.
        first = soup(
            "mold-record",
            f":{port}",
            "--rerequest",
            f":{rerequest}",
            "--journal",
            str(journal),
            "--count",
            "600",
        )
        assert first.returncode == 0, first.stderr
        assert "holds 600 messages of session 'REC'" in first.stderr
        record = processes.start(
            "mold-record", f":{port}", "--rerequest", f":{rerequest}", "--journal", str(journal),
            "--metrics", f"127.0.0.1:{metrics}",
        )  # fmt: skip
        assert record.wait() == 0, record.stderr()
    finally:
        relay.close()
    assert stored_count(journal) == 1000
    cat = soup("cat", str(journal))
    assert cat.stdout.splitlines() == text_lines(payloads)
    assert "end of session 'REC' after sequence 1000" in record.stderr()


def test_mold_tail_metrics_count_gaps_and_recoveries(processes: Processes, tmp_path: Path) -> None:
    port, rerequest, metrics = free_udp_port(), free_udp_port(), free_port()
    relay = ThreadRelay([((LOOPBACK, port), run_of(2, 3))]).begin()
    try:
        tail = processes.start(
            "mold-tail", f":{port}", "--rerequest", f":{rerequest}", "--metrics", f"127.0.0.1:{metrics}"
        )
        tail.wait_stderr("metrics on")
        wait_until(lambda: bound(port), "mold-tail listening", tail)
        server = processes.start(
            "mold-serve", "--stdin", "--to", f"{relay.address[0]}:{relay.address[1]}",
            "--rerequest", f":{rerequest}", "--session", "MET",
            stdin=True,
        )  # fmt: skip
        assert server.process.stdin is not None
        server.process.stdin.write(b"\n".join(lines_fed(2000)) + b"\n")
        server.process.stdin.flush()  # not closed: no End of Session, the tail keeps running
        wait_until(lambda: "2000 m2000" in tail.stdout(), "the last message printed", tail)
        scraped = scrape(metrics)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=10) as health:
            assert health.status == 200
        assert tail.stop() == 143
    finally:
        relay.close()
    dropped = len(relay.dropped[0])
    assert dropped
    assert metric(scraped, 'mold_receiver_messages_total{session="MET"}') == 2000
    assert metric(scraped, 'mold_receiver_gaps_detected_total{session="MET"}') == 1
    assert metric(scraped, 'mold_receiver_recovered_total{session="MET",via="rerequest"}') == dropped
    assert metric(scraped, 'mold_receiver_recovered_total{session="MET",via="soupbintcp"}') == 0
    assert metric(scraped, 'mold_receiver_duplicates_dropped_total{session="MET"}') == 0


def test_errors_are_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, 0))
        busy = taken.getsockname()[1]
        failed = soup("mold-tail", f":{busy}")
        assert failed.returncode == 1
        assert "address already in use" in single_error_line(failed.stderr).lower()
    missing = soup("mold-serve", "--journal", str(tmp_path / "none.journal"), "--to", ":9")
    assert missing.returncode == 1 and "does not exist" in single_error_line(missing.stderr)
    usage = soup("mold-serve", "--to", ":9")
    assert usage.returncode == 2 and "give what to serve" in usage.stderr
    three = soup("mold-tail", ":1", ":2", ":3")
    assert three.returncode == 2 and "one line, or two" in three.stderr
    nothing = soup("mold-tail", f":{free_udp_port()}", "--count", "0")
    assert nothing.returncode == 0 and nothing.stdout == ""
