"""Authentication and encryption of every datagram; authentication of every TCP frame.

Keys (issue 12: rotation, and clients that cannot speak the peer protocol).
A key file holds one or more *master* keys, each with an id (a lone token is
id 0), or client credentials only::

    3 5f1c...            master key 3 (the first line is the one used to send)
    2 9ab0...            master key 2 (still accepted: a rotation in progress)
    client 3 77e2...     a client credential: key 3's client key (``paxosctl keys client``)

From each master two keys are derived: the *peer* key, which protects
traffic between nodes, and the *client* key, which protects traffic between
a client and a node. Nodes hold masters; a client given a client credential
holds the client key only, so it cannot seal or open what nodes send each
other, nor pose as a node (a datagram or hello from a node must be under a
peer key). Every key id in the file is accepted; the first is used to send:
rotate by adding the new key second everywhere, then moving it first, then
removing the old one. A node reads its key file again when it changes.

Datagrams (UDP), AES-GCM (``cryptography``) under a key derived per sender
run from the class key (peer or client) of ``key_id``::

    b"PX" | 2:u8 | origin:u8 | key_id:u8 | sender:u64 | epoch:u64 | counter:u64 | sent_ms:u64
          | ciphertext(body) | tag[16]

The header is authenticated, the body encrypted (values no longer travel in
clear text); the associated data also covers the receiver's identity
(``dst_origin | dst``, not sent), so a datagram meant for node 1 fails at
node 2. The nonce is ``counter`` under a key unique to ``(origin, sender,
epoch)``, so it never repeats. ``(epoch, counter)`` grows: the receiver keeps,
per sender, the newest epoch and a sliding window of counters seen (as
IPsec's anti-replay window, RFC 4303 section 3.4.3). A node's epoch is
persisted and strictly increases across restarts (see ``next_epoch``). A
node refuses datagrams sent (``sent_ms``, the sender's clock) before it
started (``START_SLACK_MS``): those captured from its earlier run cannot be
replayed to it, though its windows are new.

TCP connections start with a handshake that binds each connection to two fresh
nonces, then every frame carries a MAC under a per-connection key over a
direction byte and an implicit frame counter. A frame replayed from another
connection, or reordered or repeated within one, fails its MAC. ``K`` is the
class key (peer between nodes, client otherwise); the server finds which of
its keys made the hello::

    frame = length:u32 | body | mac[32]          (length counts body + mac)
    hello   (client side): body = msgpack [ "hello", 1, origin, sender, kind, ballot, nonce_c ]
                           mac  = HMAC(K, b"hello" | body)
    welcome (server side): body = msgpack [ "welcome", nonce_s ]
                           mac  = HMAC(K, b"welcome" | nonce_c | body)
    then    frame i in direction d: mac = HMAC(k_conn, d | i:u64 | body),
            k_conn = HMAC(K, b"conn" | nonce_c | nonce_s)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections import OrderedDict
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PX"
VERSION = 2
ORIGIN_NODE = 0
ORIGIN_CLIENT = 1
PEER = "peer"
CLIENT = "client"
_HDR = struct.Struct(">2sBBBQQQQ")
_DST = struct.Struct(">BQ")
_RUN = struct.Struct(">BQQ")
HDR_LEN = _HDR.size  # 37
TAG_LEN = 16
#: What a datagram adds to its body.
OVERHEAD = HDR_LEN + TAG_LEN
MAC_LEN = 32  # TCP frames
#: How far behind the newest counter a reordered datagram may still arrive.
REPLAY_WINDOW = 4096
#: A node refuses datagrams sent (by the sender's clock) before it started,
#: less this. A sender whose clock is behind by more is refused for that
#: long after the node starts, as if partitioned, then heard again.
START_SLACK_MS = 0
MIN_KEY_BYTES = 16
MAX_KEYS = 16
#: Pair lines in a node's key file (members x master keys).
MAX_PAIRS = 4096


class AuthError(ValueError):
    """A datagram or frame that failed authentication (forged, replayed, truncated)."""


class ReplayError(AuthError):
    """Authentic, but seen before (or from an earlier run of the sender)."""


class StaleError(AuthError):
    """Authentic, but sent before this node started: captured from its earlier run."""


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)


def class_of(origin: int, other_origin: int) -> str:
    """Which class key protects traffic between ``origin`` and ``other_origin``."""
    return PEER if origin == ORIGIN_NODE and other_origin == ORIGIN_NODE else CLIENT


class Keyring:
    """Master keys (nodes) or client keys (clients) by id; ``primary`` sends.

    With ``pair`` lines (``paxosrsm.net.identity``) the ring is a node's own:
    peer traffic with node ``j`` under key ``k`` uses the key derived from
    master ``k``'s peer key and the pair secret of ``(self, j)``, and there is
    no peer key for a node without a pair line."""

    __slots__ = ("client", "masters", "pairs", "peer", "primary")

    def __init__(
        self,
        masters: dict[int, bytes],
        clients: dict[int, bytes],
        primary: int,
        pairs: dict[int, dict[int, bytes]] | None = None,
    ) -> None:
        self.masters = dict(masters)
        self.peer = {k: _mac(m, b"paxosrsm/v2/peer") for k, m in masters.items()}
        self.client = {k: _mac(m, b"paxosrsm/v2/client") for k, m in masters.items()}
        self.client.update(clients)
        self.primary = primary
        if primary not in self.client:
            raise ValueError(f"primary key {primary} is not in the key ring")
        #: kid -> peer node -> the key of that pair (identity mode), or empty.
        self.pairs: dict[int, dict[int, bytes]] = {}
        for kid, row in (pairs or {}).items():
            if kid not in self.peer:
                raise ValueError(f"pair keys for key {kid}, which is not a master key here")
            self.pairs[kid] = {j: _mac(self.peer[kid], b"pair" + s) for j, s in row.items()}

    @property
    def has_peer_keys(self) -> bool:
        return bool(self.peer)

    @property
    def identity(self) -> bool:
        """Whether this ring holds its own pair keys (a node's identity)."""
        return bool(self.pairs)

    def key(self, kid: int, cls: str, other: int = -1) -> bytes | None:
        """The key of class ``cls`` and id ``kid`` for traffic with ``other``
        (a node id; only peer keys depend on it, and only in identity mode)."""
        if cls != PEER:
            return self.client.get(kid)
        if self.pairs:
            return self.pairs.get(kid, {}).get(other)
        return self.peer.get(kid)

    def keys(self, cls: str, other: int = -1) -> list[tuple[int, bytes]]:
        """Every key of a class for traffic with ``other``, the primary first."""
        if cls != PEER:
            d = self.client
        elif self.pairs:
            d = {k: row[other] for k, row in self.pairs.items() if other in row}
        else:
            d = self.peer
        return sorted(d.items(), key=lambda kv: kv[0] != self.primary)

    def client_lines(self) -> str:
        """The client credentials of this ring (for ``paxosctl keys client``)."""
        return "".join(f"client {k} {v.hex()}\n" for k, v in self.keys(CLIENT))

    @classmethod
    def parse(cls, text: str, source: str = "key file") -> Keyring:
        lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if len(lines) == 1 and len(lines[0]) == 1:
            lines = [["0", lines[0][0]]]  # a lone token: master key 0
        masters: dict[int, bytes] = {}
        clients: dict[int, bytes] = {}
        pairs: dict[int, dict[int, bytes]] = {}
        n_pairs = 0
        order: list[int] = []
        for n, parts in enumerate(lines, start=1):
            if parts[0] == "pair":
                if (
                    len(parts) != 4
                    or not parts[1].isdigit()
                    or not parts[2].isdigit()
                    or not 0 <= int(parts[1]) <= 255
                ):
                    raise ValueError(f"{source}: line {n}: want 'pair <key id> <node> <hex>'")
                try:
                    secret = bytes.fromhex(parts[3])
                except ValueError:
                    raise ValueError(f"{source}: line {n}: a pair key is hex") from None
                if len(secret) < MIN_KEY_BYTES:
                    raise ValueError(f"{source}: line {n}: a pair key of {len(secret)} bytes")
                row = pairs.setdefault(int(parts[1]), {})
                if int(parts[2]) in row:
                    raise ValueError(f"{source}: line {n}: pair {parts[1]} {parts[2]} twice")
                row[int(parts[2])] = secret
                n_pairs += 1
                if n_pairs > MAX_PAIRS:
                    raise ValueError(f"{source}: more than {MAX_PAIRS} pair keys")
                continue
            is_client = parts[0] == "client"
            if is_client:
                parts = parts[1:]
            if len(parts) != 2 or not parts[0].isdigit() or not 0 <= int(parts[0]) <= 255:
                raise ValueError(
                    f"{source}: line {n}: want '<id 0-255> <key>' or 'client <id> <key>'"
                )
            kid, tok = int(parts[0]), parts[1].encode()
            if is_client:
                try:
                    secret = bytes.fromhex(tok.decode())
                except ValueError:
                    raise ValueError(f"{source}: line {n}: a client key is hex") from None
            else:
                secret = tok
            if len(secret) < MIN_KEY_BYTES:
                raise ValueError(
                    f"{source}: line {n}: key {kid} is {len(secret)} bytes; at least "
                    f"{MIN_KEY_BYTES}"
                )
            if kid in masters or kid in clients:
                raise ValueError(f"{source}: line {n}: key id {kid} twice")
            (clients if is_client else masters)[kid] = secret
            order.append(kid)
        if not order:
            raise ValueError(f"{source}: no key")
        if len(order) > MAX_KEYS:
            raise ValueError(f"{source}: more than {MAX_KEYS} keys")
        try:
            return cls(masters, clients, order[0], pairs)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


KeyLike = bytes | Keyring


def as_keyring(key: KeyLike) -> Keyring:
    return key if isinstance(key, Keyring) else Keyring({0: key}, {}, 0)


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the key file {path}: {e}") from e
    return Keyring.parse(text, str(path))


def load_key(path: str | os.PathLike[str]) -> Keyring:
    """The key file (see the module's docstring) as a key ring."""
    return load_keyring(path)


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


def _run_key(class_key: bytes, origin: int, sender: int, epoch: int) -> AESGCM:
    """The AEAD key of one sender's run: nonces (its counter) never repeat under it."""
    return AESGCM(_mac(class_key, b"dg" + _RUN.pack(origin, sender, epoch)))


class Sealer:
    """Seals (encrypts and authenticates) outgoing datagrams of one sender."""

    __slots__ = ("aeads", "counter", "epoch", "origin", "ring", "sender")

    def __init__(self, key: KeyLike, origin: int, sender: int, epoch: int) -> None:
        self.ring = as_keyring(key)
        self.origin = origin
        self.sender = sender
        self.epoch = epoch
        self.counter = 0
        self.aeads: dict[tuple[int, str, int], AESGCM] = {}

    def rekey(self, key: KeyLike) -> None:
        """A new key ring (a rotation): the primary key seals from now on."""
        self.ring = as_keyring(key)
        self.aeads.clear()

    def seal(self, body: bytes, dst_origin: int, dst: int) -> bytes:
        """A datagram for receiver ``(dst_origin, dst)`` only."""
        self.counter += 1
        cls = class_of(self.origin, dst_origin)
        kid = self.ring.primary
        # Peer keys are per receiver in identity mode (its pair key).
        other = dst if cls == PEER else -1
        aead = self.aeads.get((kid, cls, other))
        if aead is None:
            ck = self.ring.key(kid, cls, other)
            if ck is None:
                raise AuthError(f"no {cls} key {kid} to send to node {dst} with")
            aead = _run_key(ck, self.origin, self.sender, self.epoch)
            self.aeads[(kid, cls, other)] = aead
        head = _HDR.pack(
            MAGIC, VERSION, self.origin, kid, self.sender, self.epoch, self.counter,
            time.time_ns() // 1_000_000,
        )  # fmt: skip
        nonce = self.counter.to_bytes(12, "big")
        return head + aead.encrypt(nonce, body, head + _DST.pack(dst_origin, dst))


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
    """Verifies and decrypts incoming datagrams: the AEAD tag, then the
    sender's replay window (and, with ``not_before_ms``, the send time)."""

    def __init__(
        self,
        key: KeyLike,
        origin: int,
        me: int,
        max_senders: int = 100_000,
        not_before_ms: int | None = None,
    ) -> None:
        self.ring = as_keyring(key)
        self.my_origin = origin
        #: This receiver's identity, which every datagram must be sealed for.
        self.me = _DST.pack(origin, me)
        self.windows: OrderedDict[tuple[int, int], _Window] = OrderedDict()
        self.max_senders = max_senders
        self.not_before_ms = not_before_ms
        self.aeads: OrderedDict[tuple[int, str, int, int, int], AESGCM] = OrderedDict()

    def rekey(self, key: KeyLike) -> None:
        self.ring = as_keyring(key)
        self.aeads.clear()

    def open(self, data: bytes) -> tuple[int, int, bytes]:
        """Return (origin, sender, body) or raise AuthError."""
        if len(data) < OVERHEAD:
            raise AuthError(f"datagram of {len(data)} bytes is too short")
        magic, ver, origin, kid, sender, epoch, counter, sent_ms = _HDR.unpack_from(data)
        if magic != MAGIC or ver != VERSION:
            raise AuthError("bad magic or version")
        if origin not in (ORIGIN_NODE, ORIGIN_CLIENT):
            raise AuthError(f"bad origin {origin}")
        cls = class_of(origin, self.my_origin)
        ck = self.ring.key(kid, cls, sender)
        if ck is None:
            raise AuthError(
                f"no {cls} key {kid} for {'a client' if origin else f'node {sender}'} here "
                "(another cluster, a rotated-out key, or no pair key with that node)"
            )
        ak = (kid, cls, origin, sender, epoch)
        aead = self.aeads.get(ak)
        fresh = aead is None
        if aead is None:
            aead = _run_key(ck, origin, sender, epoch)
        head = data[:HDR_LEN]
        try:
            body = aead.decrypt(counter.to_bytes(12, "big"), data[HDR_LEN:], head + self.me)
        except (InvalidTag, OverflowError):
            raise AuthError(
                "bad tag (forged, damaged, meant for another receiver, or another key)"
            ) from None
        if fresh:
            # Cached once it proved authentic: forgeries cannot evict the real ones.
            self.aeads[ak] = aead
            if len(self.aeads) > 4096:
                self.aeads.popitem(last=False)
        if self.not_before_ms is not None and sent_ms < self.not_before_ms:
            raise StaleError(f"datagram from {sent_ms} ms, before this node started")
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
                raise ReplayError(
                    f"replayed datagram from {'client' if origin else 'node'} {sender}"
                )
            self.windows.move_to_end(k)
        return origin, sender, body


# ------------------------------------------------------------------ TCP frames

FRAME_HDR = struct.Struct(">I")


def hello_key(ring: Keyring, body: bytes, mac: bytes, sender: int) -> tuple[bytes, str] | None:
    """The class key that made a hello's MAC, and its class (a server tries
    its keys; the hello's origin is only trusted once it is authentic).
    ``sender`` is the node id the hello claims: in identity mode only that
    pair's keys can have made a node's hello."""
    for cls in (PEER, CLIENT):
        for _kid, k in ring.keys(cls, sender):
            if hmac.compare_digest(hello_mac(k, body), mac):
                return k, cls
    return None


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

    def seal_parts(self, parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """``seal`` of the concatenation of ``parts`` without copying them:
        the frame as buffers to write in order (a large frame)."""
        self.n_out += 1
        h = hmac.new(self.key, self.d_out + self.n_out.to_bytes(8, "big"), hashlib.sha256)
        size = 0
        for p in parts:
            h.update(p)
            size += len(p)
        return [FRAME_HDR.pack(size + MAC_LEN), *parts, h.digest()]

    def verify_view(self, frame: bytes | bytearray) -> memoryview:
        """``verify`` without copying: the body as a view of ``frame``."""
        if len(frame) < MAC_LEN:
            raise AuthError("frame too short")
        view = memoryview(frame)
        body, mac = view[:-MAC_LEN], view[-MAC_LEN:]
        n = self.n_in + 1
        h = hmac.new(self.key, self.d_in + n.to_bytes(8, "big"), hashlib.sha256)
        h.update(body)
        if not hmac.compare_digest(h.digest(), mac):
            raise AuthError("bad frame MAC (forged, replayed or reordered)")
        self.n_in = n
        return body

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
