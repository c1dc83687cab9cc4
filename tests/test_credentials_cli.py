"""Credentials operators can trust, from the command line (issue 27), as real processes.

``soup tail``, ``record`` and ``relay`` given their passwords by ``SOUP_PASSWORD``,
``SOUP_UPSTREAM_PASSWORD`` or ``--password-file``: no command line on the machine holds them
(every ``/proc/*/cmdline`` is read, and a ``--password`` process is the control that shows the
scan finds one). ``soup serve --users`` with per-user passwords and sessions, ``soup passwd`` and
SIGHUP while clients stay connected, ``--audit-log`` with one JSON line per login, the warnings,
and the usage errors. The slow test at the end runs the issue's scenario at full size with the
default throttle and reports its numbers (the strict "under 100 ms" lives there, because it is
a timing that a loaded shared machine may miss; the normal suite checks the same behaviour
without timing in ``test_credentials_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import string
import time
from pathlib import Path
from typing import Any

import pytest

from cliutil import (
    WAIT,
    Processes,
    password_env,
    password_file,
    processes,
    single_error_line,
    soup,
    stored_count,
    wait_until,
)
from nasdaq_protocols.soup.core import LoginAccepted, LoginRejected
from nasdaq_protocols.soup.server import MAX_UNAUTHENTICATED_PER_ADDRESS, hash_password
from netutil import NatsServer, RawClient

__all__ = ["processes"]  # a fixture, imported for the tests below

FAST = {"n": 2**10}  # a cheap scrypt cost (carried by the hash string) where speed is not the point
OTHER_ADDRESS = "127.0.0.2"


def new_secret() -> str:
    """A password no process on the machine has in its command line by chance (10 characters)."""
    return "Zk" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))


def command_lines_holding(secret: str) -> list[str]:
    """Every process on the machine whose command line holds ``secret``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            line = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if secret.encode() in line:
            shown = line.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {shown}")
    return found


