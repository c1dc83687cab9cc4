"""Codec interop, the reference's side: decode packets we encoded, encode the packets we name.

Run by the reference virtualenv's python (``python -I ref_codec.py``), never by ours. Reads one
JSON object on stdin::

    {"decode": ["<hex packet>", ...], "encode": [<fields>, ...]}

and prints one JSON object on stdout::

    {"reference": "1.3.0",
     "decoded": [<fields> | {"error": "..."}, ...],   # SoupMessage.from_bytes of each packet
     "encoded": ["<hex packet>" | {"error": "..."}, ...]}  # to_bytes() of each message

``<fields>`` is the shared description of a message (``tests/test_interop_codec.py`` builds the
same from ours): ``{"type": <packet type character>, ...}`` plus, by type, ``L``: user, password,
session, sequence (a string); ``A``: session_id, sequence (an int); ``J``: reason (``"A"``/``"S"``);
``S``/``U``: data (hex); ``+``: msg; nothing more for ``H R Z O``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from typing import Any

import nasdaq_protocols
from nasdaq_protocols import soup


def fields(msg: soup.SoupMessage) -> dict[str, Any]:
    described: dict[str, Any] = {"type": msg.Indicator}
    if isinstance(msg, soup.LoginRequest):
        described.update(user=msg.user, password=msg.password, session=msg.session, sequence=msg.sequence)
    elif isinstance(msg, soup.LoginAccepted):
        described.update(session_id=msg.session_id, sequence=msg.sequence)
    elif isinstance(msg, soup.LoginRejected):
        described.update(reason=msg.reason.value)
    elif isinstance(msg, soup.SequencedData | soup.UnSequencedData):
        described.update(data=bytes(msg.data).hex())
    elif isinstance(msg, soup.Debug):
        described.update(msg=msg.msg)
    return described


def build(described: dict[str, Any]) -> soup.SoupMessage:
    kind = described["type"]
    if kind == "L":
        return soup.LoginRequest(
            described["user"], described["password"], described["session"], described["sequence"]
        )
    if kind == "A":
        return soup.LoginAccepted(described["session_id"], described["sequence"])
    if kind == "J":
        return soup.LoginRejected(described["reason"])
    if kind == "S":
        return soup.SequencedData(bytes.fromhex(described["data"]))
    if kind == "U":
        return soup.UnSequencedData(bytes.fromhex(described["data"]))
    if kind == "+":
        return soup.Debug(described["msg"])
    return soup.SoupMessage.ClassByIndicator[kind]()


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> int:
    version = importlib.metadata.version("nasdaq-protocols")
    location = os.path.realpath(nasdaq_protocols.__file__)
    if version != "1.3.0" or not location.startswith(os.path.realpath(sys.prefix)):
        print(f"not the reference implementation: nasdaq-protocols {version} at {location}", file=sys.stderr)
        return 2
    request = json.load(sys.stdin)
    decoded: list[Any] = []
    for packet in request.get("decode", []):
        try:
            _, msg = soup.SoupMessage.from_bytes(bytes.fromhex(packet))
            decoded.append(fields(msg))
        except Exception as exc:  # the reference lets struct.error and others escape
            decoded.append(_error(exc))
    encoded: list[Any] = []
    for described in request.get("encode", []):
        try:
            _, packet = build(described).to_bytes()
            encoded.append(packet.hex())
        except Exception as exc:
            encoded.append(_error(exc))
    print(json.dumps({"reference": version, "decoded": decoded, "encoded": encoded}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
