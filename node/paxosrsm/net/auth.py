"""Authentication of every datagram and TCP frame: HMAC-SHA256 under the cluster key.

Datagrams (UDP)::

    b"PX" | version:u8 | origin:u8 | sender:u64 | epoch:u64 | counter:u64 | body | mac[32]

``mac = HMAC(key, everything before it | dst_origin:u8 | dst:u64)``: the MAC
also covers the receiver's identity (a node id, or a client's sender id),
which the datagram does not carry, so a datagram meant for node 1 fails at
node 2 (issue 12). ``origin`` says whether ``sender`` is a node id or a
client id. ``(epoch, counter)`` is unique per sender and
grows: the receiver keeps, per sender, the newest epoch and a sliding window of
counters seen (as IPsec's anti-replay window, RFC 4303 section 3.4.3), so a
replayed datagram is refused even though UDP may reorder. A node's epoch is
persisted and strictly increases across restarts (see ``next_epoch``).

TCP connections start with a handshake that binds each connection to two fresh
nonces, then every frame carries a MAC under a per-connection key over a
direction byte and an implicit frame counter. A frame replayed from another
connection, or reordered or repeated within one, fails its MAC::

    frame = length:u32 | body | mac[32]          (length counts body + mac)
    hello   (client side): body = msgpack [ "hello", 1, origin, sender, kind, ballot, nonce_c ]
                           mac  = HMAC(key, b"hello" | body)
    welcome (server side): body = msgpack [ "welcome", nonce_s ]
                           mac  = HMAC(key, b"welcome" | nonce_c | body)
    then    frame i in direction d: mac = HMAC(k_conn, d | i:u64 | body),
            k_conn = HMAC(key, b"conn" | nonce_c | nonce_s)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections import OrderedDict
from pathlib import Path

MAGIC = b"PX"
VERSION = 1
ORIGIN_NODE = 0
ORIGIN_CLIENT = 1
_HDR = struct.Struct(">2sBBQQQ")
_DST = struct.Struct(">BQ")
HDR_LEN = _HDR.size  # 28
MAC_LEN = 32
#: How far behind the newest counter a reordered datagram may still arrive.
REPLAY_WINDOW = 4096
MIN_KEY_BYTES = 16


class AuthError(ValueError):
    """A datagram or frame that failed authentication (forged, replayed, truncated)."""


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The cluster key: the file's bytes, stripped of surrounding whitespace."""
    data = Path(path).read_bytes().strip()
    if len(data) < MIN_KEY_BYTES:
        raise ValueError(f"cluster key in {path} is {len(data)} bytes; at least {MIN_KEY_BYTES}")
    return data


def next_epoch(data_dir: str | os.PathLike[str] | None) -> int:
    """A sender epoch that is higher than any this node used before.

    The wall clock in nanoseconds, but never below the last epoch + 1 (kept in
    ``data_dir/EPOCH``), so a clock that steps back cannot make peers take our
    new datagrams for replays.
    """
    now = time.time_ns()
    if data_dir is None:
        return now
    p = Path(data_dir) / "EPOCH"
    try:
        last = int(p.read_text().strip())
    except (OSError, ValueError):
        last = 0
    epoch = max(now, last + 1)
    tmp = p.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(str(epoch))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return epoch


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)


class Sealer:
    """Seals outgoing datagrams of one sender."""

    __slots__ = ("counter", "epoch", "key", "origin", "prefix", "sender")

    def __init__(self, key: bytes, origin: int, sender: int, epoch: int) -> None:
        self.key = key
        self.origin = origin
        self.sender = sender
        self.epoch = epoch
        self.counter = 0

    def seal(self, body: bytes, dst_origin: int, dst: int) -> bytes:
        """A datagram for receiver ``(dst_origin, dst)`` only."""
        self.counter += 1
        head = _HDR.pack(MAGIC, VERSION, self.origin, self.sender, self.epoch, self.counter)
        msg = head + body
        return msg + _mac(self.key, msg + _DST.pack(dst_origin, dst))


