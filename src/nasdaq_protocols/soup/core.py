"""The SoupBinTCP wire format: one class per packet type, and how each is encoded and decoded.

This module is the contract every other part of the package builds on. It knows bytes and
nothing else: no sockets, no asyncio, no clocks. The rules it follows are those of the
SoupBinTCP 4.0 / 4.1 specifications as fixed by docs/protocol.md ("Fixed-width fields"):

* A packet is a 2-byte big-endian length ``L`` then ``L`` bytes: a type byte and the payload.
* Fixed-width fields are *emitted* by the spec (user and password left-justified, session and
  numbers right-justified, space padded) and *read* liberally (spaces and NULs stripped on
  both sides), so the left-justified layout other implementations write reads the same.
* Every malformed packet raises :class:`InvalidSoupMessage`; no ``struct.error``,
  ``IndexError`` or ``UnicodeDecodeError`` escapes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common import Serializable

from .errors import InvalidSoupMessage

__all__ = [
    "MAX_PAYLOAD_SIZE",
    "ClientHeartbeat",
    "Debug",
    "EndOfSession",
    "InvalidSoupMessage",
    "LoginAccepted",
    "LoginRejectReason",
    "LoginRejected",
    "LoginRequest",
    "LogoutRequest",
    "SequencedData",
    "ServerHeartbeat",
    "SoupMessage",
    "UnSequencedData",
    "decode_payload",
    "redacted_prefix",
]

#: The largest payload a packet can carry: 65,535 bytes after the length field, less the type byte.
MAX_PAYLOAD_SIZE = 65534

_USER_WIDTH = 6
_PASSWORD_WIDTH = 10
_SESSION_WIDTH = 10
_SEQUENCE_WIDTH = 20
_HEARTBEAT_TIMEOUT_WIDTH = 5
_LOGIN_REQUEST_40 = _USER_WIDTH + _PASSWORD_WIDTH + _SESSION_WIDTH + _SEQUENCE_WIDTH  # 46
_LOGIN_REQUEST_41 = _LOGIN_REQUEST_40 + _HEARTBEAT_TIMEOUT_WIDTH  # 51
_LOGIN_ACCEPTED = _SESSION_WIDTH + _SEQUENCE_WIDTH  # 30
_FIELD_PAD = b" \x00"


class LoginRejectReason(enum.Enum):
    """Why a server rejected a login (the Login Rejected packet's reason code)."""

    NOT_AUTHORIZED = "A"
    SESSION_NOT_AVAILABLE = "S"

    @classmethod
    def get(cls, reason: str | LoginRejectReason) -> LoginRejectReason:
        """Return the member for a reason code (``'A'`` or ``'S'``) or a member itself.

        Raises:
            ValueError: the code is not one the spec defines.
        """
        if isinstance(reason, cls):
            return reason
        try:
            return cls(reason)
        except ValueError:
            raise ValueError(f"unknown login reject reason {reason!r}: expected 'A' or 'S'") from None


def _to_reject_reason(reason: str | LoginRejectReason) -> LoginRejectReason:
    # A named function, not the classmethod itself: mypy's attrs plugin only understands those.
    return LoginRejectReason.get(reason)


# --------------------------------------------------------------------------- field helpers


def _header(indicator: str, payload_length: int) -> bytes:
    length = payload_length + 1
    return bytes((length >> 8, length & 0xFF, ord(indicator)))


def _encode_field(value: str, width: int, name: str, *, right: bool, secret: bool = False) -> bytes:
    # A secret (the password) is never quoted in an error: errors end up in logs.
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a str, not {type(value).__name__}" + ("" if secret else f" ({value!r})")
        )
    shown = f"of {len(value)} characters" if secret else repr(value)
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {shown} is not ASCII") from None
    if len(raw) > width:
        raise ValueError(f"{name} {shown} is longer than its {width}-byte field")
    return raw.rjust(width) if right else raw.ljust(width)


def _encode_number(value: int | str, width: int, name: str) -> bytes:
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{name} {value!r} is not a non-negative whole number")
    return _encode_field(str(int(text)), width, name, right=True)


def _decode_text(field: bytes, name: str, *, secret: bool = False) -> str:
    try:
        return field.strip(_FIELD_PAD).decode("ascii")
    except UnicodeDecodeError:
        shown = "" if secret else f" {field!r}"  # a secret is never quoted: errors reach logs
        raise InvalidSoupMessage(f"{name} field{shown} is not ASCII") from None


