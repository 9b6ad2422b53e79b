"""TLCP's text syntax: the value encoding of `U` lines, the escaping of messages, request bodies.

Kept apart from the server so the rules the Lightstreamer client decodes by (the protocol notes
in `tlcp.py`) read in one place and can be tested without a socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote

from collector.vocabulary import Transport

TLCP_VERSION = "TLCP-2.4.0"
SUBPROTOCOL = f"{TLCP_VERSION}.lightstreamer.com"
TLCP_VERSIONS = ("TLCP-2.4.0", "TLCP-2.3.0", "TLCP-2.2.0", "TLCP-2.1.0")  # as IG accepts them
SUBPROTOCOLS = tuple(f"{v}.lightstreamer.com" for v in TLCP_VERSIONS)
WS, HTTP_STREAMING, HTTP_POLLING = Transport.WS_STREAMING, Transport.HTTP_STREAMING, Transport.HTTP_POLLING
DEFAULT_CONTENT_LENGTH = 50_000_000
REQUEST_LIMIT = 50_000
MAX_BUFFERED_LINES = 200_000
COMMANDS = frozenset({"wsok", "create_session", "bind_session", "control", "msg", "heartbeat"})


def encode_value(v: str | None) -> str:
    """One field in TLCP's value syntax (the client percent-decodes anything else it gets)."""
    if v is None:
        return "#"
    if v == "":
        return "$"
    out = v.replace("%", "%25").replace("|", "%7C").replace("\r", "%0D").replace("\n", "%0A")
    if out[0] in "#$^":
        out = quote(out[0], safe="") + out[1:]
    return out


def encode_values(values: Sequence[str | None], last: Sequence[str | None] | None) -> str:
    """The value part of a `U` line: unchanged fields (vs `last`) become empty or `^n`."""
    parts: list[str] = []
    run = 0
    for i, v in enumerate(values):
        if last is not None and last[i] == v:
            run += 1
            continue
        if run:
            parts.extend([""] * run if run < 3 else [f"^{run}"])
            run = 0
        parts.append(encode_value(v))
    if run:
        parts.extend([""] * run if run < 3 else [f"^{run}"])
    return "|".join(parts)


def percent(msg: str) -> str:
    """Messages in CONERR/END/REQERR are split on commas before decoding: encode commas."""
    return quote(msg, safe=" .:/-_()'")


def parse_params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[unquote(k)] = unquote(v)
    return out
