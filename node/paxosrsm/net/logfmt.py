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

import contextlib
import datetime as dt
import json
import logging
import time

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


class NodeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The node's one handler (stderr). ``emit_lines`` writes many lines of
    one logger at once, formatted as ``emit`` would (one time stamp for the
    batch): the access log's lines at peak cost a quarter of the leader's
    CPU through one ``Logger.info`` each (issue 15's profile)."""

    def emit_lines(self, name: str, level: int, msgs: list[str]) -> None:
        fmt = self.formatter
        now = time.time()
        if isinstance(fmt, JsonFormatter):
            base = {
                "ts": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds"),
                "level": logging.getLevelName(level).lower(),
                "logger": name,
                "node": fmt.node,
            }
            lines = [json.dumps({**base, "msg": m[:MAX_MSG]}, ensure_ascii=False) for m in msgs]
        else:
            rec = logging.LogRecord(name, level, "", 0, "%s", ("\x00",), None)
            rec.created, rec.msecs = now, (now - int(now)) * 1000
            head, _, tail = (fmt or logging.Formatter()).format(rec).partition("\x00")
            lines = [head + m + tail for m in msgs]
        with self.lock or contextlib.nullcontext():
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.flush()
            except (OSError, ValueError):
                pass  # stderr gone: as logging.Handler.handleError, never raise


def emit_lines(logger: logging.Logger, level: int, msgs: list[str]) -> None:
    """Log ``msgs`` at ``level``: in one write when the node's own handler
    is the only one that would see them, else one record each."""
    if not msgs or not logger.isEnabledFor(level):
        return
    root = logging.getLogger()
    h = root.handlers[0] if len(root.handlers) == 1 else None
    if isinstance(h, NodeHandler) and not logger.handlers and logger.propagate and h.level <= level:
        h.emit_lines(logger.name, level, msgs)
        return
    for m in msgs:
        logger.log(level, "%s", m)


def configure(level: str, fmt: str, node: int) -> None:
    handler = NodeHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s node{node} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
