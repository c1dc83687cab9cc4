"""SoupServer with a users file, the login throttle and the audit trail, over loopback (issue 27).

Clients are :class:`RawClient` sockets, some bound to ``127.0.0.2`` to be "another address" (all
of 127/8 is loopback on Linux). The throttle tests use short delays (0.5 s at most) so they run
in seconds; the defaults are exercised by the CLI tests. No assertion depends on how fast the
machine is: a throttled answer must wait *at least* its delay (``asyncio.sleep`` never returns
early), and "not slowed" is shown by the audit line's delay (0) and by an answer that comes
before the delay a throttled address is owed (:data:`THROTTLE_CAP`, half a second, thousands of
times a loopback login). The strict "under 100 ms" is measured, with numbers, in
``test_credentials_cli.py``'s slow test.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import LoginAccepted, LoginRejected, SequencedData
from nasdaq_protocols.soup.metrics.collectors import ServerCollector
from nasdaq_protocols.soup.server import LoginRecord, LoginThrottle, SoupServer, UsersFile, hash_password
from nasdaq_protocols.soup.server import users as users_module
from netutil import RawClient, wait_until
from serverutil import WAIT, make_server, payload_of

__all__ = ["make_server"]  # a fixture, imported for the tests below

FAST = {"n": 2**10}  # a cheap scrypt cost, carried by the hash string
OTHER_ADDRESS = "127.0.0.2"
THROTTLE_CAP = 0.5


def users_file(path: Path, **users: str) -> Path:
    """A users file: ``name="password"`` or ``name="password:SESSION,..."``."""
    lines = []
    for name, spec in users.items():
        password, _, sessions = spec.partition(":")
        lines.append(f"{name}:{hash_password(password, **FAST)}" + (f":{sessions}" if sessions else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def audit_records(caplog: pytest.LogCaptureFixture) -> list[LoginRecord]:
    return [r.audit for r in caplog.records if r.name == "nasdaq_protocols.soup.audit"]  # type: ignore[attr-defined]


async def login(address: tuple[str, int], user: str, password: str, **options: Any) -> tuple[Any, float]:
    """One Login Request on a new connection: the answer and how long it took (seconds)."""
    source = options.pop("source", None)
    raw = await RawClient.connect(address, source=source)
    try:
        started = time.monotonic()
        answer = await raw.login(user, password, **options)
        return answer, time.monotonic() - started
    finally:
        raw.close()


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="nasdaq_protocols.soup.audit")
    return caplog


# --------------------------------------------------------------------------- users file


async def test_each_user_logs_in_with_its_own_password_and_sessions(
    make_server: Any, tmp_path: Path, audit: pytest.LogCaptureFixture
) -> None:
    path = users_file(tmp_path / "users", alice="a-pw", bob="b-pw:FEED,ITCH", carol="c-pw:OTHER")
    server = await make_server("FEED", users=UsersFile(path))
    address = server.address
    assert (await login(address, "alice", "a-pw"))[0] == LoginAccepted("FEED", 1)
    assert (await login(address, "bob", "b-pw"))[0] == LoginAccepted("FEED", 1)
    assert (await login(address, "bob", "b-pw", session="FEED"))[0] == LoginAccepted("FEED", 1)
    assert (await login(address, "alice", "b-pw"))[0] == LoginRejected("A")  # another's password
    assert (await login(address, "mallet", "a-pw"))[0] == LoginRejected("A")
    assert (await login(address, "carol", "c-pw"))[0] == LoginRejected("S")  # not her session
    assert (await login(address, "carol", "wrong"))[0] == LoginRejected("A")  # the password first
    stats = server.stats()
    assert (stats["logins_accepted"], stats["logins_rejected_auth"], stats["logins_rejected_session"]) == (
        3,
        3,
        1,
    )
    reasons = [(r.result, r.user, r.code, r.reason) for r in audit_records(audit)]
    assert reasons == [
        ("accepted", "alice", None, ""),
        ("accepted", "bob", None, ""),
        ("accepted", "bob", None, ""),
        ("rejected", "alice", "A", "wrong password"),
        ("rejected", "mallet", "A", "unknown user"),
        ("rejected", "carol", "S", "user 'carol' may not log in to session 'FEED'"),
        ("rejected", "carol", "A", "wrong password"),
    ]


async def test_a_reload_changes_passwords_and_keeps_connected_clients(
    make_server: Any, tmp_path: Path
) -> None:
    path = users_file(tmp_path / "users", alice="old-pw", bob="b-pw")
    users = UsersFile(path)
    server = await make_server("FEED", users=users)
    connected = await soup.connect_async(server.address, "alice", "old-pw")
    try:
        users_module.set_password(path, "alice", "new-pw")
        assert users.reload() == 2
        server.publish(payload_of(1))
        message = await asyncio.wait_for(connected.receive_msg(), WAIT)
        assert message == SequencedData(payload_of(1)) and connected.is_active()
        assert (await login(server.address, "alice", "old-pw"))[0] == LoginRejected("A")
        assert (await login(server.address, "alice", "new-pw"))[0] == LoginAccepted("FEED", 1)
        await wait_until(lambda: len(server.connections) == 1, "the closed logins gone")
        assert connected.is_active() and server.stats()["logged_in"] == 1
    finally:
        await connected.close()


async def test_the_authenticate_hook_takes_a_users_file_too(make_server: Any, tmp_path: Path) -> None:
    users = UsersFile(users_file(tmp_path / "users", alice="a-pw:OTHER"))
    server = await make_server("FEED", authenticate=users.authenticate)
    # Through authenticate only the password counts: session lists need users=.
    assert (await login(server.address, "alice", "a-pw"))[0] == LoginAccepted("FEED", 1)
    assert (await login(server.address, "alice", "b-pw"))[0] == LoginRejected("A")
    with pytest.raises(ValueError, match="one of credentials, authenticate and users"):
        SoupServer("FEED", users=users, credentials={"a": "b"})


async def test_a_slow_check_holds_up_neither_the_loop_nor_other_addresses(
    make_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice's check is held in its thread until the test lets it go; meanwhile bob logs in from
    another address (the loop and another worker serve him), while bob from alice's address
    waits for its turn: one check at a time per address."""
    release = threading.Event()
    real_verify = users_module.verify_password
    slow_hash = hash_password("a-pw", **FAST)

    def verify(password: str, encoded: str) -> bool:
        if encoded == slow_hash:
            release.wait(WAIT)
        return real_verify(password, encoded)

    monkeypatch.setattr(users_module, "verify_password", verify)
    path = tmp_path / "users"
    path.write_text(f"alice:{slow_hash}\nbob:{hash_password('b-pw', **FAST)}\n")
    server = await make_server("FEED", users=UsersFile(path))
    try:
        alice = asyncio.create_task(login(server.address, "alice", "a-pw"))
        await wait_until(lambda: server.stats()["connected"] == 1, "alice's connection")
        bob_same_address = asyncio.create_task(login(server.address, "bob", "b-pw"))
        answer, _ = await login(server.address, "bob", "b-pw", source=OTHER_ADDRESS)
        assert answer == LoginAccepted("FEED", 1)
        assert not alice.done() and not bob_same_address.done()
    finally:
        release.set()
    assert (await alice)[0] == LoginAccepted("FEED", 1)
    assert (await bob_same_address)[0] == LoginAccepted("FEED", 1)


