"""Framed, authenticated TCP connections (both ends), as asyncio Protocols.

A connection starts with the hello/welcome handshake of ``auth``; then each
frame is one msgpack batch of messages. Anything wrong - a bad MAC, an
oversized or malformed frame, a handshake that does not come - closes the
connection and is reported to ``on_bad``; it never raises into the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from . import auth

HANDSHAKE_TIMEOUT = 5.0
MAX_HELLO = 4096
#: A frame at least this large is received in place and handed on as a
#: view (no copies of a catch-up snapshot's fragments).
BIG_FRAME = 1 << 20
#: Bytes a connection may hold unsent (in the transport, or queued behind the
#: handshake) before a new frame is refused and the connection broken: a peer
#: that stopped reading (partitioned, paused) must not grow our memory, and
#: what piled up for it is stale by the time it reads again (a leader's
#: retransmitted Accepts). A broken promise session is "back to preparing";
#: the leader re-invites the acceptor when it is reachable again.
MAX_UNSENT = 32 << 20


def fd_budget(reserve: int = 256) -> int:
    """File descriptors this process may give to connections: its soft
    RLIMIT_NOFILE less ``reserve`` for storage, snapshots, peer links and
    the UDP socket (issue 12: idle connections exhausted the descriptors and
    the leader failed at its next snapshot)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(32, soft - reserve)


