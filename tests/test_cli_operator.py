"""The ``soup`` command as an operator meets it on a live feed (issue 17), each a real process.

One test (or table of tests) per finding of the issue: Ctrl-C and SIGTERM heard at any point,
also while catching up on a big backlog (exit 130/143, the journal never torn); several servers
and fail-over; a state report on standard error once per change (refused, retrying, logged in,
dropped) and an error at once for a name that does not resolve; one line, never a traceback, for
every mistake; nothing left behind by a failed start; the edge cases of ``--count``,
``--sequence`` and starting past the end; help that reads whole.

Servers are ``soup serve`` processes on journals written by the test; signals are real. No
assertion depends on speed: a stop must come within :data:`STOP_BOUND` seconds, a generous bound.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cliutil import (
    Feed,
    Processes,
    Running,
    cat_lines,
    json_messages,
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
from nasdaq_protocols.soup.cli import main
from nasdaq_protocols.soup.cli.compat_tail import command as compat_tail
from nasdaq_protocols.soup.core import LoginRequest
from nasdaq_protocols.soup.store import FileStore
from netutil import free_port, nats_server_binary

__all__ = ["processes"]  # a fixture, imported for the tests below

#: Seconds within which a command must exit after Ctrl-C or SIGTERM (it should take a fraction
#: of one; the bound is for a loaded machine).
STOP_BOUND = 5.0

#: The backlog the catch-up tests start behind: tail and record take seconds over it.
BACKLOG = 1_000_000


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server with :data:`BACKLOG` messages (``message N``); its address and journal."""
    folder = tmp_path_factory.mktemp("backlog")
    journal = folder / "feed.journal"
    write_journal(journal, BACKLOG)
    started = Processes(folder / "logs")
    try:
        yield serve_journal(started, journal), journal
    finally:
        started.kill_all()


def journal_records(path: Path) -> bytes:
    """A journal's bytes after its 32-byte header: the stored packets, in order."""
    return path.read_bytes()[32:]


# --------------------------------------------------------------------------- 1. Ctrl-C, SIGTERM


def stop_and_check_exit(running: Running, sig: int, times: int = 1) -> None:
    for _ in range(times):
        running.process.send_signal(sig)
    code = running.wait(STOP_BOUND)
    assert code == 128 + sig, f"exit {code} after {signal.Signals(sig).name}: {running.stderr()}"
    assert "Traceback" not in running.stderr(), running.stderr()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tail_stops_at_once_while_catching_up(
    backlog: tuple[str, Path], processes: Processes, sig: int
) -> None:
    address, _ = backlog
    tail = processes.start("tail", address, "--format", "json")
    wait_until(lambda: tail.stdout_path.stat().st_size > 100_000, "tail catching up", tail)
    stop_and_check_exit(tail, sig)
    lines = tail.stdout().splitlines()
    # Whatever was printed is whole lines, from message 1 on, in order.
    assert json.loads(lines[0])["seq"] == 1
    assert json_messages(lines[-1:])[0] == {
        "seq": len(lines),
        "type": "S",
        "data": f"message {len(lines)}",
        "size": len(f"message {len(lines)}"),
    }


@pytest.mark.parametrize(
    ("sig", "times"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 3)],
    ids=["SIGINT", "SIGTERM", "SIGINT-three-times"],
)
def test_record_stops_at_once_while_catching_up_with_the_journal_intact(
    backlog: tuple[str, Path], processes: Processes, tmp_path: Path, sig: int, times: int
) -> None:
    address, source = backlog
    recorded = tmp_path / "copy.journal"
    recorder = processes.start("record", address, "--journal", str(recorded))
    wait_until(lambda: stored_count(recorded) >= 10_000, "record catching up", recorder)
    stop_and_check_exit(recorder, sig, times)
    copied = journal_records(recorded)
    assert copied == journal_records(source)[: len(copied)], "the journal is not a prefix of the stream"
    with FileStore(str(recorded)) as store:  # a writable open finds no torn tail to cut
        assert store.recovered_bytes == 0
        kept = store.last_sequence
    assert kept >= 10_000
    if times == 1:  # a second signal exits at once, before the summary line
        assert f"holds {kept} messages of session 'FEED'" in recorder.stderr()


