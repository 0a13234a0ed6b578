"""A lean, pipelined load generator for benchmarks (``paxosctl bench``).

It speaks the real wire protocol - HMAC-sealed datagrams, msgpack
``ClientRequest`` arrays, one client session per request in flight, exactly-once
retries with the same (client_id, seq) - but skips what a general-purpose
client needs and a load generator does not: no Future per request, no
per-request timer, and payloads built once per session. PySyncObj's benchmarks
likewise call the replicated method in-process; this keeps the load generator
from eating the CPU the nodes need on a 2-core machine. Replies are
authenticated (MAC and replay window) like any other datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]

from .messages import Status
from .net import auth, codec
from .statemachine import encode_op
from .types import Kind

_RESEND_AFTER = 1.0


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, g: LoadGen) -> None:
        self.g = g

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.g.on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass


class LoadGen:
    def __init__(
        self, addrs: list[tuple[str, int]], key: auth.KeyLike, value_size: int = 64
    ) -> None:
        self.addrs = addrs
        self.key = key
        self.value = "x" * value_size
        me = random.getrandbits(62)
        self.sealer = auth.Sealer(key, auth.ORIGIN_CLIENT, me, time.time_ns())
        self.opener = auth.Opener(key, auth.ORIGIN_CLIENT, me, max_senders=64)
        self.target = 0
        self.sessions: dict[int, list[Any]] = {}  # cid -> [seq, payload, sent_at, active]
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.transport: asyncio.DatagramTransport | None = None
        self.done = 0
        self.lat: list[float] = []
        self.record_latency = True
        self.running = False
        self.bad = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=("0.0.0.0", 0)
        )
        sock = self.transport.get_extra_info("socket")
        import socket

        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)

    def close(self) -> None:
        self.running = False
        if self.transport is not None:
            self.transport.close()

    def set_outstanding(self, k: int) -> None:
        """Keep exactly k requests in flight (new sessions start at once)."""
        active = [c for c, s in self.sessions.items() if s[3]]
        for c in active[k:]:
            self.sessions[c][3] = False  # stops after its current request
        need = k - min(k, len(active))
        idle = [c for c, s in self.sessions.items() if not s[3] and s[2] is None]
        for c in idle[:need]:
            self.sessions[c][3] = True
            self._issue(c)
            need -= 1
        for _ in range(need):
            cid = random.getrandbits(63)
            payload = encode_op("put", f"b{cid % 1000}", self.value)
            self.sessions[cid] = [0, payload, None, True]
            self._issue(cid)

    def _issue(self, cid: int) -> None:
        s = self.sessions[cid]
        s[0] += 1
        s[2] = time.perf_counter()
        self._send(cid, s)

    def _send(self, cid: int, s: list[Any]) -> None:
        self.out.append(
            msgpack.packb([codec.T_CLIENT_REQ, cid, s[0], int(Kind.WRITE), s[1]], use_bin_type=True)
        )
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        assert self.transport is not None
        addr = self.addrs[self.target]
        batch: list[bytes] = []
        size = 0
        for e in self.out:
            if size + len(e) > 50_000 and batch:
                self.transport.sendto(
                    self.sealer.seal(codec.pack_encoded(batch), auth.ORIGIN_NODE, self.target), addr
                )
                batch, size = [], 0
            batch.append(e)
            size += len(e)
        if batch:
            self.transport.sendto(
                self.sealer.seal(codec.pack_encoded(batch), auth.ORIGIN_NODE, self.target), addr
            )
        self.out = []

    def on_datagram(self, data: bytes) -> None:
        try:
            origin, _sender, body = self.opener.open(data)
            replies = msgpack.unpackb(body, raw=False)
        except (auth.AuthError, ValueError, msgpack.ExtraData, msgpack.FormatError):
            self.bad += 1
            return
        if origin != auth.ORIGIN_NODE or type(replies) is not list:
            self.bad += 1
            return
        now = time.perf_counter()
        for r in replies:
            if type(r) is not list or len(r) != 6 or r[0] != codec.T_CLIENT_REP:
                self.bad += 1
                continue
            _t, cid, seq, status, _result, hint = r
            s = self.sessions.get(cid)
            if s is None or s[0] != seq or s[2] is None:
                continue  # a late duplicate
            if status == Status.OK:
                self.done += 1
                if self.record_latency and len(self.lat) < 500_000:
                    self.lat.append(now - s[2])
                s[2] = None
                if s[3]:
                    self._issue(cid)
            elif status == Status.NOT_LEADER:
                if type(hint) is int and 0 <= hint < len(self.addrs):
                    self.target = hint
                else:
                    self.target = (self.target + 1) % len(self.addrs)
                self._send(cid, s)
            # BUSY and others: the resend timer retries the same seq

    async def resender(self) -> None:
        while self.running:
            await asyncio.sleep(_RESEND_AFTER / 2)
            now = time.perf_counter()
            late = [(c, s) for c, s in self.sessions.items()
                    if s[2] is not None and now - s[2] > _RESEND_AFTER]  # fmt: skip
            if late:
                self.target = (self.target + 1) % len(self.addrs)  # maybe the leader died
            for c, s in late:
                self._send(c, s)

    async def run(self, outstanding: int, seconds: float, warmup: float = 1.0) -> dict[str, Any]:
        """Throughput and latency with ``outstanding`` writes in flight."""
        self.running = True
        rs = asyncio.create_task(self.resender())
        try:
            self.set_outstanding(outstanding)
            await asyncio.sleep(warmup)
            self.lat = []
            d0, t0 = self.done, time.perf_counter()
            await asyncio.sleep(seconds)
            n, dt = self.done - d0, time.perf_counter() - t0
            lat = sorted(self.lat)
            return {
                "outstanding": outstanding,
                "ops_per_s": n / dt,
                "p50_us": lat[len(lat) // 2] * 1e6 if lat else None,
                "p99_us": lat[int(len(lat) * 0.99)] * 1e6 if lat else None,
                "bad_datagrams": self.bad,
            }
        finally:
            self.set_outstanding(0)
            self.running = False
            rs.cancel()
