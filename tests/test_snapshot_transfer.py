"""A catch-up snapshot larger than a frame (issue 15: "a 1 GB snapshot
transfer"): before, the peer dropped the reply (``oversized_outgoing``) and
a node behind a compacted log never caught up once the state outgrew
--max-frame (64 MiB by default, while the quota allows 2 GiB). Now it goes
in fragments, reassembled within bounds."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from netcluster import ProcCluster

from paxosrsm.net import codec
from paxosrsm.net.runtime import _FRAG, FRAGMENT, NodeServer


def test_a_snapshot_larger_than_a_frame_reaches_a_lagging_node(tmp_path: Path) -> None:
    # 1 MiB frames (the smallest allowed) and about 2.4 MB of state.
    c = ProcCluster(tmp_path / "c", 3, 0, ["--max-frame", "1048576", "--snapshot-interval", "50"])
    try:
        c.start_all()
        c.wait_ready()
        lead = c.leader()
        assert lead is not None
        lag = next(n for n in range(3) if n != lead)
        c.kill(lag)
        with c.client(timeout=10.0) as cl:
            for i in range(300):
                cl.put(f"k{i}", f"{i:04d}" + "v" * 8000)
        c.start(lag)
        deadline = time.monotonic() + 30
        while True:
            st, lst = c.status(lag), c.status(lead)
            if st and lst and st["applied"] >= lst["applied"] - 2:
                break
            assert time.monotonic() < deadline, f"never caught up: {st}\n{c.logs()}"
            time.sleep(0.5)
        assert st is not None and st["counters"].get("transfers_received", 0) >= 1, st
        sent = sum((c.status(n) or {}).get("counters", {}).get("transfers_sent", 0)
                   for n in range(3) if n != lag)  # fmt: skip
        assert sent >= 1
        with c.client(timeout=10.0) as cl:
            assert cl.get("k299") == "0299" + "v" * 8000
    finally:
        c.close()


class _Conn:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {"kind": "link-in"}
        self.peer = "test"
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _server(max_transfer: int) -> Any:
    import collections

    s = SimpleNamespace(max_transfer=max_transfer, reassembling=0,
                        stats=collections.Counter(), bad=[])  # fmt: skip
    s._bad = lambda what, detail: s.bad.append(what)
    s._drop_reassembly = lambda conn: NodeServer._drop_reassembly(s, conn)  # type: ignore[arg-type]
    return s


def _frag(xfer: int, i: int, n: int, total: int, piece: bytes) -> bytes:
    return FRAGMENT + _FRAG.pack(xfer, i, n, total) + piece


def test_fragments_are_reassembled_in_order_and_within_bounds() -> None:
    msg = codec.encode(_catchup())
    pieces = [msg[i : i + 7] for i in range(0, len(msg), 7)]
    n, total = len(pieces), len(msg)
    s, conn = _server(1 << 20), _Conn()
    out = None
    for i, p in enumerate(pieces):
        out = NodeServer._reassemble(s, conn, _frag(5, i, n, total, p))  # type: ignore[arg-type]
        assert (out is None) == (i < n - 1)
    assert out is not None and codec.decode_many(out, True)[0] == codec.decode(msg)
    assert s.reassembling == 0 and not conn.closed and s.stats["transfers_received"] == 1
    # Out of order: the link breaks, nothing is kept.
    s, conn = _server(1 << 20), _Conn()
    NodeServer._reassemble(s, conn, _frag(5, 0, n, total, pieces[0]))  # type: ignore[arg-type]
    assert NodeServer._reassemble(s, conn, _frag(5, 2, n, total, pieces[2])) is None  # type: ignore[arg-type]
    assert conn.closed and s.bad == ["malformed"] and s.reassembling == 0
    # Larger than the bound (all links together): refused at the first fragment.
    s, conn = _server(total - 1), _Conn()
    assert NodeServer._reassemble(s, conn, _frag(5, 0, n, total, pieces[0])) is None  # type: ignore[arg-type]
    assert conn.closed and s.bad == ["malformed"] and s.reassembling == 0
    # More bytes than announced, or a truncated header: refused.
    s, conn = _server(1 << 20), _Conn()
    NodeServer._reassemble(s, conn, _frag(5, 0, 2, 10, b"x" * 8))  # type: ignore[arg-type]
    assert NodeServer._reassemble(s, conn, _frag(5, 1, 2, 10, b"x" * 8)) is None  # type: ignore[arg-type]
    assert conn.closed and s.bad == ["malformed"] and s.reassembling == 0
    s, conn = _server(1 << 20), _Conn()
    assert NodeServer._reassemble(s, conn, FRAGMENT + b"\x01\x02") is None  # type: ignore[arg-type]
    assert conn.closed and s.bad == ["malformed"]  # a truncated header
    assert struct.calcsize("<QIIQ") == _FRAG.size


def _catchup() -> Any:
    from paxosrsm.messages import CatchupReply, Session, Snapshot

    return CatchupReply(Snapshot(9, b"s" * 300, (Session(1, 2, b"r"),)), (), 9)