# --------------------------------------------------------------------------- throttle


async def test_repeated_failures_delay_that_address_only(
    make_server: Any, tmp_path: Path, audit: pytest.LogCaptureFixture
) -> None:
    """200 wrong logins from one address, 100 a second: the later answers wait the capped delay;
    meanwhile bob from another address is answered at once; afterwards alice's right password
    from the attacked address is accepted, after the delay. Each login is audited once."""
    path = users_file(tmp_path / "users", alice="a-pw", bob="b-pw")
    throttle = LoginThrottle(free_failures=5, first_delay=0.05, max_delay=THROTTLE_CAP)
    server = await make_server("FEED", users=UsersFile(path), throttle=throttle)

    async def guess(number: int) -> tuple[Any, float]:
        return await login(server.address, "alice", f"guess{number}")

    guesses = []
    for number in range(200):
        guesses.append(asyncio.create_task(guess(number)))
        await asyncio.sleep(0.01)
        if number == 150:  # the attack in full swing: alice's address is owed the cap
            assert throttle.delay("127.0.0.1", "nobody", time.monotonic()) == THROTTLE_CAP
            bob_answer, bob_took = await login(server.address, "bob", "b-pw", source=OTHER_ADDRESS)
    answers = await asyncio.gather(*guesses)
    assert [answer for answer, _ in answers] == [LoginRejected("A")] * 200

    assert bob_answer == LoginAccepted("FEED", 1)
    assert bob_took < THROTTLE_CAP, f"bob took {bob_took:.3f} s"
    records = audit_records(audit)
    [bob_record] = [r for r in records if r.user == "bob"]
    assert bob_record.delay == 0.0 and bob_record.address == OTHER_ADDRESS

    guess_records = [r for r in records if r.user == "alice"]
    assert [r.delay for r in guess_records[:5]] == [0.0] * 5
    assert all(r.delay == THROTTLE_CAP for r in guess_records[100:])
    # The answers waited at least what the audit says (a lower bound: no timing flake).
    late = [took for _, took in answers[100:]]
    assert min(late) >= THROTTLE_CAP * 0.95, f"the later answers took {min(late):.3f} s at least"

    answer, took = await login(server.address, "alice", "a-pw")
    assert answer == LoginAccepted("FEED", 1)
    assert took >= THROTTLE_CAP * 0.95
    stats = server.stats()
    assert stats["logins_rejected_auth"] == 200 and stats["logins_accepted"] == 2
    assert stats["logins_throttled"] == 200 - 5 + 1
    assert (stats["throttled_addresses"], stats["throttled_users"]) == (1, 0)  # alice's success cleared her
    scraped = {
        sample.name: sample for family in ServerCollector(server).collect() for sample in family.samples
    }
    assert scraped["soup_logins_throttled_total"].value == stats["logins_throttled"]
    assert scraped["soup_login_throttle_seconds_total"].value == stats["login_throttle_seconds"] > 90
    records = audit_records(audit)
    assert len(records) == 202 and len({r.port for r in records}) == 202  # each login once


