"""Bounds on the HTTP port's connections (issue 12, "Connections").

aiohttp keeps a connection as long as its client likes: it has no timeout
for reading a request's headers (slowloris: 200 connections sending a header
byte now and then stayed open for 100 s), and it keeps an idle connection for
an hour. Under a limit of 1,024 open files, such connections made a leader
fail at its next snapshot. ``HttpGuard`` wraps aiohttp's protocol factory
with a proxy protocol per connection that

- refuses a connection beyond ``max_conns`` open ones (the node's share of
  its file-descriptor budget, see ``conn.fd_budget``), at once;
- breaks a connection that has not delivered a request's headers within
  ``header_timeout`` seconds of its first byte (or of its opening);
- leaves idle keep-alive connections to aiohttp's ``keepalive_timeout``.

A request whose headers are in is the handler's business (a large PUT's
body is read under its own timeout). Every refusal is logged (rate-limited)
and counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


class _Conn(asyncio.Protocol):
    __slots__ = ("busy", "guard", "inner", "refused", "transport", "waiting_since")

    def __init__(self, guard: HttpGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        #: When bytes of a request began to arrive with no request under way.
        self.waiting_since: float | None = None
        self.busy = 0
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        t: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = t
        g = self.guard
        if len(g.conns) >= g.max_conns:
            self.refused = True
            g.refuse("http_conn_limit", t, f"{g.max_conns} connections open")
            t.abort()
            return
        g.conns[t] = self
        self.waiting_since = time.monotonic()  # a request must come soon
        self.inner.connection_made(t)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.transport is not None:
            self.guard.conns.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.busy == 0 and self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class HttpGuard:
    """A protocol factory around aiohttp's, plus the middleware that tells
    it when a request's headers are in and when its answer is out."""

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        max_conns: int,
        header_timeout: float,
        on_refuse: Callable[[str, str], None],
    ) -> None:
        self.factory = factory
        self.max_conns = max_conns
        self.header_timeout = header_timeout
        self.on_refuse = on_refuse
        self.conns: dict[asyncio.Transport, _Conn] = {}
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> asyncio.Protocol:
        return _Conn(self, self.factory())

    def refuse(self, reason: str, transport: asyncio.BaseTransport, detail: str) -> None:
        pn = transport.get_extra_info("peername")
        who = f"{pn[0]}:{pn[1]}" if pn else "?"
        self.on_refuse(reason, f"HTTP {who}: {detail}")

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        t: Any = request.transport
        c = self.conns.get(t) if t is not None else None
        if c is not None:
            c.busy += 1
            c.waiting_since = None
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        finally:
            if c is not None:
                c.busy -= 1

    def sweep(self, now: float | None = None) -> int:
        """Break the connections that sat on an incomplete request too long."""
        now = time.monotonic() if now is None else now
        n = 0
        for t, c in list(self.conns.items()):
            since = c.waiting_since
            if c.busy == 0 and since is not None and now - since > self.header_timeout:
                self.refuse(
                    "http_header_timeout", t, f"no complete request in {self.header_timeout:.0f} s"
                )
                self.conns.pop(t, None)
                t.abort()
                n += 1
        return n

    async def run(self, every: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every)
            self.sweep()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Its CancelledError is its result; ours (a cancelled stop) still
            # propagates out of the gather.
            await asyncio.gather(task, return_exceptions=True)


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with the guard's factory in front of the runner's."""

    def __init__(self, runner: web.AppRunner, guard: HttpGuard, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, reuse_address=True
        )
