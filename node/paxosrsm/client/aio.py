"""The network client: asyncio, with a thin synchronous wrapper (``Client``).

It is the I/O around the sans-I/O ``ClientCore`` (``client/core.py``), which
decides everything else: sessions, retries and their timing, leader
redirects, outcomes. Here:

* requests go by UDP to the node the core names (TCP when too big for a
  datagram, or when the core asks for a stream), sealed with the cluster key
  (or a client credential) like every other datagram; many requests to one
  node share a datagram;
* the core's timers run on the event loop; a node that met silence has its
  name looked up again (a rescheduled pod);
* a write whose fate is not known when its timeout expires raises
  ``UnknownOutcome``: it may have been applied, or may never be. A read that
  times out raises ``Unavailable`` (a read changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ..messages import ClientReply, ClientRequest
from ..net import auth, codec
from ..net.conn import FramedConn
from ..statemachine import encode_op
from ..types import MAX_PAYLOAD_BYTES, Kind, ProtocolError
from .core import ClientCore, Outcome

T = TypeVar("T")


class ClientError(Exception):
    """Base of the client's errors."""


class UnknownOutcome(ClientError):
    """The write may or may not have taken effect (no answer before the timeout)."""


class Unavailable(ClientError):
    """No answer before the timeout; the request (a read) took no effect."""


class KVError(ClientError):
    """The state machine refused the operation (bad input); nothing changed."""


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, c: AsyncClient) -> None:
        self.c = c

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.c._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable: that node is down; the retry timer moves on


def _resolve(addr: tuple[str, int]) -> tuple[str, int]:
    import socket

    infos = socket.getaddrinfo(addr[0], addr[1], socket.AF_INET, socket.SOCK_DGRAM)
    return str(infos[0][4][0]), int(infos[0][4][1])


def _try_resolve(addr: tuple[str, int]) -> tuple[str, int] | None:
    try:
        return _resolve(addr)
    except OSError:
        return None