async def test_closing_the_server_does_not_wait_for_a_delayed_answer(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A login waiting for a 60 s throttle delay when the server closes: the wait ends with the
    connection (audited ``unanswered``, nothing sent), rather than holding the close until the
    session layer gives up on it and cancels it (it warns when it does)."""
    caplog.set_level(logging.INFO)
    throttle = LoginThrottle(free_failures=0, first_delay=60.0, max_delay=60.0)
    server = SoupServer("FEED", credentials={"alice": "a-pw"}, throttle=throttle)
    await server.start()
    raw = await RawClient.connect(server.address)
    try:
        await raw.send(soup.LoginRequest("alice", "a-pw"))
        await wait_until(lambda: server.stats()["logins_waiting"] == 1, "the login waiting for its delay")
        await asyncio.wait_for(server.close(), WAIT)
        assert await raw.read_until_eof() == []
    finally:
        raw.close()
    [record] = audit_records(caplog)
    assert (record.result, record.user, record.delay) == ("unanswered", "alice", 60.0)
    assert "still running" not in caplog.text
    stats = server.stats()
    assert (stats["logins_accepted"], stats["logins_rejected"]) == (0, 0)


# --------------------------------------------------------------------------- redaction


async def test_no_password_in_logs_audit_reprs_or_errors(
    make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG while users log in with a users file: accepted, wrong password,
    unknown user, session refused, throttled, reloaded; the passwords (right and wrong) are in
    no record, no audit line, no repr and no error."""
    caplog.set_level(logging.DEBUG)
    right, wrong = "Ok-Zq9vx4", "No-Zq9vx4"
    path = users_file(tmp_path / "users", alice=right, carol=f"{right}:OTHER")
    users = UsersFile(path)
    throttle = LoginThrottle(free_failures=1, first_delay=0.01, max_delay=0.02)
    server = await make_server("FEED", users=users, throttle=throttle)
    client = await soup.connect_async(server.address, "alice", right)
    try:
        rejected = []
        for user, password in [("alice", wrong), ("mallet", right), ("carol", right), ("alice", wrong)]:
            with pytest.raises(soup.LoginRejectedError) as caught:
                await soup.connect_async(server.address, user, password)
            rejected.append(caught.value)
        users_module.set_password(path, "alice", "Nw-Zq9vx4")
        users.reload()
        path.write_text(f"alice:{right}\n")  # a password where the hash belongs
        with pytest.raises(soup.SoupError) as broken:
            users.reload()
        shown = [
            repr(users),
            repr(users.get("alice")),
            repr(users.get("carol")),
            repr(throttle),
            repr(server.stats()),
            repr(server.login_gate.stats(time.monotonic())),
            str(broken.value),
            repr(broken.value),
            *(str(error) for error in rejected),
            *(repr(error) for error in rejected),
            *(repr(r.audit) for r in caplog.records if hasattr(r, "audit")),
        ]
    finally:
        await client.close()
    assert "line 1" in str(broken.value)
    for text in shown:
        assert "Zq9vx4" not in text, text
    for record in caplog.records:
        assert "Zq9vx4" not in record.getMessage() + repr(record.args), (
            f"{record.name}: {record.getMessage()}"
        )
    assert "Zq9vx4" not in caplog.text
    assert "login rejected (A): user='alice'" in caplog.text  # the audit lines are there
    assert "login rejected (S): user='carol'" in caplog.text