class _Window:
    __slots__ = ("bits", "epoch", "top")

    def __init__(self, epoch: int, counter: int) -> None:
        self.epoch = epoch
        self.top = counter
        self.bits = 1  # bit i set: counter top - i was seen

    def check_and_set(self, epoch: int, counter: int) -> bool:
        if epoch > self.epoch:
            self.epoch, self.top, self.bits = epoch, counter, 1
            return True
        if epoch < self.epoch:
            return False  # from an earlier run of the sender
        if counter > self.top:
            shift = counter - self.top
            if shift >= REPLAY_WINDOW:
                # A jump past the window forgets it; shifting by the jump
                # would build an integer of that many bits (2^27: 36 MB).
                self.bits = 1
            else:
                self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = counter
            return True
        off = self.top - counter
        if off >= REPLAY_WINDOW or (self.bits >> off) & 1:
            return False
        self.bits |= 1 << off
        return True


class Opener:
    """Verifies incoming datagrams: MAC, then the replay window of the sender."""

    def __init__(self, key: bytes, origin: int, me: int, max_senders: int = 100_000) -> None:
        self.key = key
        #: This receiver's identity, which every datagram's MAC must cover.
        self.me = _DST.pack(origin, me)
        self.windows: OrderedDict[tuple[int, int], _Window] = OrderedDict()
        self.max_senders = max_senders

    def open(self, data: bytes) -> tuple[int, int, bytes]:
        """Return (origin, sender, body) or raise AuthError."""
        if len(data) < HDR_LEN + MAC_LEN:
            raise AuthError(f"datagram of {len(data)} bytes is too short")
        magic, ver, origin, sender, epoch, counter = _HDR.unpack_from(data)
        if magic != MAGIC or ver != VERSION:
            raise AuthError("bad magic or version")
        if origin not in (ORIGIN_NODE, ORIGIN_CLIENT):
            raise AuthError(f"bad origin {origin}")
        msg, mac = data[:-MAC_LEN], data[-MAC_LEN:]
        if not hmac.compare_digest(_mac(self.key, msg + self.me), mac):
            raise AuthError("bad MAC (forged, damaged, meant for another receiver, or another key)")
        k = (origin, sender)
        w = self.windows.get(k)
        if w is None:
            # Only authenticated senders get a window, so the table cannot be
            # flooded by forgeries; it is bounded anyway (oldest evicted).
            self.windows[k] = _Window(epoch, counter)
            if len(self.windows) > self.max_senders:
                self.windows.popitem(last=False)
        else:
            if not w.check_and_set(epoch, counter):
                raise AuthError(f"replayed datagram from {'client' if origin else 'node'} {sender}")
            self.windows.move_to_end(k)
        return origin, sender, msg[HDR_LEN:]


# ------------------------------------------------------------------ TCP frames

FRAME_HDR = struct.Struct(">I")


def hello_mac(key: bytes, body: bytes) -> bytes:
    return _mac(key, b"hello" + body)


def welcome_mac(key: bytes, nonce_c: bytes, body: bytes) -> bytes:
    return _mac(key, b"welcome" + nonce_c + body)


def conn_key(key: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    return _mac(key, b"conn" + nonce_c + nonce_s)


class FrameMac:
    """Per-connection, per-direction frame MACs with an implicit counter."""

    __slots__ = ("d_in", "d_out", "key", "n_in", "n_out")

    def __init__(self, k_conn: bytes, is_client: bool) -> None:
        self.key = k_conn
        self.d_out = b"c" if is_client else b"s"
        self.d_in = b"s" if is_client else b"c"
        self.n_out = 0
        self.n_in = 0

    def seal(self, body: bytes) -> bytes:
        self.n_out += 1
        mac = _mac(self.key, self.d_out + self.n_out.to_bytes(8, "big") + body)
        return FRAME_HDR.pack(len(body) + MAC_LEN) + body + mac

    def verify(self, frame: bytes) -> bytes:
        if len(frame) < MAC_LEN:
            raise AuthError("frame too short")
        body, mac = frame[:-MAC_LEN], frame[-MAC_LEN:]
        n = self.n_in + 1
        if not hmac.compare_digest(_mac(self.key, self.d_in + n.to_bytes(8, "big") + body), mac):
            raise AuthError("bad frame MAC (forged, replayed or reordered)")
        self.n_in = n
        return body


def frame_raw(body: bytes, mac: bytes) -> bytes:
    return FRAME_HDR.pack(len(body) + len(mac)) + body + mac
