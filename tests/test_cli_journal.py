"""Journals from the command line (issue 29), each a real process: ``soup verify`` and ``soup cat``
report damage with its position and exit 1; ``cat --to`` and ``cat --follow``; SIGUSR1 ends a
``soup serve`` session for the clients connected and those that come later, also after a restart
on the same journal.
"""

from __future__ import annotations

import random
import re
import signal
from pathlib import Path

import pytest

from cliutil import (
    Feed,
    Processes,
    cat_lines,
    make_payloads,
    password_env,
    processes,
    serve_journal,
    single_error_line,
    soup,
    stored_count,
    text_lines,
    wait_until,
    write_journal,
)
from nasdaq_protocols.soup.store import JOURNAL_HEADER_SIZE
from nasdaq_protocols.soup.store.checksums import REGION_BYTES

__all__ = ["processes"]  # a fixture, imported for the tests below


def record_offset(payloads: list[bytes], sequence: int) -> int:
    """The journal offset of message ``sequence``'s record."""
    return JOURNAL_HEADER_SIZE + sum(3 + len(payload) for payload in payloads[: sequence - 1])


def damage(path: Path, offset: int, data: bytes | None = None) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        if data is None:  # flip the lowest bit of one byte
            data = bytes([file.read(1)[0] ^ 1])
            file.seek(offset)
        file.write(data)


# --------------------------------------------------------------------------- damage


def test_a_sound_journal_verifies(tmp_path: Path) -> None:
    journal = tmp_path / "feed.journal"
    write_journal(journal, 20_000)
    result = soup("verify", str(journal))
    assert result.returncode == 0, result.stderr
    summary = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert summary["messages"] == "20000" and summary["result"] == "sound"
    assert summary["checksums"] == "messages 1 to 20000"
    assert re.fullmatch(r"[\d.]+ MB in [\d.]+ s \([\d,]+ MB/s\)", summary["checked"]), summary
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("where", "data"),
    [("payload", None), ("length", b"\x00\x00\x00"), ("type", b"U")],
    ids=["flipped-payload-byte", "zeros-over-a-length-field", "type-byte"],
)
def test_damage_is_an_error_with_its_position_for_verify_cat_and_serve(
    tmp_path: Path, where: str, data: bytes | None
) -> None:
    journal = tmp_path / "feed.journal"
    payloads = write_journal(journal, 20_000)
    offset = record_offset(payloads, 12_345) + {"payload": 7, "length": 0, "type": 2}[where]
    damage(journal, offset, data)

    result = soup("verify", str(journal))
    assert result.returncode == 1
    found = re.search(r"damaged at message (\d+) \(byte offset (\d+)\)", single_error_line(result.stderr))
    assert found, result.stderr
    first_bad, bad_offset = int(found.group(1)), int(found.group(2))
    # The first message of the damaged region: at most a region (and a record) before the damage.
    assert first_bad <= 12_345 and offset - (REGION_BYTES + 65_537) < bad_offset <= offset
    assert bad_offset == record_offset(payloads, first_bad)
    assert re.search(r"^result +damaged$", result.stdout, re.MULTILINE), result.stdout
    error = single_error_line(result.stderr)

    printed = soup("cat", str(journal))
    assert printed.returncode == 1
    assert single_error_line(printed.stderr) == error
    assert printed.stdout.splitlines() == text_lines(payloads[: first_bad - 1])

    stats = soup("cat", str(journal), "--stats")
    assert stats.returncode == 1 and single_error_line(stats.stderr) == error
    assert re.search(r"^result +damaged$", stats.stdout, re.MULTILINE), stats.stdout

    past = soup("cat", str(journal), "--from", "15000")
    assert (past.returncode, past.stdout) == (1, "")
    assert single_error_line(past.stderr) == error

    served = soup("serve", "--listen", "127.0.0.1:0", "--journal", str(journal))
    assert served.returncode == 1
    assert f"damaged at message {first_bad} (byte offset {bad_offset})" in single_error_line(served.stderr)


