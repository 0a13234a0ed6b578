"""Bounds of the runtime's TCP connections (issue 11's CI failure, issue 12).

- a batch of messages to one peer goes out in frames under the frame limit,
  never as one frame the receiver refuses;
- a connection whose peer stops reading is broken once it holds too many
  unsent bytes, instead of growing memory with what has gone stale.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from paxosrsm.messages import CatchupReply, DecidedEntry
from paxosrsm.net import codec
from paxosrsm.net.conn import FramedConn
from paxosrsm.net.runtime import NodeServer
from paxosrsm.types import Command


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
    fake: Any = types.SimpleNamespace(
        opts=types.SimpleNamespace(max_frame=256 << 10), _bad=lambda r, d: bad.append((r, d))
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


def test_a_peer_that_stops_reading_breaks_the_connection() -> None:
    async def go() -> tuple[list[str], bool, int]:
        key = b"k" * 32
        bad: list[str] = []
        lost: list[FramedConn] = []
        server_side: list[FramedConn] = []

        def make_server() -> FramedConn:
            c = FramedConn(
                key, 1 << 20, on_hello=lambda c, h: True, on_frame=lambda c, b: None,
                on_bad=lambda r, d: None,
            )  # fmt: skip
            server_side.append(c)
            return c

        srv = await asyncio.get_running_loop().create_server(make_server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = FramedConn(
            key, 1 << 20, hello=["hello"], on_frame=lambda c, b: None,
            on_lost=lost.append, on_bad=lambda r, d: bad.append(r), max_unsent=1 << 20,
        )  # fmt: skip
        await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", port)
        await asyncio.wait_for(client.ready, 5)
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