def write_users(path: Path, **users: str) -> Path:
    """A users file: ``name="password"`` or ``name="password:SESSION,..."``, after a comment line."""
    lines = ["# soup serve --users"]
    for name, spec in users.items():
        password, _, sessions = spec.partition(":")
        lines.append(f"{name}:{hash_password(password, **FAST)}" + (f":{sessions}" if sessions else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


class UsersServer:
    """``soup serve --users F --stdin --audit-log A`` on a free port."""

    def __init__(self, processes: Processes, users: Path, audit: Path, *options: str) -> None:
        self.audit = audit
        self.process = processes.start(
            "serve", "--listen", "127.0.0.1:0", "--session", "FEED", "--users", str(users),
            "--audit-log", str(audit), "--stdin", *options, stdin=True,
        )  # fmt: skip
        found = self.process.wait_stderr(r"soup serve: session 'FEED' on ([\d.]+):(\d+)")
        self.address = f"127.0.0.1:{found.group(2)}"
        self.port = int(found.group(2))
        self.published = 0

    def publish(self, count: int) -> None:
        stdin = self.process.process.stdin
        assert stdin is not None
        stdin.write(b"".join(b"m%d\n" % (self.published + n) for n in range(1, count + 1)))
        stdin.flush()
        self.published += count

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def tail(server: UsersServer, user: str, password: str, *args: str) -> Any:
    return soup("tail", server.address, "--user", user, "--no-reconnect", *args, env=password_env(password))


# --------------------------------------------------------------------------- secrets out of argv


def test_no_command_line_holds_a_password_given_by_environment_or_file(
    processes: Processes, tmp_path: Path
) -> None:
    client_secret, upstream_secret, relay_secret, control = (new_secret() for _ in range(4))
    users = write_users(tmp_path / "users", alice=client_secret, relay=upstream_secret, down=relay_secret)
    server = UsersServer(processes, users, tmp_path / "audit.jsonl")
    server.publish(3)
    tailing = processes.start("tail", server.address, "--user", "alice", env=password_env(client_secret))
    recording = processes.start(
        "record", server.address, "--user", "alice", "--journal", str(tmp_path / "copy.journal"),
        "--password-file", str(password_file(tmp_path / "alice.pw", client_secret)),
    )  # fmt: skip
    relaying = processes.start(
        "relay", server.address, "--upstream-user", "relay", "--journal", str(tmp_path / "relay.journal"),
        "--listen", "127.0.0.1:0", "--users", str(users),
        env=password_env("unused", upstream=upstream_secret),
    )  # fmt: skip
    wait_until(lambda: tailing.stdout().count("\n") == 3, "tail printing", tailing)
    wait_until(lambda: stored_count(tmp_path / "copy.journal") == 3, "record storing", recording)
    downstream = relaying.wait_stderr(r"-> ([\d.]+:\d+), session 'FEED'").group(1)
    assert (
        soup("tail", downstream, "--user", "down", "--count", "3", env=password_env(relay_secret)).returncode
        == 0
    )
    # The control: a process given --password is found by the same scan.
    shown = processes.start("tail", server.address, "--user", "alice", "--password", control)
    shown.wait_stderr("warning: --password is visible")
    try:
        assert command_lines_holding(control), "the scan does not see command lines"
        for secret in (client_secret, upstream_secret, relay_secret):
            assert command_lines_holding(secret) == []
    finally:
        shown.kill()
    for running in (tailing, recording, relaying):
        assert running.process.poll() is None, running.stderr()
        assert "warning" not in running.stderr(), running.stderr()


def test_password_sources_warnings_and_mistakes(processes: Processes, tmp_path: Path) -> None:
    nowhere = "127.0.0.1:9"  # --count 0 exits before connecting
    result = soup("tail", nowhere, "--password", "pw", "--count", "0")
    assert result.returncode == 0
    assert result.stderr == (
        "soup tail: warning: --password is visible to every user of this machine (ps, /proc);"
        " use SOUP_PASSWORD or --password-file\n"
    )
    mold = soup("mold-tail", "127.0.0.1:9", "--recover", nowhere, "--password", "pw", "--count", "0")
    assert mold.returncode == 0 and mold.stderr.count("warning: --password is visible") == 1, mold.stderr
    readable = password_file(tmp_path / "pw", "secret")
    readable.chmod(0o644)
    result = soup("tail", nowhere, "--password-file", str(readable), "--count", "0")
    assert result.returncode == 0
    assert result.stderr == (
        f"soup tail: warning: --password-file {readable} can be read by its group and other users"
        f" (mode 0644); chmod 600 {readable}\n"
    )
    assert "secret" not in result.stderr
    both = soup("tail", nowhere, "--password", "pw", "--password-file", str(readable), "--count", "0")
    assert both.returncode == 2 and "give --password or --password-file, not both" in both.stderr
    (tmp_path / "empty").write_text("\n")
    empty = soup("tail", nowhere, "--password-file", str(tmp_path / "empty"), "--count", "0")
    assert empty.returncode == 2 and "holds no password on its first line" in empty.stderr
    missing = soup("tail", nowhere, "--password-file", str(tmp_path / "missing"), "--count", "0")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    # Two passwords on the command line: one warning (the journal's folder is missing: exit 1).
    relay = soup(
        "relay", nowhere, "--journal", str(tmp_path / "no" / "r.journal"), "--user", "u", "--password", "a",
        "--upstream-password", "b",
    )  # fmt: skip
    assert relay.returncode == 1
    warning, error = relay.stderr.splitlines()
    assert warning.startswith("soup relay: warning: --password is visible to every user")
    assert error.startswith("soup: error: ")


# --------------------------------------------------------------------------- serve --users


def test_serve_users_accepts_each_user_and_refuses_wrong_passwords_and_sessions(
    processes: Processes, tmp_path: Path
) -> None:
    users = write_users(tmp_path / "users", alice="a-pw", bob="b-pw:FEED", carol="c-pw:OTHER")
    server = UsersServer(processes, users, tmp_path / "audit.jsonl")
    server.publish(2)
    for user, password in (("alice", "a-pw"), ("bob", "b-pw")):
        result = tail(server, user, password, "--count", "2")
        assert (result.returncode, result.stdout) == (0, "1 m1\n2 m2\n"), result.stderr
    wrong = tail(server, "alice", "b-pw", "--count", "1")
    assert wrong.returncode == 1 and "not authorized (A)" in single_error_line(wrong.stderr)
    other = tail(server, "carol", "c-pw", "--count", "1")
    assert other.returncode == 1 and "session not available (S)" in single_error_line(other.stderr)
    unknown = tail(server, "mallet", "a-pw", "--count", "1")
    assert "not authorized (A)" in single_error_line(unknown.stderr)

    lines = wait_until(lambda: len(server.audit_lines()) == 5 and server.audit_lines(), "5 audit lines")
    assert [(line["user"], line["result"], line["code"], line["reason"]) for line in lines] == [
        ("alice", "accepted", None, ""),
        ("bob", "accepted", None, ""),
        ("alice", "rejected", "A", "wrong password"),
        ("carol", "rejected", "S", "user 'carol' may not log in to session 'FEED'"),
        ("mallet", "rejected", "A", "unknown user"),
    ]
    assert len({line["port"] for line in lines}) == 5  # each login once
    assert all(line["address"] == "127.0.0.1" and line["served_session"] == "FEED" for line in lines)
    for text in (server.audit.read_text(), server.process.stderr()):
        assert "a-pw" not in text and "b-pw" not in text and "c-pw" not in text


def test_passwd_then_sighup_changes_a_password_and_nobody_is_dropped(
    processes: Processes, tmp_path: Path
) -> None:
    users = write_users(tmp_path / "users", alice="a-pw", bob="old-pw:FEED")
    server = UsersServer(processes, users, tmp_path / "audit.jsonl")
    server.publish(1)
    following = processes.start("tail", server.address, "--user", "alice", env=password_env("a-pw"))
    wait_until(lambda: following.stdout() == "1 m1\n", "alice's tail printing", following)

    changed = soup("passwd", str(users), "bob", input=b"new-pw\n")
    assert (changed.returncode, changed.stderr) == (
        0,
        f"soup passwd: changed the password of bob in {users}\n",
    )
    assert users.read_text().splitlines()[0] == "# soup serve --users"
    assert [line.split(":")[0] for line in users.read_text().splitlines()[1:]] == ["alice", "bob"]
    assert users.read_text().splitlines()[2].endswith(":FEED")  # bob's sessions kept
    server.process.process.send_signal(signal.SIGHUP)
    server.process.wait_stderr(rf"soup serve: users file {users} reloaded: 2 users")

    assert tail(server, "bob", "new-pw", "--count", "1").returncode == 0
    assert "not authorized (A)" in single_error_line(tail(server, "bob", "old-pw", "--count", "1").stderr)
    server.publish(2)
    wait_until(lambda: following.stdout() == "1 m1\n2 m2\n3 m3\n", "alice's tail going on", following)
    assert following.process.poll() is None and "disconnected" not in following.stderr()

    users.write_text("alice:broken\n")  # a bad file keeps the users read before
    server.process.process.send_signal(signal.SIGHUP)
    server.process.wait_stderr(
        r"warning: users file not reloaded, still using the 2 users read before: .*line 1"
    )
    assert tail(server, "bob", "new-pw", "--count", "1").returncode == 0
    assert server.process.process.poll() is None


def test_passwd_reads_standard_input_and_refuses_in_one_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    added = soup("passwd", str(users), "alice", "--sessions", "FEED,ITCH", input=b"a-pw\n")
    assert (added.returncode, added.stderr) == (0, f"soup passwd: added alice in {users}\n")
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    name, encoded, sessions = users.read_text().strip().split(":")
    assert (name, sessions) == ("alice", "FEED,ITCH") and encoded.startswith("scrypt$16384$8$1$")
    for arguments, given, message in [
        (["alice"], b"", "no password on standard input"),
        (["alice"], b"eleven-char\n", "the password has 11 characters"),
        (["alice"], b" lead\n", "must not start or end with a space"),
    ]:
        result = soup("passwd", str(users), *arguments, input=given)
        assert result.returncode == 1 and message in single_error_line(result.stderr), result.stderr
        assert "eleven" not in result.stderr and "lead" not in result.stderr
    bad_user = soup("passwd", str(users), "seven-ch", input=b"pw\n")
    assert bad_user.returncode == 2 and "1 to 6 printable ASCII" in bad_user.stderr
    assert users.read_text().count("\n") == 1  # nothing changed


def test_serve_login_options_that_do_not_go_together_are_usage_errors(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", alice="a-pw")
    broken = tmp_path / "broken"
    broken.write_text("# header\nalice:a-pw\n")  # a password where its hash belongs
    cases = [
        (["--users", str(users), "--user", "u"], "--users replaces --user and --password"),
        (["--user", "u"], "--user needs a password"),
        (["--password", "p"], "--password and --password-file go with --user"),
        (["--users", str(broken)], "line 2: the hash is not scrypt$N$r$p$SALT$KEY"),
        (["--users", str(tmp_path / "missing")], "no such file"),
        (["--users", str(users), "--audit-log", str(tmp_path / "no" / "audit")], "does not exist"),
        (["--max-unauthenticated-per-address", "0"], "0 is not in the range"),
    ]
    for options, message in cases:
        result = soup("serve", "--listen", "127.0.0.1:0", *options, env={**os.environ, "SOUP_PASSWORD": ""})
        assert result.returncode == 2, (options, result.stderr)
        assert message in result.stderr, (options, result.stderr)
        assert "a-pw" not in result.stderr
    for command in ("serve", "relay"):
        shown = " ".join(soup(command, "--help").stdout.split())
        assert f"[default: {MAX_UNAUTHENTICATED_PER_ADDRESS}; x>=1]" in shown, shown


async def test_max_unauthenticated_per_address_is_an_option(processes: Processes, tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", alice="a-pw")
    server = UsersServer(processes, users, tmp_path / "audit.jsonl", "--max-unauthenticated-per-address", "2")
    address = ("127.0.0.1", server.port)
    first, second = await RawClient.connect(address), await RawClient.connect(address)
    third = await RawClient.connect(address)
    try:
        assert await third.next_packet() is None  # refused: closed at once
        assert await first.login("alice", "a-pw") == LoginAccepted("FEED", 1)  # admitted
        assert await second.login("alice", "a-pw") == LoginAccepted("FEED", 1)
        other = await RawClient.connect(address, source=OTHER_ADDRESS)  # other addresses: not affected
        assert await other.login("alice", "a-pw") == LoginAccepted("FEED", 1)
        other.close()
    finally:
        for client in (first, second, third):
            client.close()


@pytest.mark.nats
async def test_a_jetstream_gateway_takes_a_users_file(processes: Processes, tmp_path: Path) -> None:
    nats = NatsServer(tmp_path, "n0")
    nats.start()
    try:
        store = f"{nats.url}/FEED"
        published = await asyncio.to_thread(
            soup, "publish", "--store", store, "--session", "FEED", input=b"a\nb\n"
        )
        assert published.returncode == 0, published.stderr
        users = write_users(tmp_path / "users", alice="a-pw")
        gateway = processes.start(
            "serve", "--store", store, "--listen", "127.0.0.1:0", "--users", str(users),
            "--audit-log", str(tmp_path / "audit.jsonl"),
        )  # fmt: skip
        address = gateway.wait_stderr(r"soup serve: session 'FEED' on ([\d.]+:\d+)").group(1)
        right = await asyncio.to_thread(
            soup, "tail", address, "--user", "alice", "--count", "2", env=password_env("a-pw")
        )
        assert (right.returncode, right.stdout) == (0, "1 a\n2 b\n"), right.stderr
        wrong = await asyncio.to_thread(
            soup, "tail", address, "--user", "alice", "--no-reconnect", env=password_env("x")
        )
        assert "not authorized (A)" in single_error_line(wrong.stderr)
        lines = (tmp_path / "audit.jsonl").read_text().splitlines()
        assert [json.loads(line)["result"] for line in lines] == ["accepted", "rejected"]
    finally:
        nats.kill()


# --------------------------------------------------------------------------- the numbers


async def _timed_login(port: int, user: str, password: str, source: str | None = None) -> tuple[Any, float]:
    raw = await RawClient.connect(("127.0.0.1", port), source=source)
    try:
        started = time.monotonic()
        answer = await raw.login(user, password)
        return answer, time.monotonic() - started
    finally:
        raw.close()


@pytest.mark.slow
async def test_200_wrong_logins_over_10_s_with_the_defaults_and_the_numbers(
    processes: Processes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's scenario with the default throttle and scrypt cost (passwords set with soup
    passwd): 200 wrong logins from 127.0.0.1 over 10 s; every second meanwhile bob logs in from
    127.0.0.2 (cold: his first check pays the hash; then from the cache); afterwards alice logs
    in from 127.0.0.1. Prints the numbers; asserts bob's median under 100 ms."""
    users = tmp_path / "users"
    for user, password in (("alice", "a-pw"), ("bob", "b-pw")):
        assert soup("passwd", str(users), user, input=password.encode() + b"\n").returncode == 0
    server = UsersServer(processes, users, tmp_path / "audit.jsonl")
    attack_started = time.monotonic()
    guesses: list[asyncio.Task[tuple[Any, float]]] = []
    bob: list[float] = []
    for number in range(200):
        guesses.append(asyncio.create_task(_timed_login(server.port, "alice", f"guess{number}")))
        if number % 20 == 10:
            answer, took = await _timed_login(server.port, "bob", "b-pw", OTHER_ADDRESS)
            assert answer == LoginAccepted("FEED", 1)
            bob.append(took)
        await asyncio.sleep(max(0.0, attack_started + (number + 1) * 0.05 - time.monotonic()))
    attack_took = time.monotonic() - attack_started
    answers = await asyncio.wait_for(asyncio.gather(*guesses), WAIT)
    answer, alice_took = await _timed_login(server.port, "alice", "a-pw")
    assert answer == LoginAccepted("FEED", 1)
    rejected = [took for reply, took in answers if reply == LoginRejected("A")]
    refused = sum(1 for reply, _ in answers if reply is None)
    with capsys.disabled():
        print(
            f"\n200 wrong logins sent over {attack_took:.1f} s: {len(rejected)} answered A, {refused} refused"
            f" (max_unauthenticated_per_address); answer times: first 5 {[round(t, 3) for t in rejected[:5]]}"
            f", median of the last 100 {statistics.median(rejected[-100:]):.3f} s"
            f"\nbob from {OTHER_ADDRESS} meanwhile, 10 logins: first (hash) {bob[0] * 1000:.1f} ms, then"
            f" {[round(t * 1000, 1) for t in bob[1:]]} ms, median {statistics.median(bob) * 1000:.1f} ms"
            f"\nalice's right password from 127.0.0.1 afterwards: accepted after {alice_took:.3f} s"
        )
    assert statistics.median(rejected[-100:]) >= 5.0 * 0.95
    assert alice_took >= 5.0 * 0.95
    assert statistics.median(bob) < 0.1
    lines = server.audit_lines()
    assert len(lines) == len(rejected) + len(bob) + 1
    assert all(line["delay"] == 0 for line in lines if line["user"] == "bob")
