"""Users files, the login throttle and the audit formatter without sockets (issue 27).

The users file: hashes made and verified, every malformed line refused with its line number and
without quoting a hash, ``set_password`` replacing a file atomically while keeping what it must,
:class:`UsersFile` reloading (and keeping the old users when the new file is broken) and caching
verified pairs. The throttle (sans-IO) is driven by a hand-held clock, so "4.9 s after the last
failure, then 5 s" is exact. The hashes in this file use a small scrypt cost (``n=2**10``), which
the hash string carries: the tests stay fast, the code path is the real one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from nasdaq_protocols.soup.errors import UsersFileError
from nasdaq_protocols.soup.server import (
    LoginThrottle,
    UsersFile,
    hash_password,
    set_password,
    verify_password,
)
from nasdaq_protocols.soup.server import users as users_module
from nasdaq_protocols.soup.server.audit import (
    JsonLinesFormatter,
    LoginRecord,
    audit_log_handler,
    record_login,
)
from nasdaq_protocols.soup.server.users import check_password_text, parse_users, read_users

FAST = {"n": 2**10, "r": 8, "p": 1}  # about 1 ms a hash, not 50


def fast_hash(password: str) -> str:
    return hash_password(password, **FAST)


def write_users(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


# --------------------------------------------------------------------------- hashes


def test_a_hash_verifies_its_password_only() -> None:
    encoded = hash_password("s3cret")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert not verify_password("S3cret", encoded)


def test_the_hash_string_carries_scheme_parameters_and_salt_separated_by_dollars() -> None:
    encoded = hash_password("pw", n=2**11, r=4, p=2, salt=b"0123456789abcdef")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p, salt) == ("scrypt", "2048", "4", "2", "MDEyMzQ1Njc4OWFiY2RlZg==")
    assert ":" not in encoded and len(key) == 44  # 32 bytes, base64
    assert hash_password("pw", n=2**11, r=4, p=2, salt=b"0123456789abcdef") == encoded
    assert hash_password("pw", n=2**11, r=4, p=2) != encoded  # a random salt each time
    assert verify_password("pw", encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("plaintextpw", id="not-a-hash"),
        pytest.param("bcrypt$16384$8$1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="other-scheme"),
        pytest.param("scrypt$16384$8$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="missing-field"),
        pytest.param("scrypt$1000$8$1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="n-not-power-of-2"),
        pytest.param("scrypt$16384$x$1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="r-not-a-number"),
        pytest.param("scrypt$16384$8$1$c2F*dA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="salt-not-base64"),
        pytest.param("scrypt$16384$8$1$c2FsdA==$a2V5", id="key-too-short"),
        pytest.param("scrypt$1073741824$8$1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5", id="too-much-memory"),
    ],
)
def test_what_is_not_a_hash_is_refused_without_quoting_it(encoded: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        verify_password("pw", encoded)
    assert encoded not in str(caught.value)
    path = write_users(tmp_path / "users", "# users", f"alice:{encoded}")
    with pytest.raises(UsersFileError, match=r"line 2: ") as in_file:
        read_users(path)
    assert in_file.value.line == 2 and in_file.value.path == str(path)
    assert encoded.split("$")[-1] not in str(in_file.value)


# --------------------------------------------------------------------------- the file


def test_a_users_file_is_read_with_comments_blank_lines_and_session_lists() -> None:
    alice, bob = fast_hash("a1"), fast_hash("b2")
    text = f"# who may log in\n\nalice:{alice}\n  bob:{bob}:FEED, ITCH  \n"
    users = parse_users(text, "users.txt")
    assert sorted(users) == ["alice", "bob"]
    assert users["alice"].sessions is None and users["alice"].may_use("ANY")
    assert users["bob"].sessions == frozenset({"FEED", "ITCH"})
    assert users["bob"].may_use("ITCH") and not users["bob"].may_use("OTHER")
    assert (users["alice"].line, users["bob"].line) == (3, 4)
    assert alice not in repr(users["alice"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("alice", "expected user:hash", id="no-hash"),
        pytest.param("alice:{h}:FEED:more", "expected user:hash", id="four-fields"),
        pytest.param("toolongname:{h}", "1 to 6 printable ASCII", id="long-user"),
        pytest.param("al ce:{h}", "1 to 6 printable ASCII", id="space-in-user"),
        pytest.param(":{h}", "user name is empty", id="empty-user"),
        pytest.param("alice:{h}:", "session list is empty", id="empty-sessions"),
        pytest.param("alice:{h}:FEED,,ITCH", "session '' must be", id="empty-session"),
        pytest.param("alice:{h}:ELEVENCHARS", "session 'ELEVENCHARS' must be", id="long-session"),
    ],
)
def test_each_malformed_line_is_refused_naming_it(line: str, message: str) -> None:
    encoded = fast_hash("pw")
    with pytest.raises(UsersFileError, match=message) as caught:
        parse_users(f"# header\n{line.format(h=encoded)}\n", "users.txt")
    assert str(caught.value).startswith("users file users.txt, line 2: ")
    assert encoded.split("$")[-1] not in str(caught.value)


def test_a_user_listed_twice_is_refused() -> None:
    text = f"alice:{fast_hash('a')}\nbob:{fast_hash('b')}\nalice:{fast_hash('c')}\n"
    with pytest.raises(UsersFileError, match="line 3: user 'alice' is already on line 1"):
        parse_users(text, "users.txt")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"alice:\xff\n")
    with pytest.raises(UsersFileError, match="not UTF-8"):
        read_users(path)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "empty"),
        ("elevenchars", "11 characters"),
        ("pässword", "printable ASCII"),
        ("tab\there", "printable ASCII"),
        (" lead", "start or end with a space"),
        ("trail ", "start or end with a space"),
    ],
)
def test_passwords_a_login_request_cannot_carry_are_refused(password: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_password_text(password)
    if password.strip():
        assert password.strip() not in str(caught.value)


# --------------------------------------------------------------------------- set_password


def test_set_password_creates_a_private_file_then_changes_one_line_keeping_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert set_password(path, "alice", "a1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set_password(path, "bob", "b1", sessions=["FEED", "ITCH"])
    text = path.read_text()
    path.write_text("# operators: edit with soup passwd\n" + text.replace("\n", "\n\n", 1))
    path.chmod(0o640)
    before = path.read_text().splitlines()

    assert not set_password(path, "bob", "b2")  # changed, not added
    after = path.read_text().splitlines()
    assert len(after) == len(before)
    changed = [index for index, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert [after[index].split(":")[0] for index in changed] == ["bob"]
    assert after[changed[0]].endswith(":FEED,ITCH")  # the session list is kept
    assert before[0] == after[0] == "# operators: edit with soup passwd"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # and the permissions
    users = read_users(path)
    assert verify_password("b2", users["bob"].password_hash)
    assert verify_password("a1", users["alice"].password_hash)

    set_password(path, "bob", "b3", sessions=["OTHER"])
    assert read_users(path)["bob"].sessions == frozenset({"OTHER"})
    assert [name for name in os.listdir(tmp_path) if name != "users"] == []  # no temporary file left


def test_set_password_refuses_a_broken_file_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", "alice:not-a-hash")
    with pytest.raises(UsersFileError, match="line 1"):
        set_password(path, "bob", "pw")
    assert path.read_text() == "alice:not-a-hash\n"
    with pytest.raises(ValueError, match="user name"):
        set_password(tmp_path / "other", "too-long-user", "pw")
    assert not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- UsersFile


async def test_users_file_authenticates_caches_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_users(tmp_path / "users", f"alice:{fast_hash('a1')}", f"bob:{fast_hash('b1')}:FEED")
    users = UsersFile(path)
    checks: list[str] = []
    real_verify = users_module.verify_password

    def counting_verify(password: str, encoded: str) -> bool:
        checks.append(encoded)
        return real_verify(password, encoded)

    monkeypatch.setattr(users_module, "verify_password", counting_verify)
    try:
        assert await users.authenticate("alice", "a1")
        assert await users.authenticate("alice", "a1")  # remembered: no second hash
        assert len(checks) == 1
        assert not await users.authenticate("alice", "wrong")
        assert not await users.authenticate("mallet", "a1")  # unknown: a hash all the same
        assert len(checks) == 3
        assert users.may_use("bob", "FEED") and not users.may_use("bob", "ITCH")
        assert not users.may_use("mallet", "FEED")

        set_password(path, "alice", "a2")
        assert users.reload() == 2 and users.reloads == 1
        assert not await users.authenticate("alice", "a1")  # the cache went with the old file
        assert await users.authenticate("alice", "a2")

        path.write_text("alice:broken\n")
        with pytest.raises(UsersFileError):
            users.reload()
        assert users.users == ["alice", "bob"] and await users.authenticate("alice", "a2")
        assert "a2" not in repr(users) and repr(users) == f"UsersFile({str(path)!r}, users=2)"
    finally:
        users.close()


async def test_the_hash_runs_in_a_thread_while_the_loop_goes_on(tmp_path: Path) -> None:
    users = UsersFile(write_users(tmp_path / "users", f"alice:{hash_password('a1', n=2**14)}"))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0)
        before = ticks
        assert await users.authenticate("alice", "a1")
        # A hash on the loop would let the ticker run once at most meanwhile.
        assert ticks - before > 10, ticks - before
    finally:
        ticker.cancel()
        users.close()


# --------------------------------------------------------------------------- throttle (sans-IO)


def test_the_throttle_delay_grows_after_the_free_failures_and_is_capped() -> None:
    throttle = LoginThrottle()
    delays = [throttle.delay_after(failures) for failures in range(13)]
    assert delays == [0, 0, 0, 0, 0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_the_throttle_delays_the_failing_address_and_user_only() -> None:
    throttle = LoginThrottle(free_failures=2, first_delay=1.0, max_delay=8.0, forget_after=60.0)
    now = 100.0
    for _ in range(4):
        throttle.failed("10.0.0.1", "alice", now)
    assert throttle.delay("10.0.0.1", "bob", now) == 4.0  # the address
    assert throttle.delay("10.0.0.2", "alice", now) == 4.0  # the user, from elsewhere
    assert throttle.delay("10.0.0.2", "bob", now) == 0.0  # neither: not slowed
    assert throttle.throttled(now) == (1, 1)
    throttle.succeeded("alice")  # clears the user, not the address
    assert throttle.delay("10.0.0.2", "alice", now) == 0.0
    assert throttle.delay("10.0.0.1", "alice", now) == 4.0


def test_failures_are_forgotten_after_forget_after_seconds_without_one() -> None:
    throttle = LoginThrottle(free_failures=1, first_delay=1.0, forget_after=60.0)
    throttle.failed("a", "u", 0.0)
    throttle.failed("a", "u", 30.0)
    assert throttle.failures("a", now=89.9) == 2  # 59.9 s after the last failure
    assert throttle.delay("a", "x", 89.9) == 2.0
    assert throttle.failures("a", now=90.0) == 0 and throttle.delay("a", "x", 90.0) == 0.0
    throttle.failed("a", "u", 90.0)  # counting starts again
    assert throttle.failures("a", now=90.0) == 1


def test_the_throttle_remembers_a_bounded_number_of_addresses_and_users() -> None:
    throttle = LoginThrottle(free_failures=0, max_tracked=100)
    for index in range(1000):
        throttle.failed(f"10.0.{index // 256}.{index % 256}", f"u{index}", float(index) / 1000)
    assert throttle.throttled(1.0) == (100, 100)
    assert throttle.failures("10.0.0.0", now=1.0) == 0  # the oldest were forgotten first
    assert throttle.failures("10.0.3.231", "u999", now=1.0) == 1


def test_the_throttle_counts_what_it_delayed() -> None:
    throttle = LoginThrottle(max_delay=0)
    assert throttle.delay_after(100) == 0.0  # max_delay 0: counts, never delays
    throttle.delayed(0.0)
    throttle.delayed(0.5)
    throttle.delayed(0.25)
    assert (throttle.answers_delayed, throttle.seconds_delayed) == (2, 0.75)
    with pytest.raises(ValueError):
        LoginThrottle(first_delay=-1)


# --------------------------------------------------------------------------- audit records


def test_an_audit_record_is_one_text_line_and_one_json_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = LoginRecord(
        result="rejected",
        code="A",
        reason="wrong password",
        user="alice",
        address="127.0.0.1",
        port=50412,
        session="",
        sequence=1,
        served_session="FEED",
        delay=0.4,
    )
    audit = logging.getLogger("nasdaq_protocols.soup.audit")
    handler = audit_log_handler(tmp_path / "audit.jsonl")
    audit.addHandler(handler)
    caplog.set_level(logging.INFO, logger="nasdaq_protocols.soup.audit")
    try:
        record_login(record)
    finally:
        audit.removeHandler(handler)
        handler.close()
    [logged] = [r for r in caplog.records if r.name == "nasdaq_protocols.soup.audit"]
    assert logged.levelno == logging.INFO
    assert logged.getMessage() == (
        "login rejected (A): user='alice' address=127.0.0.1:50412 session='' sequence=1"
        " reason='wrong password' delay=0.400"
    )
    [line] = (tmp_path / "audit.jsonl").read_text().splitlines()
    fields = json.loads(line)
    assert fields.pop("time").endswith("+00:00")
    assert fields == {
        "event": "login",
        "result": "rejected",
        "code": "A",
        "reason": "wrong password",
        "user": "alice",
        "address": "127.0.0.1",
        "port": 50412,
        "session": "",
        "sequence": 1,
        "served_session": "FEED",
        "accepted_sequence": None,
        "delay": 0.4,
    }
    other = logging.LogRecord("x", logging.WARNING, __file__, 1, "plain %s", ("text",), None)
    assert json.loads(JsonLinesFormatter().format(other))["message"] == "plain text"
