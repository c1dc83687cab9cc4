"""Users files: who may log in to a server, with which password, to which sessions.

What belongs here: the users file's format, hashing and checking passwords, and
:class:`UsersFile`, what ``SoupServer(users=...)`` and ``soup serve --users`` use. Nothing here
knows about connections; the only asyncio is :meth:`UsersFile.authenticate`, which runs the hash
in a worker thread so that the event loop keeps serving other clients meanwhile.

The file has one user a line; ``#`` starts a comment line, blank lines are ignored::

    # user:hash[:SESSION,SESSION...]
    alice:scrypt$16384$8$1$mS0Ct1n1LkVdRs8fLmZ3hQ==$KQm0...=
    bob:scrypt$16384$8$1$0JtGq8kEYxXrwQ5mJ8zAPA==$dV2c...=:FEED,ITCH

* the user name is what a Login Request carries: 1 to 6 printable ASCII characters, no ``:``,
  no spaces;
* the hash is ``scrypt$N$r$p$SALT$KEY``: the standard library's :func:`hashlib.scrypt` with cost
  ``N``, block size ``r`` and parallelism ``p``, a random salt and the derived key, both base64.
  Its fields are separated by ``$``, never ``:``, so the line splits unambiguously. Write it with
  :func:`hash_password` or ``soup passwd``; never by hand;
* the optional third field lists the sessions the user may log in to; a login to any other gets
  Login Rejected ``S``. Without it, the user may log in to any session the server serves.

Why scrypt with these costs (:data:`SCRYPT_N` 2**14, r 8, p 1: 16 MiB and about 50 ms of one core
per check): it is in the standard library (no dependency), memory-hard (guessing on GPUs is
costly), and 50 ms is paid once per login (verified pairs are cached for a short while, see
:class:`UsersFile`), not per message. A stolen users file costs a guesser 50 ms per guess per core.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import attrs

from ..errors import UsersFileError

__all__ = [
    "CACHE_SECONDS",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "User",
    "UsersFile",
    "check_password_text",
    "check_user_name",
    "hash_password",
    "parse_users",
    "read_users",
    "set_password",
    "verify_password",
]

#: scrypt's cost (the number of blocks): 2**14 takes about 50 ms and 16 MiB per check.
SCRYPT_N = 2**14
#: scrypt's block size.
SCRYPT_R = 8
#: scrypt's parallelism.
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
#: The most memory a hash read from a file may ask scrypt for (128 * r * N bytes): 256 MiB.
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_SCHEME = "scrypt"

#: Seconds a verified (user, password) pair is remembered, so a client that reconnects (or a
#: thousand that reconnect together after a fail-over) does not pay the hash again.
CACHE_SECONDS = 60.0
_MAX_CACHED = 4096

# Login Request fields (docs/protocol.md, "Fixed-width fields"): username 6 bytes, password 10
# bytes, session 10 bytes, ASCII, read with surrounding spaces stripped.
_USER_FIELD = 6
_PASSWORD_FIELD = 10
_SESSION_FIELD = 10


# --------------------------------------------------------------------------- names and passwords


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def check_user_name(user: str) -> None:
    """Check that ``user`` can be a users file's user name and a Login Request's.

    Raises:
        ValueError: empty, longer than 6 characters, not printable ASCII, or holding ``:``,
            a space or a leading ``#``.
    """
    if not user:
        raise ValueError("the user name is empty")
    if len(user) > _USER_FIELD or not _printable_ascii(user) or ":" in user or " " in user:
        raise ValueError(
            f"user name {user!r} must be 1 to {_USER_FIELD} printable ASCII characters, without ':' or spaces"
        )
    if user.startswith("#"):
        raise ValueError(f"user name {user!r} must not start with '#' (a comment)")


def check_password_text(password: str) -> None:
    """Check that ``password`` can be sent in a Login Request (so that it can ever match).

    The message never quotes the password.

    Raises:
        ValueError: empty, longer than the 10-byte field, not printable ASCII, or with leading
            or trailing spaces (the field's padding, stripped when it is read).
    """
    if not password:
        raise ValueError("the password is empty")
    if len(password) > _PASSWORD_FIELD:
        raise ValueError(
            f"the password has {len(password)} characters; a Login Request carries at most {_PASSWORD_FIELD}"
        )
    if not _printable_ascii(password):
        raise ValueError("the password must be printable ASCII (what a Login Request can carry)")
    if password != password.strip(" "):
        raise ValueError("the password must not start or end with a space (the field's padding)")


def _check_session_name(session: str) -> None:
    if not session or len(session) > _SESSION_FIELD or not _printable_ascii(session) or " " in session:
        raise ValueError(f"session {session!r} must be 1 to {_SESSION_FIELD} printable ASCII characters")
    if ":" in session or "," in session:
        raise ValueError(f"session {session!r} must not hold ':' or ','")


# --------------------------------------------------------------------------- hashes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt_memory(n: int, r: int, p: int) -> int:
    # OpenSSL needs 128 * r * (N + p) bytes and some; maxmem must allow it (its default is 32 MiB).
    return 128 * r * (n + p + 2) + (1 << 20)


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P, salt: bytes | None = None
) -> str:
    """Hash ``password`` for a users file: ``scrypt$N$r$p$SALT$KEY`` (salt and key base64).

    Args:
        password: the password (any text: it is not checked here, see :func:`check_password_text`).
        n, r, p: scrypt's cost, block size and parallelism (``n`` a power of 2).
        salt: 16 random bytes unless given (tests give one to get a known hash).

    Returns:
        The hash string, with no ``:``.

    Raises:
        ValueError: parameters scrypt refuses.
    """
    if salt is None:
        salt = os.urandom(_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=_scrypt_memory(n, r, p)
    )
    return f"{_SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


@attrs.frozen
class _Hash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse_hash(encoded: str) -> _Hash:
    """The parts of a hash string; ``ValueError`` (quoting nothing of it) if it is not one."""
    fields = encoded.split("$")
    if len(fields) != 6 or fields[0] != _SCHEME:
        raise ValueError(f"the hash is not {_SCHEME}$N$r$p$SALT$KEY (make it with soup passwd)")
    try:
        n, r, p = (int(field) for field in fields[1:4])
        salt = base64.b64decode(fields[4], validate=True)
        key = base64.b64decode(fields[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("the hash's parameters, salt or key cannot be read (see soup passwd)") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise ValueError("the hash's scrypt parameters are invalid (N must be a power of 2 above 1)")
    if 128 * r * (n + p) > _MAX_SCRYPT_MEMORY:
        raise ValueError(f"the hash asks scrypt for more than {_MAX_SCRYPT_MEMORY >> 20} MiB")
    if not salt or len(key) < 16:
        raise ValueError("the hash's salt is empty or its key shorter than 16 bytes")
    return _Hash(n, r, p, salt, key)


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` is the one ``encoded`` (from :func:`hash_password`) was made from.

    Blocking: about 50 ms of one core with the default costs (see :meth:`UsersFile.authenticate`
    for the asynchronous check). The comparison takes the same time whatever the password.

    Raises:
        ValueError: ``encoded`` is not a hash string.
    """
    parts = _parse_hash(encoded)
    key = hashlib.scrypt(
        password.encode(),
        salt=parts.salt,
        n=parts.n,
        r=parts.r,
        p=parts.p,
        dklen=len(parts.key),
        maxmem=_scrypt_memory(parts.n, parts.r, parts.p),
    )
    return hmac.compare_digest(key, parts.key)


# --------------------------------------------------------------------------- the file


@attrs.frozen
class User:
    """One line of a users file.

    Attributes:
        name: the user name.
        password_hash: its ``scrypt$...`` hash (left out of the repr).
        sessions: the sessions the user may log in to; ``None``: any.
        line: the line number it was read from.
    """

    name: str
    password_hash: str = attrs.field(repr=False)
    sessions: frozenset[str] | None = None
    line: int = 0

    def may_use(self, session: str) -> bool:
        """True if this user may log in to ``session``."""
        return self.sessions is None or session in self.sessions

    def to_line(self) -> str:
        """The line of the users file, as :func:`parse_users` reads it back."""
        if self.sessions is None:
            return f"{self.name}:{self.password_hash}"
        return f"{self.name}:{self.password_hash}:{','.join(sorted(self.sessions))}"


def _parse_line(text: str, path: str, number: int) -> User | None:
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    fields = line.split(":")
    if len(fields) not in (2, 3):
        raise UsersFileError(
            f"users file {path}, line {number}: expected user:hash or user:hash:SESSION,...", path, number
        )
    name, encoded = fields[0], fields[1]
    try:
        check_user_name(name)
        _parse_hash(encoded)
        sessions: frozenset[str] | None = None
        if len(fields) == 3:
            listed = [session.strip() for session in fields[2].split(",")]
            if not fields[2].strip():
                raise ValueError("the session list is empty (leave it out to allow every session)")
            for session in listed:
                _check_session_name(session)
            sessions = frozenset(listed)
    except ValueError as exc:
        raise UsersFileError(f"users file {path}, line {number}: {exc}", path, number) from None
    return User(name, encoded, sessions, number)


def parse_users(text: str, path: str = "<users>") -> dict[str, User]:
    """The users of a users file's text, by name (the format is in this module's docstring).

    Args:
        text: the file's content.
        path: its name, for error messages.

    Raises:
        UsersFileError: a line is not ``user:hash[:SESSION,...]``, a user appears twice, a hash
            is not one :func:`hash_password` makes. The message names the line; it never
            quotes a hash.
    """
    users: dict[str, User] = {}
    for number, text_line in enumerate(text.splitlines(), 1):
        user = _parse_line(text_line, path, number)
        if user is None:
            continue
        if user.name in users:
            raise UsersFileError(
                f"users file {path}, line {number}: user {user.name!r} is already on line"
                f" {users[user.name].line}",
                path,
                number,
            )
        users[user.name] = user
    return users


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except UnicodeDecodeError:
        raise UsersFileError(f"users file {path}: not UTF-8 text", path) from None


def read_users(path: str | os.PathLike[str]) -> dict[str, User]:
    """The users of the users file at ``path``.

    Raises:
        OSError: it cannot be read.
        UsersFileError: it is not a valid users file (see :func:`parse_users`).
    """
    name = os.fspath(path)
    return parse_users(_read_text(name), name)


def set_password(
    path: str | os.PathLike[str], user: str, password: str, *, sessions: Iterable[str] | None = None
) -> bool:
    """Add ``user`` to the users file at ``path`` or change its password, atomically.

    The file is rewritten in a temporary file next to it, synced, then renamed over it: a reader
    (a server reloading on SIGHUP) sees the old file or the new one, never half of one. Comments,
    blank lines and other users' lines are kept as they are, and so is the user's session list
    unless ``sessions`` is given. A new file is created readable by its owner only; an existing
    one keeps its permissions (and its owner, where allowed).

    Args:
        path: the users file (created if missing).
        user: the user name (see :func:`check_user_name`).
        password: the new password (see :func:`check_password_text`).
        sessions: the sessions the user may log in to (``None``: keep what the file says, or any
            session for a new user; an empty list is refused).

    Returns:
        True if the user was added, False if its password was changed.

    Raises:
        ValueError: the user name, the password or a session name cannot be used.
        UsersFileError: the file exists but is not a valid users file (it is left unchanged).
        OSError: the file or its folder cannot be read or written.
    """
    name = os.fspath(path)
    check_user_name(user)
    check_password_text(password)
    wanted: frozenset[str] | None = None
    if sessions is not None:
        wanted = frozenset(sessions)
        if not wanted:
            raise ValueError("the session list is empty")
        for session in wanted:
            _check_session_name(session)
    try:
        text = _read_text(name)
        status: os.stat_result | None = os.stat(name)
    except FileNotFoundError:
        text, status = "", None
    users = parse_users(text, name)  # a broken file is refused, not rewritten
    existing = users.get(user)
    kept = existing.sessions if existing is not None and wanted is None else wanted
    line = User(user, hash_password(password), kept).to_line()
    lines = text.splitlines()
    if existing is not None:
        lines[existing.line - 1] = line
    else:
        lines.append(line)
    _replace_file(name, "".join(f"{each}\n" for each in lines), status)
    return existing is None


def _replace_file(path: str, text: str, status: os.stat_result | None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), status.st_mode & 0o7777 if status is not None else 0o600)
            if status is not None:
                with contextlib.suppress(OSError):  # only root may give a file to someone else
                    os.fchown(file.fileno(), status.st_uid, status.st_gid)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut once its folder is synced
        folder_descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)