def test_relay_stops_at_once_while_catching_up(
    backlog: tuple[str, Path], processes: Processes, tmp_path: Path
) -> None:
    address, source = backlog
    journal = tmp_path / "relay.journal"
    relay = processes.start("relay", address, "--listen", "127.0.0.1:0", "--journal", str(journal))
    wait_until(lambda: stored_count(journal) >= 10_000, "relay catching up", relay)
    stop_and_check_exit(relay, signal.SIGINT)
    copied = journal_records(journal)
    assert copied == journal_records(source)[: len(copied)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_and_demo_stop_at_once(processes: Processes, tmp_path: Path, sig: int) -> None:
    server = processes.start("serve", "--listen", "127.0.0.1:0", "--journal", str(tmp_path / "j.journal"))
    server.wait_stderr("soup serve: session")
    stop_and_check_exit(server, sig)
    demo = processes.start("demo", "--messages", "5000000")
    wait_until(lambda: "publishing" in demo.stdout(), "the demo running", demo)
    stop_and_check_exit(demo, sig)


def test_tail_stops_at_once_when_its_server_ignores_the_logout(processes: Processes) -> None:
    # A server that accepts the login, sends one message, then ignores everything (the logout
    # included) and never closes: the stop must not wait for it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_once() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1024)  # the Login Request
                connection.sendall(b"\x00\x1fA      FEED" + b" " * 19 + b"1" + b"\x00\x04Sone")
                while connection.recv(1024):
                    pass

        server = threading.Thread(target=serve_once, daemon=True)
        server.start()
        tail = processes.start("tail", f"127.0.0.1:{port}", "--heartbeat", "30")
        wait_until(lambda: tail.stdout() == "1 one\n", "the message", tail)
        stop_and_check_exit(tail, signal.SIGINT)
        assert "stopped (cleaning up" not in tail.stderr()  # the logout wait is bounded on its own


def test_serve_stops_at_once_with_a_client_that_does_not_read(processes: Processes, tmp_path: Path) -> None:
    write_journal(tmp_path / "feed.journal", 200_000)
    address = serve_journal(processes, tmp_path / "feed.journal")
    server = processes.started[-1]
    host, port = address.split(":")
    with socket.create_connection((host, int(port))) as stalled:  # logs in, then never reads
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(LoginRequest("u", "p", "", "1").to_bytes()[1])
        time.sleep(0.5)  # the server fills what the connection takes, then waits for the reader
        stop_and_check_exit(server, signal.SIGTERM)
    assert "stopped (cleaning up" not in server.stderr()


# --------------------------------------------------------------------------- 3. several servers


def test_tail_fails_over_when_its_server_is_killed(processes: Processes, tmp_path: Path) -> None:
    count = 300_000
    payloads = write_journal(tmp_path / "a.journal", count)
    shutil.copy(tmp_path / "a.journal", tmp_path / "b.journal")  # two gateways, one stream
    first = serve_journal(processes, tmp_path / "a.journal")
    second = serve_journal(processes, tmp_path / "b.journal")
    server_a = processes.started[-2]
    # The comma form of a list; standard output is a pipe read only in part at first, so tail
    # is mid-stream, blocked on it, when its server dies.
    tail = processes.start("tail", f"{first},{second}", "--count", str(count), stdout_pipe=True)
    assert tail.process.stdout is not None
    head = [tail.process.stdout.readline().decode() for _ in range(1000)]
    server_a.process.kill()
    rest = tail.process.stdout.read().decode().splitlines()
    assert tail.wait() == 0, tail.stderr()
    assert [line.rstrip("\n") for line in head] + rest == text_lines(payloads)
    assert re.search(rf"soup tail: disconnected from {first} \(peer closed\); reconnecting", tail.stderr())


@pytest.mark.parametrize("command", ["tail", "record", "relay"])
def test_a_dead_server_first_in_the_list_is_skipped(
    processes: Processes, tmp_path: Path, command: str
) -> None:
    payloads = write_journal(tmp_path / "feed.journal", 500)
    live = serve_journal(processes, tmp_path / "feed.journal")
    dead = f"127.0.0.1:{free_port()}"
    copy = tmp_path / "copy.journal"
    if command == "tail":
        result = soup("tail", dead, live, "--count", "500")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == text_lines(payloads)
    elif command == "record":
        result = soup("record", dead, live, "--journal", str(copy), "--count", "500")
        assert result.returncode == 0, result.stderr
        assert cat_lines(copy) == text_lines(payloads)
    else:
        relay = processes.start("relay", dead, live, "--listen", "127.0.0.1:0", "--journal", str(copy))
        served = relay.wait_stderr(r"-> ([\d.]+:\d+), session 'FEED'").group(1)
        assert soup("tail", served, "--count", "500").stdout.splitlines() == text_lines(payloads)
        result = subprocess.CompletedProcess(relay.args, 0, "", relay.stderr())
    assert f"soup {command}: cannot connect to {dead}: connection refused" in result.stderr


# --------------------------------------------------------------------------- 4. say what happens


def test_connection_trouble_is_said_once_per_change_of_state(processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    tail = processes.start("-v", "tail", address, "--user", "u", env=password_env())
    # The library logs every attempt (-v); the command says it once.
    wait_until(lambda: tail.stderr().count("cannot log in at") >= 3, "three attempts", tail)
    refused = f"soup tail: cannot connect to {address}: connection refused; retrying in"
    assert tail.stderr().count(refused) == 1, tail.stderr()

    feed = Feed(processes, tmp_path / "feed.journal", listen=address)
    feed.publish([b"one", b"two"])
    wait_until(lambda: tail.stdout().splitlines() == ["1 one", "2 two"], "the messages", tail)
    assert tail.stderr().count("soup tail: logged in, session 'FEED', receiving from sequence 1") == 1

    feed.server.process.kill()  # the server dies: the drop is said, then the refusals, once
    tail.wait_stderr(rf"soup tail: disconnected from {address} \(peer closed\); reconnecting to resume at 3")
    wait_until(lambda: tail.stderr().count(refused) == 2, "the refusal said again", tail)
    feed = Feed(processes, tmp_path / "feed.journal", listen=address)  # back, same journal
    feed.publish([b"three"])
    wait_until(lambda: tail.stdout().splitlines()[-1:] == ["3 three"], "the stream going on", tail)
    assert tail.stderr().count(refused) == 2, tail.stderr()
    stop_and_check_exit(tail, signal.SIGTERM)


@pytest.mark.parametrize(
    "arguments",
    [
        ["tail", "nosuch.invalid:7000"],
        ["tail", "127.0.0.1:7000,nosuch.invalid:7001"],
        ["record", "nosuch.invalid:7000", "--journal", "JOURNAL"],
        ["relay", "nosuch.invalid:7000", "--listen", "127.0.0.1:0", "--journal", "JOURNAL"],
    ],
    ids=["tail", "tail-list", "record", "relay"],
)
def test_a_name_that_does_not_resolve_is_an_error_at_once(tmp_path: Path, arguments: list[str]) -> None:
    journal = tmp_path / "x.journal"
    result = soup(*[str(journal) if argument == "JOURNAL" else argument for argument in arguments])
    assert result.returncode == 1
    assert "cannot resolve 'nosuch.invalid'" in single_error_line(result.stderr)
    assert not journal.exists()


# --------------------------------------------------------------------------- 5. one line, exit 2 or 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["serve", "--listen", ":99999"],
        ["serve", "--listen", "127.0.0.1:-1"],
        ["tail", ":99999"],
        ["tail", ":0"],
        ["tail", ":7000,nonsense"],
        ["tail", "::1:7000"],
        ["record", ":99999", "--journal", "j.journal"],
        ["relay", ":7000", "--listen", ":70000", "--journal", "j.journal"],
        ["tail", ":7000", "--count", "-1"],
        ["tail", ":7000", "--sequence", "-5"],
        ["tail", ":7000", "--heartbeat", "0"],
        ["serve", "--session", "ELEVENCHARS"],
        ["serve", "--tls-key", "pyproject.toml"],
        ["publish", "--store", "http://nowhere/FEED"],
    ],
    ids=lambda arguments: "-".join(arguments),
)
def test_mistakes_are_usage_errors_without_traceback(arguments: list[str]) -> None:
    result = soup(*arguments)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error:" in result.stderr


