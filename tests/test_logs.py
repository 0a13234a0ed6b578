"""Structured logs (--log-format json): every line of a real node is one JSON
object; leader changes, snapshots and refused input are events with fields."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from netcluster import ProcCluster


def lines(c: ProcCluster, nid: int) -> list[dict[str, Any]]:
    text = (c.root / f"node-{nid}" / "node.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_carry_one_event_per_leader_change(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path / "c", 3, 0, ["--log-format", "json", "--snapshot-interval", "20"])
    c.start_all()
    try:
        c.wait_ready()
        cl = c.client()
        for i in range(50):
            cl.put(f"k{i}", "v")
        old = c.leader()
        assert old is not None
        # Garbage at a peer port: refused, and said so as an event.
        other = next(i for i in range(3) if i != old)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00junk" * 10, c.addrs[other])
        c.kill(old)
        end = time.monotonic() + 20
        while time.monotonic() < end and c.leader() in (None, old):
            time.sleep(0.2)
        new = c.leader()
        assert new not in (None, old)
        time.sleep(0.5)
        for nid in (i for i in range(3) if i != old):
            recs = lines(c, nid)  # every line parses
            assert all({"ts", "level", "logger", "node", "msg"} <= set(r) for r in recs)
            changes = [r for r in recs if r.get("event") == "leader_change"]
            assert changes and changes[-1]["leader"] == new, changes
            assert any(r.get("event") == "snapshot" and r["slot"] >= 20 for r in recs)
        assert any(r.get("event") == "lead" for r in lines(c, new))
        refused = [r for r in lines(c, other) if r.get("event") == "refused"]
        assert refused and refused[0]["reason"] == "unauthenticated", refused
    finally:
        c.close()


def test_batched_lines_read_as_single_records_do() -> None:
    """The access log writes its lines in one batch (logfmt.emit_lines): each
    line must be what a record of its own would have printed, in both formats."""
    import io
    import logging

    from paxosrsm.net.logfmt import JsonFormatter, NodeHandler, emit_lines

    for fmt in (logging.Formatter("%(asctime)s node3 %(levelname)s %(message)s"),
                JsonFormatter(3)):  # fmt: skip
        one, many = io.StringIO(), io.StringIO()
        h1, h2 = NodeHandler(one), NodeHandler(many)
        h1.setFormatter(fmt)
        h2.setFormatter(fmt)
        msgs = ["node 3: udp 1.2.3.4:5 client=7 seq=1 put key='a'", 'quote " and \\ and é']
        for m in msgs:
            h1.emit(logging.LogRecord("paxosrsm.access", logging.INFO, "", 0, m, None, None))
        h2.emit_lines("paxosrsm.access", logging.INFO, msgs)
        a, b = one.getvalue().splitlines(), many.getvalue().splitlines()
        assert len(a) == len(b) == 2
        for x, y in zip(a, b, strict=True):
            if isinstance(fmt, JsonFormatter):
                jx, jy = json.loads(x), json.loads(y)
                assert jx.pop("ts")[:16] == jy.pop("ts")[:16] and jx == jy
            else:
                assert x[24:] == y[24:] and x[:16] == y[:16]  # past the time stamp
    # Not the node's handler (a test's caplog, a library user's setup): one
    # record per line, through logging as usual.
    log = logging.getLogger("paxosrsm.test-emit")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    emit_lines(log, logging.INFO, ["x", "y"])
    assert seen == ["x", "y"]