class AsyncClient:
    def __init__(
        self,
        addrs: Sequence[tuple[str, int]],
        key: auth.KeyLike,
        *,
        timeout: float = 5.0,
        retry_interval: float = 0.3,
        max_datagram: int = 60_000,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        """``ssl``: the context for TCP connections (a request too large for
        a datagram) to nodes that run with TLS."""
        if not addrs:
            raise ValueError("a client needs at least one node address")
        self.addrs = list(addrs)
        self.key = key
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.max_datagram = max_datagram
        self.ssl = ssl
        self.conn_id = random.getrandbits(62)
        self.sealer = auth.Sealer(key, auth.ORIGIN_CLIENT, self.conn_id, time.time_ns())
        self.opener = auth.Opener(key, auth.ORIGIN_CLIENT, self.conn_id, max_senders=1024)
        self.core = ClientCore(len(self.addrs), random.Random(), retry=retry_interval)
        self.futs: dict[tuple[int, int], asyncio.Future[bytes]] = {}
        #: (node id, submit): a client inside a node's own process hands
        #: requests for that node straight to it (no datagram, no sealing);
        #: the node gives the replies back through ``take_reply``.
        self.local: tuple[int, Callable[[ClientRequest], None]] | None = None
        self.timers: dict[tuple[int, int], asyncio.TimerHandle] = {}
        self.outq: dict[int, list[bytes]] = {}
        self.flush_scheduled = False
        self.transport: asyncio.DatagramTransport | None = None
        #: None: the name did not resolve (yet); looked up again on silence.
        self.resolved: list[tuple[str, int] | None] = []
        self.tcp: dict[int, FramedConn] = {}
        self.dropped = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.refreshing: set[int] = set()

    def rekey(self, key: auth.KeyLike) -> None:
        """A new key ring (a rotation): sent under its first key from now on."""
        self.key = key
        self.sealer.rekey(key)
        self.opener.rekey(key)

    async def connect(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        # A name that does not resolve yet (a pod not scheduled yet, DNS not
        # updated yet) must not stop the client: it is looked up again when
        # a request aimed at it meets silence (_refresh).
        self.resolved = list(
            await asyncio.gather(*(loop.run_in_executor(None, _try_resolve, a) for a in self.addrs))
        )
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=("0.0.0.0", 0)
        )
        return self

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def leader(self) -> int | None:
        return self.core.leader

    def attach_local(self, node_id: int, submit: Callable[[ClientRequest], None]) -> None:
        """Requests for node ``node_id`` go to ``submit`` (the node's own
        process); it must hand this client's replies to ``take_reply``."""
        self.local = (node_id, submit)

    def take_reply(self, r: ClientReply) -> bool:
        """A reply from the local node: True if it answers one of ours."""
        if (r.client_id, r.seq) not in self.core.pending:
            return False
        self._on_reply(r)
        return True

    async def close(self) -> None:
        """Every request in flight ends now: a write that may have been sent
        with UnknownOutcome (it may still be applied), anything else with
        Unavailable."""
        for key in list(self.core.pending):
            self.core.abandon(key, "client closed with the request in flight")
        self._pump()
        for c in self.tcp.values():
            c.close()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # ------------------------------------------------------------ the KV API

    async def put(self, key: str, value: str, *, timeout: float | None = None) -> None:
        self._check(await self.request(Kind.WRITE, encode_op("put", key, value), timeout=timeout))

    async def get(
        self, key: str, *, stale: bool = False, timeout: float | None = None
    ) -> str | None:
        kind = Kind.STALE_READ if stale else Kind.READ
        v = self._check(await self.request(kind, encode_op("get", key), timeout=timeout))
        return v if isinstance(v, str) else None

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        return bool(self._check(await self.request(Kind.WRITE, encode_op("delete", key),
                                                   timeout=timeout)))  # fmt: skip

    async def cas(
        self, key: str, expected: str | None, new: str, *, timeout: float | None = None
    ) -> bool:
        res = await self.request(Kind.WRITE, encode_op("cas", key, expected, new), timeout=timeout)
        return bool(self._check(res))

    @staticmethod
    def _check(result: bytes) -> Any:
        try:
            out = json.loads(result)
        except ValueError as e:
            raise KVError(f"unreadable result {result[:80]!r}") from e
        if not isinstance(out, dict):
            raise KVError("result is not an object")
        if not out.get("ok"):
            raise KVError(str(out.get("error")))
        return out.get("value")

    # ------------------------------------------------------------ requests

    async def request(self, kind: Kind, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Send one request and wait for its result (raises on timeout: see module doc)."""
        if self.transport is None:  # nothing was sent: Unavailable (a 503 at the HTTP API)
            raise Unavailable("client is closed or not connected (use `async with` or connect())")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        loop = asyncio.get_running_loop()
        now = loop.time()
        tmo = self.timeout if timeout is None else timeout
        key = self.core.submit(kind, payload, now, now + tmo)
        fut: asyncio.Future[bytes] = loop.create_future()
        self.futs[key] = fut
        self._pump()
        try:
            return await fut
        finally:
            if key in self.core.pending:  # the caller stopped waiting
                self.core.abandon(key, "cancelled")
                self._pump()
            self.futs.pop(key, None)

    @staticmethod
    def _submit_local(submit: Callable[[ClientRequest], None], req: ClientRequest) -> None:
        with contextlib.suppress(ProtocolError):  # refused: as if lost
            submit(req)

    def _pump(self) -> None:
        """Carry out what the core decided: sends, timers, completions."""
        sends, done = self.core.take()
        if sends:
            loop = asyncio.get_running_loop()
            for snd in sends:
                if snd.refresh:
                    self._refresh(snd.target)
                    continue
                if self.local is not None and snd.target == self.local[0]:
                    # Next turn of the loop: never inside the node's own cycle.
                    loop.call_soon(self._submit_local, self.local[1], snd.req)
                elif snd.stream or len(enc := codec.encode(snd.req)) + auth.OVERHEAD + 8 > (
                    self.max_datagram
                ):
                    self._send_tcp(snd.target, codec.encode(snd.req))
                else:
                    self.outq.setdefault(snd.target, []).append(enc)
                    if not self.flush_scheduled:
                        self.flush_scheduled = True
                        loop.call_soon(self._flush)
                key = (snd.req.client_id, snd.req.seq)
                due = self.core.due(key)
                old = self.timers.pop(key, None)
                if old is not None:
                    old.cancel()
                if due is not None:
                    self.timers[key] = loop.call_at(due, self._on_timer, key)
        for c in done:
            key = (c.client_id, c.seq)
            t = self.timers.pop(key, None)
            if t is not None:
                t.cancel()
            fut = self.futs.pop(key, None)
            if fut is None or fut.done():
                continue
            if c.outcome == Outcome.OK:
                fut.set_result(c.result)
            else:
                err = UnknownOutcome if c.outcome == Outcome.UNKNOWN else Unavailable
                fut.set_exception(err(c.reason))
                fut.exception()  # retrieved: a caller that stopped waiting logs nothing

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is None:
            return
        limit = self.max_datagram - auth.OVERHEAD - 8
        for target, encs in self.outq.items():
            addr = self.resolved[target]
            if addr is None:
                self._refresh(target)  # dropped: the retry timer moves on
                continue
            batch: list[bytes] = []
            size = 0
            for e in encs:
                if size + len(e) > limit and batch:
                    self.transport.sendto(
                        self.sealer.seal(codec.pack_encoded(batch), auth.ORIGIN_NODE, target), addr
                    )
                    batch, size = [], 0
                batch.append(e)
                size += len(e)
            if batch:
                self.transport.sendto(
                    self.sealer.seal(codec.pack_encoded(batch), auth.ORIGIN_NODE, target), addr
                )
        self.outq.clear()

    def _send_tcp(self, target: int, enc: bytes) -> None:
        c = self.tcp.get(target)
        if c is None or c.closed:
            loop = asyncio.get_running_loop()
            c = FramedConn(
                self.key,
                64 << 20,
                hello=["hello", 1, auth.ORIGIN_CLIENT, self.conn_id, "client", None],
                on_frame=lambda _c, body: self._on_body(body),
                on_bad=lambda _r, _d: None,
            )
            addr = self.resolved[target]
            if addr is None:
                self._refresh(target)  # the retry timer tries again, or elsewhere
                return
            host, port = addr
            conn = c
            name = self.addrs[target][0] if self.ssl is not None else None

            async def go() -> None:
                try:
                    await loop.create_connection(
                        lambda: conn, host, port, ssl=self.ssl, server_hostname=name
                    )
                except OSError:
                    conn.closed = True

            self.tasks.add(t := loop.create_task(go()))
            t.add_done_callback(self.tasks.discard)
            self.tcp[target] = c
        c.send(codec.pack_encoded([enc]))

    def _on_timer(self, key: tuple[int, int]) -> None:
        self.timers.pop(key, None)
        loop = asyncio.get_running_loop()
        self.core.on_timer(key, loop.time())
        self._pump()
        due = self.core.due(key)
        if due is not None and key not in self.timers:
            # The loop may run a timer a hair early: the core then does
            # nothing, and the timer must be set again, or the request hangs.
            self.timers[key] = loop.call_at(due, self._on_timer, key)

    def _refresh(self, target: int) -> None:
        if target in self.refreshing:
            return
        self.refreshing.add(target)
        loop = asyncio.get_running_loop()

        async def go() -> None:
            try:
                self.resolved[target] = await loop.run_in_executor(
                    None, _resolve, self.addrs[target]
                )
            except OSError:
                pass  # keep the old address; try again on the next silence
            finally:
                self.refreshing.discard(target)

        t = loop.create_task(go())
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def _on_datagram(self, data: bytes) -> None:
        try:
            origin, _sender, body = self.opener.open(data)
        except auth.AuthError:
            self.dropped += 1
            return
        if origin != auth.ORIGIN_NODE:
            self.dropped += 1
            return
        self._on_body(body)

    def _on_body(self, body: bytes | memoryview) -> None:
        try:
            msgs = codec.decode_many(body)
        except ProtocolError:
            self.dropped += 1
            return
        for m in msgs:
            if isinstance(m, ClientReply):
                self._on_reply(m)

    def _on_reply(self, r: ClientReply) -> None:
        self.core.on_reply(r, asyncio.get_running_loop().time())
        self._pump()


# ------------------------------------------------------------------ sync wrapper


class Client:
    """Synchronous wrapper: an AsyncClient on an event loop in a background thread."""

    def __init__(self, addrs: Sequence[tuple[str, int]], key: auth.KeyLike, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ac = AsyncClient(addrs, key, **kw)
        self._run(self._ac.connect())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def put(self, key: str, value: str, **kw: Any) -> None:
        self._run(self._ac.put(key, value, **kw))

    def get(self, key: str, **kw: Any) -> str | None:
        return self._run(self._ac.get(key, **kw))

    def delete(self, key: str, **kw: Any) -> bool:
        return self._run(self._ac.delete(key, **kw))

    def cas(self, key: str, expected: str | None, new: str, **kw: Any) -> bool:
        return self._run(self._ac.cas(key, expected, new, **kw))

    def close(self) -> None:
        self._run(self._ac.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_from(path: str | None) -> auth.Keyring:
    """The key ring from a file (``path`` or $PAXOS_KEY_FILE): the cluster key,
    or a client credential (``paxosctl keys client``)."""
    p = path or os.environ.get("PAXOS_KEY_FILE")
    if not p:
        raise ClientError("no cluster key: pass --key-file or set PAXOS_KEY_FILE")
    return auth.load_key(p)
