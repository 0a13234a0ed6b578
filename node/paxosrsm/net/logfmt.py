"""Structured logs: ``--log-format json`` writes one JSON object per line.

Every line has ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``node`` and
``msg``. Lines about events an operator alerts or searches on also carry
``event`` and its fields (the runtime passes them as ``extra``):
``leader_change`` (leader, ballot), ``leader_lost``, ``lead`` / ``lead_lost``
(this node), ``recovery`` (the lost-disk recovery), ``snapshot``,
``compaction``, ``refused`` (a peer or input refused: reason, detail),
``backup``. Bounded: a message longer than 8 KiB is cut.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

MAX_MSG = 8 << 10
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, node: int) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if len(msg) > MAX_MSG:
            msg = msg[:MAX_MSG] + "...(cut)"
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "msg": msg,
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)[-MAX_MSG:]
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str, node: int) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s node{node} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