class UsersFile:
    """The users of a users file, to check logins against: ``SoupServer(users=UsersFile(path))``.

    :meth:`authenticate` checks a password in a worker thread (the hash takes about 50 ms), so the
    event loop serves other clients meanwhile, and remembers a verified (user, password) pair
    for ``cache_seconds`` (as a keyed digest, never the password), so reconnecting clients do not
    pay the hash again. An unknown user costs as much as a known one, so timing does not tell
    which users exist. :meth:`reload` re-reads the file (``soup serve`` does on SIGHUP); logged-in
    clients are not affected.

    ``SoupServer(authenticate=users.authenticate)`` works too, without the per-user session
    lists (which need ``users=``).

    Args:
        path: the users file (see the module docstring for its format).
        cache_seconds: how long a verified pair is remembered (0: never).
        workers: threads checking hashes at once (default: 2, or up to 4 on a bigger machine).

    Raises:
        OSError: the file cannot be read.
        UsersFileError: it is not a valid users file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cache_seconds: float = CACHE_SECONDS,
        workers: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.cache_seconds = cache_seconds
        self._users = read_users(self.path)
        #: How many times :meth:`reload` replaced the users.
        self.reloads = 0
        # An unknown user's password is checked against this, at the default cost.
        self._dummy = hash_password(os.urandom(8).hex())
        self._cache_key = os.urandom(32)
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._workers = workers if workers is not None else max(2, min(4, os.cpu_count() or 2))
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"UsersFile({self.path!r}, users={len(self._users)})"

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user: object) -> bool:
        return user in self._users

    @property
    def users(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self._users)

    def get(self, user: str) -> User | None:
        """The line of ``user``, or ``None``."""
        return self._users.get(user)

    def may_use(self, user: str, session: str) -> bool:
        """True if ``user`` may log in to ``session`` (an unknown user may not)."""
        entry = self._users.get(user)
        return entry is not None and entry.may_use(session)

    def reload(self) -> int:
        """Read the file again and use it from now on; forget the verified pairs.

        Returns:
            The number of users.

        Raises:
            OSError, UsersFileError: the file cannot be read or is not valid; the users read
                before are kept.
        """
        users = read_users(self.path)
        self._users = users
        self._cache.clear()
        self.reloads += 1
        return len(users)

    def check(self, user: str, password: str) -> bool:
        """True if ``password`` is ``user``'s (blocking: about 50 ms; see :meth:`authenticate`)."""
        entry = self._users.get(user)
        matches = verify_password(password, entry.password_hash if entry is not None else self._dummy)
        return matches and entry is not None

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()

    def _remembered(self, user: str, digest: bytes, now: float) -> bool:
        cached = self._cache.get(user)
        if cached is None:
            return False
        if cached[1] <= now:
            del self._cache[user]
            return False
        return hmac.compare_digest(cached[0], digest)

    def _remember(self, user: str, digest: bytes, now: float) -> None:
        if self.cache_seconds <= 0:
            return
        if len(self._cache) >= _MAX_CACHED:
            for name, (_, expires) in list(self._cache.items()):
                if expires <= now:
                    del self._cache[name]
            if len(self._cache) >= _MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
        self._cache[user] = (digest, now + self.cache_seconds)

    async def authenticate(self, user: str, password: str) -> bool:
        """True if ``password`` is ``user``'s: the hash is checked in a worker thread.

        Usable as ``SoupServer(authenticate=users.authenticate)``.
        """
        digest = self._digest(password)
        if self._remembered(user, digest, time.monotonic()):
            return True
        users = self._users
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="soup-password-check")
        matches = await asyncio.get_running_loop().run_in_executor(self._executor, self.check, user, password)
        if self._users is not users:  # reloaded while checking: check against the new file
            return await self.authenticate(user, password)
        if matches:
            self._remember(user, digest, time.monotonic())
        return matches

    def close(self) -> None:
        """Stop the worker threads (they are started again if :meth:`authenticate` is called)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
