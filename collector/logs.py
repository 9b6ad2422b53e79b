"""Structured logging: JSON lines in production, readable lines on a terminal.

Secrets never reach a log: the Lightstreamer client's DEBUG output carries `LS_password`
(CST/XST tokens), so its loggers are capped at INFO, and a filter masks anything that looks like
a token or a password in every record as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import deque
from typing import Any

_SECRET_PATTERNS = [
    re.compile(r"(CST-)[^|&\s\"']+", re.I),
    re.compile(r"(XST-)[^|&\s\"']+", re.I),
    re.compile(r"(LS_password=)[^&\s]+", re.I),
    # A connection URL's password, one host or several (postgresql://u:pw@h1:5432,h2:5432/db).
    re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)", re.I),
    re.compile(r"((?:\"|')?(?:password|CST|X-SECURITY-TOKEN|X-IG-API-KEY|access_token|refresh_token|"
               r"Authorization)(?:\"|')?\s*[:=]\s*(?:\"|')?)[^\"',\s}]+", re.I),
]  # fmt: skip

# Values to mask, by slot. Fixed secrets (password, API key, username) have a slot of their own;
# session tokens share the slots "cst"/"xst", which keep the last two of each, so a re-login
# every few hours does not make every log line slower for the life of the process. Readers see
# an immutable snapshot swapped in under a lock: a log call on one thread never iterates a
# collection another thread is changing.
_MAX_PER_SLOT = 2
_slots: dict[str, deque[str]] = {}
_slots_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str | None, *, slot: str | None = None) -> None:
    """Mask this exact value wherever it appears (API key, password, username, tokens)."""
    global _secrets
    if not value or len(value) < 4:
        return
    with _slots_lock:
        kept = _slots.setdefault(slot or f"fixed:{value}", deque(maxlen=_MAX_PER_SLOT))
        if value not in kept:
            kept.append(value)
        # Longest first: a secret that contains another is masked whole.
        _secrets = tuple(sorted({v for d in _slots.values() for v in d}, key=len, reverse=True))


def redact(text: str) -> str:
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(r"\1***", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg)
        if red != msg or record.args:
            record.msg, record.args = red, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info or record.exc_text:
            out["exc"] = redact(record.exc_text or self.formatException(record.exc_info))
        return redact(json.dumps(out, default=str))


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info or record.exc_text:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))
        return redact(line)


def setup(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # The Lightstreamer client logs LS_password at DEBUG; trading-ig logs request bodies at DEBUG.
    for noisy in ("lightstreamer", "trading_ig", "urllib3", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
    # trading-ig warns at import that the optional `munch` is absent; we never use it.
    logging.getLogger("trading_ig.utils").setLevel(logging.ERROR)
