"""The access log of the client protocol (UDP and TCP): who changed what.

Issue 12: "an access log, on by default, records who changed what". The HTTP
API logs each write with the token's name (``httpauth.py``); this is the same
for writes that come by the client port: one line per write request to the
``paxosrsm.access`` logger, with where it came from, the client id and
sequence number, and the operation and key (the KV store's; another state
machine's writes are logged by size). Values are never logged.

Lines are queued on the request path (a tuple append) and written once per
tick, off the request path, in one write (``logfmt.emit_lines``); at most
``MAX_PENDING`` wait, more are counted (``access_log_dropped``) and not kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .logfmt import emit_lines

log = logging.getLogger("paxosrsm.access")
MAX_PENDING = 20_000
_OP = b'"op":"'
_KEY = b'"key":"'
_SCAN = 512  # bytes of a key shown at most


def _string_at(payload: bytes, marker: bytes) -> str | None:
    i = payload.find(marker)
    if i < 0:
        return None
    start = i + len(marker)
    raw = payload[start : start + _SCAN * 6].decode("utf-8", "replace")
    try:
        s, _ = json.decoder.scanstring(raw, 0)  # type: ignore[attr-defined]
    except ValueError:
        return raw[:_SCAN] + "..."
    return str(s)[:_SCAN]


def describe(payload: bytes) -> str:
    """``op key=...`` of a KV write (a JSON object: an escaped quote inside a
    string never matches the markers), or its size."""
    op = _string_at(payload, _OP) if payload[:1] == b"{" else None
    key = _string_at(payload, _KEY) if op is not None else None
    if op is None or key is None:
        return f"{len(payload)} bytes"
    return f"{op} key={key!r}"


class AccessLog:
    __slots__ = ("dropped", "pending")

    def __init__(self) -> None:
        self.pending: list[tuple[str, int, int, bytes]] = []
        self.dropped = 0

    def write(self, who: str, client_id: int, seq: int, payload: bytes) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.append((who, client_id, seq, payload))

    def flush(self, node: Any) -> None:
        pending, self.pending = self.pending, []
        if not pending or not log.isEnabledFor(logging.INFO):
            return
        emit_lines(
            log,
            logging.INFO,
            [
                f"node {node}: {who} client={cid} seq={seq} {describe(p)}"
                for who, cid, seq, p in pending
            ],
        )
