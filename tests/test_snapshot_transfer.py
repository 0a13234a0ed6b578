"""A catch-up snapshot larger than a frame (issue 15: "a 1 GB snapshot
transfer"): before, the peer dropped the reply (``oversized_outgoing``) and
a node behind a compacted log never caught up once the state outgrew
--max-frame (64 MiB by default, while the quota allows 2 GiB). Now it goes
in fragments, reassembled within bounds."""

from __future__ import annotations

import asyncio
import random
import shutil
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from netcluster import ProcCluster

from paxosrsm.messages import CatchupReply, Snapshot
from paxosrsm.net import auth, codec
from paxosrsm.net.conn import BIG_FRAME, FramedConn
from paxosrsm.net.runtime import _FRAG, FRAGMENT, NodeServer, _slices
from paxosrsm.testing.bigstate import mvcc_state, seed_members


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


def test_a_wiped_node_takes_a_large_snapshot_once(tmp_path: Path) -> None:
    """About 150 MB of state, default frames (three fragments). Found by
    bench/transfer_bench.py: the wiped node asked again on its retransmit
    timer while the snapshot was arriving, and each request made a peer
    encode the whole state once more; at 134 MB the peers' loops did
    nothing else, no leader was elected and the node never caught up."""
    state, puts = mvcc_state(150 << 20, 64 << 10)
    c = ProcCluster(tmp_path / "c", 3, 0)
    try:
        seed_members(c.root, c.layout["cluster_id"], 3, Snapshot(puts, state, ()))
        del state
        c.start_all()
        c.wait_ready(timeout=60)
        lead = c.leader()
        assert lead is not None
        victim = next(n for n in range(3) if n != lead)
        c.kill(victim)
        shutil.rmtree(c.root / f"node-{victim}")
        c.start(victim, initial="existing")
        deadline = time.monotonic() + 90
        while True:
            st = c.status(victim, timeout=2.0)
            if st is not None and st["applied"] >= puts and not st["recovering"]:
                break
            assert time.monotonic() < deadline, f"never caught up: {st}\n{c.logs()}"
            time.sleep(0.2)
        sent = [(c.status(n) or {}).get("counters", {}).get("transfers_sent", 0) for n in range(3)]
        assert sum(sent) == 1, sent  # the whole state crossed once
        with c.client(timeout=10.0) as cl:
            cl.put("after", "1")  # the cluster still decides
    finally:
        c.close()