class FramedConn(asyncio.Protocol):
    """One end of a connection. ``hello`` is set on the connecting side."""

    def __init__(
        self,
        key: auth.KeyLike,
        max_frame: int,
        *,
        hello: list[Any] | None = None,
        on_hello: Callable[[FramedConn, list[Any]], bool] | None = None,
        on_frame: Callable[[FramedConn, bytes | memoryview], None],
        on_lost: Callable[[FramedConn], None] | None = None,
        on_bad: Callable[[str, str], None],
        max_unsent: int = MAX_UNSENT,
        refuse: str | None = None,
        peer_id: int = -1,
    ) -> None:
        self.ring = auth.as_keyring(key)
        #: The node this (connecting) side talks to: its pair key is used.
        self.peer_id = peer_id
        #: The class key of this connection (peer or client): on the client
        #: side the primary one of the hello's class, on the server side the
        #: one that made the hello.
        self.key = b""
        self.max_unsent = max_unsent
        #: Set by the owner's accept path: break the connection at once,
        #: for this reason (a connection limit).
        self.refuse = refuse
        self.pending_bytes = 0
        self.max_frame = max_frame
        self.hello = hello
        self.on_hello = on_hello
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.on_bad = on_bad
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        #: A large frame being received in place (see data_received), and
        #: its size. It grows as bytes arrive (never allocated ahead from a
        #: header's claim: memory stays what the peer actually sent).
        self.big: bytearray | None = None
        self.big_need = 0
        self.mac: auth.FrameMac | None = None
        self.nonce_c = b""
        self.pending: list[bytes] = []
        self.closed = False
        self.ready = asyncio.get_running_loop().create_future()
        self.peer: str = "?"
        #: Set by the owner after the handshake: what this connection is for.
        self.meta: dict[str, Any] = {}
        self.close_after_handshake = False
        self.aborted = False
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        t: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = t
        if self.refuse is not None:
            pn = t.get_extra_info("peername")
            self.peer = f"{pn[0]}:{pn[1]}" if pn else "?"
            self.bad(self.refuse, "connection refused")
            return
        if self.closed and not self.close_after_handshake:
            t.close()  # closed by its owner while still connecting
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # no Nagle: small frames must not wait
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pn = t.get_extra_info("peername")
        self.peer = f"{pn[0]}:{pn[1]}" if pn else "?"
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        if self.hello is not None:
            self.nonce_c = os.urandom(16)
            body = msgpack.packb([*self.hello, self.nonce_c], use_bin_type=True)
            origin = self.hello[2] if len(self.hello) > 2 else auth.ORIGIN_CLIENT
            cls = auth.class_of(origin, auth.ORIGIN_NODE)  # servers are nodes
            self.key = self.ring.key(self.ring.primary, cls, self.peer_id) or b""
            if not self.key:
                self.bad("bad_handshake", f"no {cls} key to connect with")
                return
            t.write(auth.frame_raw(body, auth.hello_mac(self.key, body)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.aborted = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection to {self.peer} closed"))
            self.ready.exception()  # retrieved: nobody may be waiting
        if self.on_lost is not None:
            self.on_lost(self)

    def _handshake_timeout(self) -> None:
        if self.mac is None:
            self.bad("handshake_timeout", "no handshake within 5 s")
        elif self.hello is None and self.mac.n_in == 0:
            # A hello can be replayed (it carries no fresh proof), and the
            # welcome alone proves nothing: the other side must follow with
            # an authenticated frame, as every real one does at once.
            self.bad("no_frame_after_hello", "no authenticated frame within 5 s of the hello")

    def bad(self, reason: str, detail: str) -> None:
        self.on_bad(reason, f"{self.peer}: {detail}")
        self.closed = self.aborted = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Break the connection. Frames already sent are still delivered (the
        transport flushes its buffer; frames queued behind the handshake go out
        when it completes): a Promise made before a higher prepare arrived is
        still a valid promise, and losing it in transit can starve a proposer."""
        if self.closed:
            return
        self.closed = True
        if self.mac is None and self.pending and self.hello is not None:
            self.close_after_handshake = True  # deliver what was sent, then break
            return
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ sending

    def send(self, body: bytes) -> bool:
        """Queue one frame; before the handshake completes it waits in memory."""
        if self.closed:
            return False
        if self.mac is None or self.transport is None:  # still connecting
            if len(self.pending) >= 10_000 or self.pending_bytes > self.max_unsent:
                self.bad("stalled", f"{self.pending_bytes} bytes queued behind the handshake")
                return False
            self.pending.append(body)
            self.pending_bytes += len(body)
            return True
        if self._stalled(self.transport):
            return False
        self.transport.write(self.mac.seal(body))
        return True

    def _stalled(self, transport: asyncio.Transport) -> bool:
        """The peer stopped reading: the link is broken (and True)."""
        unsent = transport.get_write_buffer_size()
        if unsent > self.max_unsent:
            self.bad("stalled", f"{unsent} bytes unsent: the peer does not read")
            return True
        return False

    def send_parts(self, parts: list[bytes | memoryview]) -> bool:
        """Send one frame whose body is the concatenation of ``parts``
        (a fragment of a large transfer), without copying it into one
        buffer first. Only on an established connection."""
        if self.closed or self.mac is None or self.transport is None:
            return False
        if self._stalled(self.transport):
            return False
        self.transport.writelines(self.mac.seal_parts(parts))
        return True

    # ------------------------------------------------------------ receiving

    def data_received(self, data: bytes) -> None:
        big = self.big
        if big is not None:  # a large frame, filled in place
            k = min(len(data), self.big_need - len(big))
            with memoryview(data) as view:
                big += view[:k]
                rest = bytes(view[k:]) if k < len(data) else b""
            if len(big) < self.big_need:
                return
            self.big = None
            self._frame(big)
            if not rest or self.aborted:
                return
            data = rest
        buf = self.buf
        buf += data
        while not self.aborted:
            if len(buf) < 4:
                return
            (n,) = auth.FRAME_HDR.unpack_from(buf)
            limit = self.max_frame + auth.MAC_LEN if self.mac is not None else MAX_HELLO
            if n > limit or n < auth.MAC_LEN:
                self.bad("oversized_frame", f"frame of {n} bytes (limit {limit})")
                return
            if len(buf) < 4 + n:
                if n >= BIG_FRAME and self.mac is not None:
                    # Gather the rest in one buffer of its own, appended to
                    # as bytes arrive (no re-scan of a growing buffer, one
                    # copy per byte), and hand the body on as a view.
                    self.big = buf[4:]
                    self.big_need = n
                    del buf[:]
                return
            frame = bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            self._frame(frame)

    def _frame(self, frame: bytes | bytearray) -> None:
        if self.mac is None:
            assert type(frame) is bytes
            self._handshake(frame)
            return
        try:
            body: bytes | memoryview
            if len(frame) >= BIG_FRAME:
                body = self.mac.verify_view(frame)
            else:
                assert type(frame) is bytes
                body = self.mac.verify(frame)
        except auth.AuthError as e:
            self.bad("bad_mac", str(e))
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed:
            self.on_frame(self, body)

    def _handshake(self, frame: bytes) -> None:
        body, mac = frame[: -auth.MAC_LEN], frame[-auth.MAC_LEN :]
        try:
            if self.hello is None:  # server side: expect hello
                # Read (bounded) before it is authentic only to find which
                # pair key to try: the claimed sender.
                h = msgpack.unpackb(body, raw=False, max_bin_len=64, max_str_len=64)
                if type(h) is not list or not h or h[0] != "hello" or type(h[-1]) is not bytes:
                    raise auth.AuthError("malformed hello")
                sender = h[3] if len(h) > 3 and type(h[3]) is int else -1
                found = auth.hello_key(self.ring, body, mac, sender)
                if found is None:
                    raise auth.AuthError("bad hello MAC")
                self.key, cls = found
                if len(h) > 2 and auth.class_of(h[2], auth.ORIGIN_NODE) != cls:
                    # A client key cannot open a node's connection (issue 12).
                    raise auth.AuthError(f"a hello from origin {h[2]!r} under a {cls} key")
                if len(h[-1]) != 16:
                    raise auth.AuthError("bad hello nonce")
                self.nonce_c = h[-1]
                if self.on_hello is not None and not self.on_hello(self, h[:-1]):
                    raise auth.AuthError(f"hello refused: {h[:-1]!r}")
                nonce_s = os.urandom(16)
                wb = msgpack.packb(["welcome", nonce_s], use_bin_type=True)
                assert self.transport is not None
                self.transport.write(
                    auth.frame_raw(wb, auth.welcome_mac(self.key, self.nonce_c, wb))
                )
                self.mac = auth.FrameMac(auth.conn_key(self.key, self.nonce_c, nonce_s), False)
            else:  # client side: expect welcome
                if not hmac.compare_digest(auth.welcome_mac(self.key, self.nonce_c, body), mac):
                    raise auth.AuthError("bad welcome MAC")
                w = msgpack.unpackb(body, raw=False, max_bin_len=64, max_str_len=64)
                if type(w) is not list or len(w) != 2 or w[0] != "welcome":
                    raise auth.AuthError("malformed welcome")
                if type(w[1]) is not bytes or len(w[1]) != 16:
                    raise auth.AuthError("bad welcome nonce")
                self.mac = auth.FrameMac(auth.conn_key(self.key, self.nonce_c, w[1]), True)
        except (auth.AuthError, ValueError, TypeError, msgpack.ExtraData) as e:
            self.bad("bad_handshake", str(e))
            return
        if self._timer is not None and self.hello is not None:
            self._timer.cancel()  # (the server side waits for a first frame too)
        if not self.ready.done():
            self.ready.set_result(None)
        pending, self.pending = self.pending, []
        self.pending_bytes = 0
        assert self.transport is not None
        for b in pending:
            self.transport.write(self.mac.seal(b))
        if self.close_after_handshake:
            self.transport.close()