def redacted_prefix(data: bytes | bytearray, limit: int) -> bytes:
    """The first ``limit`` bytes of ``data``, which starts at a length field, for an error message.

    A Login Request there (or right after a 2-byte empty packet) is cut after its username: its
    password must not reach a log.
    """
    for type_position in (2, 4):
        if data[type_position : type_position + 1] == b"L":
            limit = min(limit, type_position + 1 + _USER_WIDTH)
    return bytes(data[:limit])


def _decode_number(field: bytes, name: str) -> int:
    digits = field.strip(_FIELD_PAD)
    # bytes.isdigit() is ASCII-only, so int() below cannot fail.
    if not digits.isdigit():
        raise InvalidSoupMessage(f"{name} field {field!r} is not a number")
    return int(digits)


def _require_empty(name: str, payload: bytes) -> None:
    if payload:
        # The bytes are not quoted: they may hold anything, a Login Request's password included.
        raise InvalidSoupMessage(f"{name} carries no payload, got {len(payload)} bytes")


# --------------------------------------------------------------------------- messages


class SoupMessage(Serializable["SoupMessage"]):
    """Base class for every SoupBinTCP packet.

    Decode raw bytes (one whole packet, length prefix included) with :meth:`from_bytes`::

        length, msg = SoupMessage.from_bytes(b"\\x00\\x1fAtest      2                   ")
        assert msg == LoginAccepted("test", 2)
    """

    __slots__ = ()

    #: The packet type character (``'S'`` for Sequenced Data, ...).
    Indicator: ClassVar[str] = ""
    #: A human name for the packet type.
    Description: ClassVar[str] = ""
    #: Packet class by type character, filled in as subclasses are defined.
    ClassByIndicator: ClassVar[dict[str, type[SoupMessage]]] = {}

    def __init_subclass__(cls, indicator: str = "", description: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # attrs rebuilds slotted classes from a copy of their namespace, without the class
        # keywords: take the indicator from that copy so the registry holds the final class.
        indicator = indicator or cls.__dict__.get("Indicator", "")
        description = description or cls.__dict__.get("Description", "")
        if indicator:
            if len(indicator) != 1:
                raise TypeError(f"packet type must be one character, got {indicator!r}")
            cls.Indicator = indicator
            cls.Description = description
            SoupMessage.ClassByIndicator[indicator] = cls

    def payload(self) -> bytes:
        """The bytes that follow the type byte on the wire."""
        return b""

    def to_bytes(self) -> tuple[int, bytes]:
        """Encode the packet, 2-byte length prefix included.

        Returns:
            ``(len(packet), packet)``.

        Raises:
            ValueError: a field does not fit its wire form (too long, not ASCII, not a number,
                or a payload over 65,534 bytes).
        """
        payload = self.payload()
        if len(payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"{self.Description} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_SIZE}")
        packet = _header(self.Indicator, len(payload)) + payload
        return len(packet), packet

    @classmethod
    def from_bytes(cls, bytes_: bytes) -> tuple[int, SoupMessage]:
        """Decode exactly one whole packet (length prefix included).

        Called on a subclass (``LoginRequest.from_bytes``) it also checks the packet is of that type.

        Returns:
            ``(len(bytes_), message)``.

        Raises:
            InvalidSoupMessage: the bytes are not exactly one valid packet.
        """
        try:
            # Through memoryview: bytes(5) would be five NULs and bytes(-1) a plain ValueError.
            raw = bytes_ if type(bytes_) is bytes else bytes(memoryview(bytes_))
        except TypeError:
            raise InvalidSoupMessage(f"expected bytes, got {type(bytes_).__name__}") from None
        if len(raw) < 3:
            raise InvalidSoupMessage(f"a packet needs at least 3 bytes, got {len(raw)}: {raw!r}")
        declared = int.from_bytes(raw[:2], "big")
        if declared != len(raw) - 2:
            raise InvalidSoupMessage(
                f"length field says {declared} bytes follow it, but {len(raw) - 2} do:"
                f" {redacted_prefix(raw, 40)!r}"
            )
        message = decode_payload(raw[2], raw[3:])
        if cls is not SoupMessage and not isinstance(message, cls):
            raise InvalidSoupMessage(f"expected a {cls.Description} packet, got {message.Description}")
        return len(raw), message

    def is_heartbeat(self) -> bool:
        """True for Client and Server Heartbeat packets."""
        return False

    def is_logout(self) -> bool:
        """True for packets that end a connection's conversation: End of Session and Logout Request."""
        return False


@attrs.define(eq=True)
class LoginRequest(SoupMessage, indicator="L", description="Login Request"):
    """SoupBinTCP Login Request: the first packet a client sends.

    Args:
        user: username, at most 6 ASCII characters.
        password: password, at most 10 ASCII characters (never shown by ``repr``).
        session: session to join; ``''`` means the server's current session.
        sequence: next sequence number wanted, as a string (``'1'``, ``'0'`` for only new messages);
            an ``int`` is accepted and converted.
        heartbeat_timeout: keyword-only, SoupBinTCP 4.1: milliseconds of client silence after which
            the server may drop the connection. ``None`` (default) emits the 46-byte 4.0 form.
    """

    user: str
    password: str = attrs.field(repr=False)
    session: str = ""
    sequence: str = attrs.field(default="1", converter=str)
    heartbeat_timeout: int | None = attrs.field(default=None, kw_only=True)

    def payload(self) -> bytes:
        fields = (
            _encode_field(self.user, _USER_WIDTH, "user", right=False)
            + _encode_field(self.password, _PASSWORD_WIDTH, "password", right=False, secret=True)
            + _encode_field(self.session, _SESSION_WIDTH, "session", right=True)
            + _encode_number(self.sequence, _SEQUENCE_WIDTH, "sequence")
        )
        if self.heartbeat_timeout is not None:
            fields += _encode_number(self.heartbeat_timeout, _HEARTBEAT_TIMEOUT_WIDTH, "heartbeat_timeout")
        return fields

    @classmethod
    def _from_payload(cls, payload: bytes) -> LoginRequest:
        if len(payload) not in (_LOGIN_REQUEST_40, _LOGIN_REQUEST_41):
            raise InvalidSoupMessage(
                f"Login Request payload must be {_LOGIN_REQUEST_40} (4.0) or {_LOGIN_REQUEST_41} (4.1) bytes,"
                f" got {len(payload)}"
            )
        heartbeat_timeout = None
        if len(payload) == _LOGIN_REQUEST_41:
            heartbeat_timeout = _decode_number(payload[46:51], "heartbeat timeout")
        return cls(
            _decode_text(payload[0:6], "user"),
            _decode_text(payload[6:16], "password", secret=True),
            _decode_text(payload[16:26], "session"),
            str(_decode_number(payload[26:46], "sequence")),
            heartbeat_timeout=heartbeat_timeout,
        )


@attrs.define(eq=True)
class LoginAccepted(SoupMessage, indicator="A", description="Login Accepted"):
    """SoupBinTCP Login Accepted.

    Args:
        session_id: name of the session joined (at most 10 ASCII characters).
        sequence: sequence number of the next Sequenced Data packet the client will receive.
    """

    session_id: str
    sequence: int = attrs.field(converter=int)

    def payload(self) -> bytes:
        return _encode_field(self.session_id, _SESSION_WIDTH, "session_id", right=True) + _encode_number(
            self.sequence, _SEQUENCE_WIDTH, "sequence"
        )

    @classmethod
    def _from_payload(cls, payload: bytes) -> LoginAccepted:
        if len(payload) != _LOGIN_ACCEPTED:
            raise InvalidSoupMessage(
                f"Login Accepted payload must be {_LOGIN_ACCEPTED} bytes, got {len(payload)}"
            )
        return cls(_decode_text(payload[:10], "session"), _decode_number(payload[10:], "sequence"))


@attrs.define(eq=True)
class LoginRejected(SoupMessage, indicator="J", description="Login Rejected"):
    """SoupBinTCP Login Rejected.

    Args:
        reason: a :class:`LoginRejectReason` or its code (``'A'``, ``'S'``).
    """

    reason: LoginRejectReason = attrs.field(converter=_to_reject_reason)

    def payload(self) -> bytes:
        return self.reason.value.encode("ascii")

    @classmethod
    def _from_payload(cls, payload: bytes) -> LoginRejected:
        if payload not in (b"A", b"S"):
            shown = repr(payload) if len(payload) <= 2 else f"{len(payload)} bytes"  # never a password
            raise InvalidSoupMessage(f"Login Rejected reason must be b'A' or b'S', got {shown}")
        return cls(payload.decode("ascii"))


@attrs.define(eq=True)
class SequencedData(SoupMessage, indicator="S", description="Sequenced Data"):
    """SoupBinTCP Sequenced Data: an application message with a (implicit) sequence number.

    Args:
        data: the application payload.

    ``sequence`` is the message's sequence number when it was received by a session (``0`` when
    unknown). It is not on the wire and plays no part in equality.
    """

    data: bytes
    sequence: int = attrs.field(default=0, eq=False)

    def payload(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def _from_payload(cls, payload: bytes) -> SequencedData:
        return cls(payload)


@attrs.define(eq=True)
class UnSequencedData(SoupMessage, indicator="U", description="Unsequenced Data"):
    """SoupBinTCP Unsequenced Data: an application message outside the sequenced stream.

    Args:
        data: the application payload.
    """

    data: bytes

    def payload(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def _from_payload(cls, payload: bytes) -> UnSequencedData:
        return cls(payload)


@attrs.define(eq=True)
class Debug(SoupMessage, indicator="+", description="Debug"):
    """SoupBinTCP Debug packet: free ASCII text for humans; either side may send it.

    Args:
        msg: the text. Non-ASCII received bytes are kept as ``\\xNN`` escapes rather than rejected
            (the text is then cut at 65,534 characters, so that it can be sent again).
    """

    msg: str

    def payload(self) -> bytes:
        try:
            return self.msg.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"debug text {self.msg!r} is not ASCII") from None

    @classmethod
    def _from_payload(cls, payload: bytes) -> Debug:
        # Each non-ASCII byte becomes a 4-character escape; cut the text so that the message
        # still fits in a packet and can be sent on (a relay, an echo) without a ValueError.
        return cls(payload.decode("ascii", "backslashreplace")[:MAX_PAYLOAD_SIZE])


@attrs.define(eq=True)
class ClientHeartbeat(SoupMessage, indicator="R", description="Client Heartbeat"):
    """SoupBinTCP Client Heartbeat: sent by a client that has sent nothing for its interval."""

    def is_heartbeat(self) -> bool:
        return True

    @classmethod
    def _from_payload(cls, payload: bytes) -> ClientHeartbeat:
        _require_empty(cls.Description, payload)
        return _CLIENT_HEARTBEAT


@attrs.define(eq=True)
class ServerHeartbeat(SoupMessage, indicator="H", description="Server Heartbeat"):
    """SoupBinTCP Server Heartbeat: sent by a server that has sent nothing for its interval."""

    def is_heartbeat(self) -> bool:
        return True

    @classmethod
    def _from_payload(cls, payload: bytes) -> ServerHeartbeat:
        _require_empty(cls.Description, payload)
        return _SERVER_HEARTBEAT


@attrs.define(eq=True)
class EndOfSession(SoupMessage, indicator="Z", description="End of Session"):
    """SoupBinTCP End of Session: the server's stream is over; reconnecting to it gives nothing more."""

    def is_logout(self) -> bool:
        return True

    @classmethod
    def _from_payload(cls, payload: bytes) -> EndOfSession:
        _require_empty(cls.Description, payload)
        return cls()


@attrs.define(eq=True)
class LogoutRequest(SoupMessage, indicator="O", description="Logout Request"):
    """SoupBinTCP Logout Request: the client ends the connection gracefully."""

    def is_logout(self) -> bool:
        return True

    @classmethod
    def _from_payload(cls, payload: bytes) -> LogoutRequest:
        _require_empty(cls.Description, payload)
        return cls()


_CLIENT_HEARTBEAT = ClientHeartbeat()
_SERVER_HEARTBEAT = ServerHeartbeat()

# Decoder by type byte (an int, as indexing bytes gives).
_DECODERS: dict[int, Callable[[bytes], SoupMessage]] = {
    ord(indicator): cls._from_payload  # type: ignore[attr-defined]
    for indicator, cls in SoupMessage.ClassByIndicator.items()
}


def decode_payload(packet_type: int, payload: bytes) -> SoupMessage:
    """Build the message for a packet's type byte and payload (the bytes after the type byte).

    Raises:
        InvalidSoupMessage: unknown type, or a payload that type does not allow.
    """
    try:
        decoder = _DECODERS[packet_type]
    except KeyError:
        raise InvalidSoupMessage(f"unknown packet type {bytes((packet_type,))!r}") from None
    return decoder(payload)