def test_a_journal_from_before_checksums_opens_and_says_it_has_none(tmp_path: Path) -> None:
    journal = tmp_path / "old.journal"
    payloads = [b"old %d" % n for n in range(1, 101)]
    records = b"".join(len(p).__add__(1).to_bytes(2, "big") + b"S" + p for p in payloads)
    journal.write_bytes(b"SOUPJRNL\x00\x01" + b"OLD".rjust(10) + bytes(12) + records)
    result = soup("verify", str(journal))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^checksums +none \(written before journals had checksums", result.stdout, re.M)
    assert cat_lines(journal) == text_lines(payloads)
    assert "none (written before" in soup("cat", str(journal), "--stats").stdout


# --------------------------------------------------------------------------- cat --to and --follow


def test_cat_to(tmp_path: Path) -> None:
    journal = tmp_path / "feed.journal"
    payloads = write_journal(journal, 300)
    assert cat_lines(journal, "--from", "10", "--to", "20") == text_lines(payloads[9:20], first=10)
    assert cat_lines(journal, "--to", "5", "--count", "3") == text_lines(payloads[:3])
    assert cat_lines(journal, "--from", "299", "--to", "1000") == text_lines(payloads[298:], first=299)
    assert cat_lines(journal, "--from", "20", "--to", "10") == []
    assert soup("cat", str(journal), "--stats", "--to", "3").returncode == 2


def test_cat_follow_prints_what_is_appended_until_the_session_ends(
    processes: Processes, tmp_path: Path
) -> None:
    feed = Feed(processes, tmp_path / "feed.journal")
    payloads = make_payloads(600, random.Random(29))
    feed.publish(payloads[:200])
    feed.wait_stored()
    follower = processes.start("cat", str(feed.journal), "--follow", "--from", "150")
    bounded = processes.start("cat", str(feed.journal), "--follow", "--to", "450", "--format", "hex")
    wait_until(lambda: len(follower.stdout().splitlines()) == 51, "the journal so far", follower)
    feed.publish(payloads[200:])
    wait_until(lambda: len(follower.stdout().splitlines()) == 451, "what was appended", follower)
    assert bounded.wait() == 0  # --to reached
    assert len(bounded.stdout().splitlines()) == 450
    assert follower.process.poll() is None  # still following
    feed.server.process.send_signal(signal.SIGUSR1)
    assert follower.wait() == 0
    assert follower.stdout().splitlines() == text_lines(payloads[149:], first=150)
    assert follower.stderr().strip() == "soup cat: end of session 'FEED' after sequence 600"


def test_cat_follow_stops_on_sigterm(processes: Processes, tmp_path: Path) -> None:
    journal = tmp_path / "feed.journal"
    write_journal(journal, 10)
    follower = processes.start("cat", str(journal), "-f")
    wait_until(lambda: len(follower.stdout().splitlines()) == 10, "the journal", follower)
    assert follower.stop(signal.SIGTERM) == 143
    assert "Traceback" not in follower.stderr()


# --------------------------------------------------------------------------- End of Session on SIGUSR1


def test_sigusr1_ends_the_session_for_connected_and_later_clients_and_after_a_restart(
    processes: Processes, tmp_path: Path
) -> None:
    feed = Feed(processes, tmp_path / "feed.journal")
    payloads = make_payloads(3000, random.Random(1))
    feed.publish(payloads)
    feed.wait_stored()
    credentials = ("--user", "u")  # the password from SOUP_PASSWORD (password_env)
    connected = processes.start("tail", feed.address, *credentials, env=password_env())
    wait_until(lambda: len(connected.stdout().splitlines()) == 3000, "a client caught up", connected)

    feed.server.process.send_signal(signal.SIGUSR1)
    feed.server.wait_stderr("session 'FEED' ended after sequence 3000 \\(SIGUSR1\\)")
    assert connected.wait() == 0
    assert connected.stdout().splitlines() == text_lines(payloads)
    assert connected.stderr().strip() == "soup tail: end of session 'FEED' after sequence 3000"

    # A client that dropped just before the end fetches its tail, then gets End of Session.
    late = soup("tail", feed.address, *credentials, "--sequence", "2990", env=password_env())
    assert late.returncode == 0, late.stderr
    assert late.stdout.splitlines() == text_lines(payloads[2989:], first=2990)
    assert "end of session 'FEED' after sequence 3000" in late.stderr
    caught_up = soup(
        "tail", feed.address, *credentials, "--sequence", "0", env=password_env()
    )  # nothing left: the end
    assert (caught_up.returncode, caught_up.stdout) == (0, ""), caught_up.stderr
    assert "end of session 'FEED' after sequence 3000" in caught_up.stderr
    feed.publish([b"after the end"])  # not read any more: nothing is published after the end
    assert feed.server.process.poll() is None and stored_count(feed.journal) == 3000

    # The journal keeps the end: a server started again on it serves the ending too.
    assert feed.server.stop() == 143
    address = serve_journal(processes, feed.journal)
    restarted = processes.started[-1]
    restarted.wait_stderr("session 'FEED' ended after sequence 3000 \\(as the journal records\\)")
    again = soup("tail", address, "--sequence", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == text_lines(payloads)
    assert "end of session 'FEED' after sequence 3000" in again.stderr
    assert re.search(r"^ended +yes$", soup("verify", str(feed.journal)).stdout, re.MULTILINE)