def test_large_frames_arrive_whole_however_the_stream_is_cut() -> None:
    """Frames of BIG_FRAME or more are received in place (one copy) and
    handed on as views; small ones as before. Random cuts of one stream
    holding both kinds, the large ones sealed whole and in parts."""

    async def run() -> None:
        rng = random.Random(7)
        bodies = [b"small", rng.randbytes(BIG_FRAME + 5), b"x" * 100, rng.randbytes(3 << 20), b"z"]
        tx = auth.FrameMac(b"k" * 32, True)
        stream = b""
        for i, b in enumerate(bodies):
            if len(b) > 1000 and i % 2:
                stream += b"".join(bytes(p) for p in tx.seal_parts([b[:10], memoryview(b)[10:]]))
            else:
                stream += tx.seal(b)
        for trial in range(20):
            got: list[bytes] = []
            bad: list[str] = []
            rx = _receiver(got, bad)
            pos = 0
            while pos < len(stream):
                k = rng.choice([1, 7, 4096, 65536, 1 << 20, 5 << 20])
                rx.data_received(stream[pos : pos + k])
                pos += k
            assert got == bodies and not bad, (trial, [len(g) for g in got], bad)
        # A large frame with one bit flipped is refused as forged.
        got, bad = [], []
        rx = _receiver(got, bad)
        frame = bytearray(auth.FrameMac(b"k" * 32, True).seal(bodies[1]))
        frame[BIG_FRAME // 2] ^= 1
        rx.data_received(bytes(frame[:1000]))
        rx.data_received(bytes(frame[1000:]))
        assert got == [] and bad == ["bad_mac"]

    asyncio.run(run())


def test_a_snapshot_reply_is_sent_in_parts_that_join_to_its_encoding() -> None:
    """The sender never builds the whole encoded reply: its parts (the
    state among them, uncopied) join to exactly ``codec.encode``, and the
    fragments cut across them join to the same bytes."""
    from paxosrsm.messages import DecidedEntry, Session
    from paxosrsm.types import Command

    for n in (0, 1, 255, 256, 65535, 65536, 70_000):
        m = CatchupReply(Snapshot(9, bytes(range(256)) * (n // 256) + b"s" * (n % 256),
                                  (Session(1, 2, b"r"),)),
                         (DecidedEntry(10, (Command(1, 3, b"x"),)),), 10)  # fmt: skip
        parts = codec.encode_parts(m)
        whole = codec.encode(m)
        assert b"".join(parts) == whole, n
        assert any(p is m.snapshot.state for p in parts) or n == 0  # type: ignore[union-attr]
        for size in (1, 7, 4096, 1 << 20):
            frags = list(_slices(parts, size))
            assert b"".join(b"".join(f) for f in frags) == whole
            assert all(sum(map(len, f)) == size for f in frags[:-1])
            assert len(frags) == -(-len(whole) // size)


def test_a_snapshot_msgpack_cannot_carry_is_refused_not_fatal() -> None:
    """A state of 4 GiB or more does not fit a msgpack bin: the reply is
    counted as oversized and dropped; the node's loop goes on."""
    import collections

    class Huge(bytes):
        def __len__(self) -> int:
            return 1 << 32

    bad: list[str] = []
    s = SimpleNamespace(opts=SimpleNamespace(max_frame=1 << 20), max_transfer=1 << 40,
                        stats=collections.Counter(), _bad=lambda r, d: bad.append(r),
                        _send_fragments=lambda c, e: bad.append("sent"))  # fmt: skip
    big = CatchupReply(Snapshot(9, Huge(b"s"), ()), (), 9)
    NodeServer._send_frames(s, SimpleNamespace(meta={}), [big], {})  # type: ignore[arg-type]
    assert bad == ["oversized_outgoing"]


def test_a_large_frame_header_alone_reserves_no_memory() -> None:
    """A peer that announces a large frame and sends little of it holds
    only what it sent (a claim in a header is not an allocation)."""

    async def run() -> None:
        got: list[bytes] = []
        bad: list[str] = []
        rx = _receiver(got, bad)
        rx.data_received(auth.FRAME_HDR.pack(6 << 20) + b"x" * 10)
        assert rx.big is not None and len(rx.big) == 10 and rx.big_need == 6 << 20
        rx.data_received(b"y" * 1000)
        assert len(rx.big) == 1010 and got == [] and bad == []

    asyncio.run(run())


def _receiver(got: list[bytes], bad: list[str]) -> FramedConn:
    """A connection past its handshake (server side), fed by hand."""
    rx = FramedConn(b"k" * 32, 8 << 20, on_hello=lambda c, h: True,
                    on_frame=lambda c, body: got.append(bytes(body)),
                    on_bad=lambda r, d: bad.append(r))  # fmt: skip
    rx.mac = auth.FrameMac(b"k" * 32, False)
    return rx


def test_a_link_carrying_a_snapshot_does_not_encode_it_again() -> None:
    import collections

    encoded: list[object] = []
    s = SimpleNamespace(opts=SimpleNamespace(max_frame=1 << 20), max_transfer=1 << 30,
                        stats=collections.Counter(),
                        _send_fragments=lambda c, e: encoded.append(e))  # fmt: skip
    busy = SimpleNamespace(meta={"xfer": True}, send=lambda body: True)
    big = CatchupReply(Snapshot(9, b"s" * (2 << 20), ()), (), 9)
    NodeServer._send_frames(s, busy, [big], {})  # type: ignore[arg-type]
    assert encoded == [] and s.stats["transfer_busy"] == 1
    idle = SimpleNamespace(meta={}, send=lambda body: True)
    NodeServer._send_frames(s, idle, [big], {})  # type: ignore[arg-type]
    assert len(encoded) == 1


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
