"""Bounds of the runtime's TCP connections (issue 11's CI failure, issue 12).

- a batch of messages to one peer goes out in frames under the frame limit,
  never as one frame the receiver refuses;
- a connection whose peer stops reading is broken once it holds too many
  unsent bytes, instead of growing memory with what has gone stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from typing import Any

from paxosrsm.messages import CatchupReply, DecidedEntry
from paxosrsm.net import codec
from paxosrsm.net.conn import FramedConn
from paxosrsm.net.runtime import NodeServer
from paxosrsm.types import Command

KEY = b"k" * 32


async def _pair(
    client: FramedConn, server_bad: list[str] | None = None
) -> tuple[asyncio.AbstractServer, list[FramedConn]]:
    """A loopback server of FramedConns, and ``client`` connected and past
    its handshake."""
    server_side: list[FramedConn] = []

    def make_server() -> FramedConn:
        c = FramedConn(
            KEY, 1 << 20, on_hello=lambda c, h: True, on_frame=lambda c, b: None,
            on_bad=lambda r, d: None if server_bad is None else server_bad.append(r),
        )  # fmt: skip
        server_side.append(c)
        return c

    srv = await asyncio.get_running_loop().create_server(make_server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", port)
    await asyncio.wait_for(client.ready, 5)
    return srv, server_side


def _reply(slot: int, size: int) -> CatchupReply:
    return CatchupReply(None, (DecidedEntry(slot, (Command(1, slot + 1, b"x" * size),)),), slot)


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, body: bytes) -> bool:
        self.frames.append(body)
        return True


def test_a_batch_is_split_into_frames_under_the_limit() -> None:
    bad: list[tuple[str, str]] = []
    sent_in_fragments: list[int] = []
    fake: Any = types.SimpleNamespace(
        opts=types.SimpleNamespace(max_frame=256 << 10),
        _bad=lambda r, d: bad.append((r, d)),
        max_transfer=0,  # nothing in fragments: over a frame is over the limit
        _send_fragments=lambda c, e: sent_in_fragments.append(sum(map(len, e))),
    )
    msgs: list[Any] = [_reply(s, 30_000) for s in range(40)]  # 1.2 MB in all
    msgs.append(_reply(99, 600_000))  # one message over the limit
    sink = _Sink()
    NodeServer._send_frames(fake, sink, msgs, {})  # type: ignore[arg-type]
    assert len(sink.frames) >= 4
    assert all(len(f) <= 256 << 10 for f in sink.frames), [len(f) for f in sink.frames]
    got = [m for f in sink.frames for m in codec.decode_many(f)]
    assert [m.commit for m in got] == list(range(40))  # all of them, in order
    assert [r for r, _ in bad] == ["oversized_outgoing"]
    assert sent_in_fragments == []
    # A catch-up reply (a snapshot) within the transfer bound goes in
    # fragments instead (tests/test_snapshot_transfer.py).
    bad.clear()
    fake.max_transfer = 1 << 30
    NodeServer._send_frames(fake, _Sink(), msgs, {})  # type: ignore[arg-type]
    assert bad == [] and sent_in_fragments == [len(codec.encode(msgs[-1]))]


def test_a_peer_that_stops_reading_breaks_the_connection() -> None:
    async def go() -> tuple[list[str], bool, int]:
        bad: list[str] = []
        lost: list[FramedConn] = []
        client = FramedConn(
            KEY, 1 << 20, hello=["hello"], on_frame=lambda c, b: None,
            on_lost=lost.append, on_bad=lambda r, d: bad.append(r), max_unsent=1 << 20,
        )  # fmt: skip
        srv, server_side = await _pair(client)
        assert server_side[0].transport is not None
        server_side[0].transport.pause_reading()  # the peer stops reading
        sent = 0
        for _ in range(2000):
            if not client.send(b"y" * 65536):
                break
            sent += 1
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        srv.close()
        for c in server_side:
            if c.transport is not None:
                c.transport.abort()
        return bad, bool(lost), sent

    bad, lost, sent = asyncio.run(go())
    assert bad == ["stalled"], bad
    assert lost  # the owner hears of it (a promise session: back to preparing)
    assert sent < 2000  # refused long before everything was buffered


def test_the_peer_port_caps_connections_and_handshakes() -> None:
    """Issue 12, connections: beyond its share of the descriptor budget, or
    with 64 strangers still in their handshake, the peer port refuses a new
    connection at once."""

    async def go() -> list[str | None]:
        class Fake:
            def __init__(self, authed: bool) -> None:
                self.mac = object() if authed else None

        def fake(n: int, authed: bool) -> set[Any]:
            return {Fake(authed) for _ in range(n)}

        base: dict[str, Any] = dict(
            key=KEY, opts=types.SimpleNamespace(max_frame=1 << 20),
            _on_hello=None, _on_frame=None, _on_conn_lost=None, _bad=None,
        )  # fmt: skip
        out = []
        for inbound, cap in ((fake(3, True), 4), (fake(4, True), 4), (fake(64, False), 512)):
            srv: Any = types.SimpleNamespace(inbound=inbound, max_inbound=cap, **base)
            c = NodeServer._accept_conn(srv)
            out.append(c.refuse)
        return out

    assert asyncio.run(go()) == [None, "conn_limit", "handshake_limit"]


def test_a_hello_without_a_frame_after_it_is_dropped(monkeypatch: Any) -> None:
    """Issue 12, replay: a hello can be replayed from a capture and answered;
    the connection must then carry an authenticated frame within the
    handshake timeout or be dropped (50 replayed hellos kept 50 connections
    open for good)."""
    from paxosrsm.net import conn as connmod

    monkeypatch.setattr(connmod, "HANDSHAKE_TIMEOUT", 0.3)

    async def go() -> tuple[list[str], bool]:
        bad: list[str] = []
        client = FramedConn(
            KEY, 1 << 20, hello=["hello"], on_frame=lambda c, b: None, on_bad=lambda r, d: None
        )
        srv, server_side = await _pair(client, bad)  # handshake done; no frame follows
        await asyncio.sleep(0.8)
        closed = server_side[0].closed
        srv.close()
        client.close()
        return bad, closed

    bad, closed = asyncio.run(go())
    assert bad == ["no_frame_after_hello"] and closed, (bad, closed)


def test_the_http_port_drops_slow_headers_and_caps_connections() -> None:
    """Issue 12, connections: a client that sends a request's headers slowly
    (slowloris) is cut off after the header timeout, connections beyond the
    cap are refused at once, and normal requests go on being served."""
    from aiohttp import web

    from paxosrsm.net.httpguard import GuardedSite, HttpGuard

    async def go() -> tuple[list[str], list[bool], bytes, int]:
        refused: list[str] = []

        async def hello(_req: web.Request) -> web.Response:
            return web.Response(text="ok")

        runner_box: list[web.AppRunner] = []
        guard = HttpGuard(
            lambda: runner_box[0].server(),  # type: ignore[misc]
            max_conns=6,
            header_timeout=0.5,
            on_refuse=lambda r, d: refused.append(r),
        )
        app = web.Application(middlewares=[guard.middleware])
        app.router.add_get("/x", hello)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=5)
        runner_box.append(runner)
        await runner.setup()
        site = GuardedSite(runner, guard, "127.0.0.1", 0)
        await site.start()
        guard.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        slow = []
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /x HTTP/1.1\r\nHost: a\r\n")
            slow.append((r, w))
        for _ in range(6):  # a header byte every 0.2 s: never complete
            await asyncio.sleep(0.2)
            for _r, w in slow:
                with contextlib.suppress(ConnectionError):  # the server cut it off
                    w.write(b"X")

        async def gone(r: asyncio.StreamReader) -> bool:
            try:
                return await asyncio.wait_for(r.read(), 2) == b""
            except ConnectionError:
                return True  # reset by the server

        dropped = [await gone(r) for r, _w in slow]
        # Now 10 idle connections at once: the cap (6) refuses the rest.
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
        await asyncio.sleep(0.1)
        open_now = len(guard.conns)
        # A normal request on a fresh connection, once the idle ones time out.
        for _r, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        body = await asyncio.wait_for(r.read(), 2)
        w.close()
        await guard.stop()
        await runner.cleanup()
        return refused, dropped, body, open_now

    refused, dropped, body, open_now = asyncio.run(go())
    assert dropped == [True, True, True]
    assert refused.count("http_header_timeout") == 3
    assert refused.count("http_conn_limit") == 4 and open_now == 6, (refused, open_now)
    assert body.endswith(b"ok")