def test_publish_to_an_ended_stream_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        store = f"nats://127.0.0.1:{port}/FEED"
        assert soup("publish", "--store", store, input=b"one\ntwo\n").returncode == 0
        ended = soup("publish", "--store", store, "--end-session", input=b"")
        assert ended.returncode == 0, ended.stderr
        result = soup("publish", "--store", store, input=b"three\n")
        assert result.returncode == 1
        assert "stream 'FEED' is sealed: its session has ended" in single_error_line(result.stderr)
    finally:
        server.kill()
        server.wait()


def test_without_nats_py_the_hint_says_how_to_install_it() -> None:
    hide_nats = (
        "import sys; sys.modules['nats'] = None; sys.argv[0] = 'soup';"
        " from nasdaq_protocols.soup.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_nats, "serve", "--store", "nats://127.0.0.1:4222/FEED"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    line = single_error_line(result.stderr)
    assert "pip install -e '.[nats]'" in line
    assert "soupbintcp[nats]" not in line


# --------------------------------------------------------------------------- 6. no debris


def test_a_failed_start_leaves_nothing_behind(processes: Processes, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        journal = tmp_path / "feed.journal"
        result = soup("serve", "--listen", busy, "--journal", str(journal))
        assert result.returncode == 1
        assert f"cannot listen on {busy}" in single_error_line(result.stderr)
        result = soup("serve", "--listen", busy, "--journal", str(tmp_path / "users"), "--per-user")
        assert result.returncode == 1
        write_journal(tmp_path / "upstream.journal", 10)
        upstream = serve_journal(processes, tmp_path / "upstream.journal")
        result = soup("relay", upstream, "--listen", busy, "--journal", str(tmp_path / "relay.journal"))
        assert result.returncode == 1
        assert f"cannot listen on {busy}" in single_error_line(result.stderr)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "logs",
        "upstream.journal",
        "upstream.journal.sums",
    ]
    # Nothing recorded a session: a later start names its own.
    started = processes.start(
        "serve", "--listen", "127.0.0.1:0", "--journal", str(journal), "--session", "FEED"
    )
    started.wait_stderr("soup serve: session 'FEED' on")

    result = soup("serve", "--journal", str(tmp_path / "no" / "such" / "folder.journal"))
    assert result.returncode == 1
    assert "does not exist" in single_error_line(result.stderr)


# --------------------------------------------------------------------------- 7. edge cases


def test_count_zero_prints_nothing(processes: Processes, tmp_path: Path) -> None:
    write_journal(tmp_path / "feed.journal", 5)
    address = serve_journal(processes, tmp_path / "feed.journal")
    for command in (["tail", address], ["cat", str(tmp_path / "feed.journal")]):
        result = soup(*command, "--count", "0")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_starting_past_the_end_says_so_once_and_waits(processes: Processes, tmp_path: Path) -> None:
    feed = Feed(processes, tmp_path / "feed.journal")
    feed.publish([b"m1", b"m2", b"m3"])
    feed.wait_stored()
    tail = processes.start(
        "tail", feed.address, "--user", "u", "--sequence", "6", "--count", "2", env=password_env()
    )
    tail.wait_stderr("soup tail: session 'FEED' holds 3 messages so far; waiting for message 6")
    feed.publish([b"m4", b"m5", b"m6", b"m7"])
    assert tail.wait() == 0, tail.stderr()
    assert tail.stdout().splitlines() == ["6 m6", "7 m7"]
    assert tail.stderr().count("waiting for message") == 1


# --------------------------------------------------------------------------- 8. help


COMMANDS = [
    "demo",
    "serve",
    "tail",
    "record",
    "cat",
    "verify",
    "relay",
    "publish",
    "passwd",
    "mold-serve",
    "mold-tail",
    "mold-record",
    "import",
    "export",
]


def test_command_summaries_are_whole_sentences() -> None:
    result = soup("--help")
    listed = result.stdout.split("Commands:", 1)[1].strip().splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(COMMANDS)
    for line in listed:
        assert not line.endswith("..."), line
        assert line.endswith("."), line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_markup_and_every_option_is_explained(command: str) -> None:
    result = soup(command, "--help")
    assert result.returncode == 0
    assert "`" not in result.stdout
    options = result.stdout.split("Options:", 1)[1]
    # Each option starts a line ("  --name ..."); its help follows on that line or the next.
    entries = re.split(r"\n  (?=-)", "\n" + options)
    for entry in entries[1:]:
        words = entry.split()
        assert len(words) > 2, f"{command}: no help for {entry.strip()!r}"


def every_command() -> list[click.Command]:
    """``soup`` itself, each of its commands, and the ``nasdaq-soup-tail`` alias."""
    return [main, *main.commands.values(), compat_tail]


@pytest.mark.parametrize("command", every_command(), ids=lambda command: command.name or "")
def test_every_option_has_help_in_whole_sentences(command: click.Command) -> None:
    """Each option's help (and the command's summary and first line) starts with a capital and
    ends with a full stop; ``-h/--help`` is click's own."""
    context = click.Context(command, info_name=command.name)
    summary = command.get_short_help_str(limit=200)
    assert summary[:1].isupper() and summary.endswith("."), f"{command.name}: summary {summary!r}"
    first_line = (command.help or "").strip().split("\n\n")[0]
    assert first_line[:1].isupper() and first_line.endswith("."), f"{command.name}: {first_line!r}"
    for parameter in command.get_params(context):
        if not isinstance(parameter, click.Option) or parameter.hidden:
            continue
        text = (parameter.help or "").strip()
        assert text, f"{command.name} {parameter.opts[0]}: no help"
        assert text[0].isupper() and text.endswith("."), f"{command.name} {parameter.opts[0]}: {text!r}"


def test_relay_has_tls_options_both_ways() -> None:
    text = soup("relay", "--help").stdout
    for option in (
        "--upstream-tls",
        "--upstream-tls-ca",
        "--upstream-tls-cert",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
    ):
        assert option in text


def test_python_m_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nasdaq_protocols.soup.cli", "tail", ":1", "--no-reconnect"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 1
    assert (
        single_error_line(result.stderr) == "soup: error: cannot connect to 127.0.0.1:1: connection refused"
    )
