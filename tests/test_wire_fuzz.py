"""Fuzz the wire of a running cluster: no input may crash a node or change its state.

Three real node processes on loopback (tests/netcluster.ProcCluster) get, by
default, 100 000 inputs (FUZZ_INPUTS) on their three surfaces:

* UDP datagrams to the paxos port: random bytes of random lengths; real sealed
  datagrams (real key, real messages) mutated so the MAC fails; exact replays of
  valid sealed datagrams; datagrams sealed with a wrong key; and datagrams
  sealed with the real key whose body ``codec.decode_many`` refuses (checked
  locally before sending).
* TCP connections to the paxos port: random bytes, hellos with bad MACs or
  malformed contents, oversized length prefixes, and - after a real handshake
  with the real key - frames with bad MACs, replayed frames, malformed bodies;
  a few connections that say nothing (refused by the handshake timeout).
* HTTP requests: random methods, paths, queries, headers and bodies, garbage,
  and requests to the write routes that must be refused (bad keys, bodies).

Every input is one the node must refuse; ``fuzzlib``'s oracles (twins of the
node's refusal logic, with their own replay windows) say which ``dropped_*``
counter each must bump, and the test checks the counters match exactly - so the
node provably received and refused every datagram and frame (the sender paces
itself on those counters, so the kernel never drops a datagram). Then: every
process is alive and healthy, no node logged an error, each node's protocol
state (decided, applied, promised, ballot, leader, ...) and KV data are what
they were before, and a final write and read still work.

FUZZ_UDP, FUZZ_TCP and FUZZ_HTTP set the count of one surface (``make
fuzz-campaign``: 1,000,000 each). The UDP and TCP surfaces include the client
API (client datagrams and client connections, on the shared port).

FUZZ_SEED replays a run (the seed is printed); FUZZ_KNOWN_BUGS=1 also sends the
inputs of the node bugs this fuzzer found (fuzzlib.KNOWN_BUGS), which then fail.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import random
import re
import socket
import time
import urllib.request
from collections import Counter, deque
from pathlib import Path
from typing import Any

import fuzzlib as fz
import msgpack
from netcluster import ProcCluster

from paxosrsm.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    ClientReply,
    Fenced,
    Heartbeat,
    Nack,
    Prepare,
    Promise,
    RecoverPrepare,
)
from paxosrsm.net import auth, codec

SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
TOTAL = int(os.environ.get("FUZZ_INPUTS", "100000"))
#: The share of the inputs per surface (UDP gets the rest).
TCP_SHARE = 0.10
HTTP_SHARE = 0.12

N = 3
#: One second without a heartbeat before a follower stands for election (the
#: default is 150 ms): the fuzzer loads a 2-core machine, other tests may run
#: beside it, and a leader change - a new ballot, a no-op slot - would look like
#: a state change. A node starved for a whole second would be a finding.
NODE_ARGS = ["--election-ticks", "100"]
UDP_CHUNK = 300  # datagrams per node between two waits for the node to catch up
UDP_CHUNK_BYTES = 3 << 20
TCP_CONCURRENCY = 24
HTTP_CONCURRENCY = 12
SILENT_CONNS = 6

UDP_COUNTERS = (
    "dropped_oversized_datagram",
    "dropped_unauthenticated",
    "dropped_replayed",
    "dropped_malformed",
    "dropped_wrong_channel",
)
STATE_FIELDS = (
    "roles",
    "leader",
    "is_leader",
    "ballot",
    "promised",
    "decided",
    "applied",
    "lag",
    "snapshot_slot",
    "recovering",
    "incarnation",
)
KEYS = {f"fuzz-{i}": f"value {i} \u00e9\u4e2d" for i in range(12)}

#: A datagram that passed the MAC: harmless real messages for the replay seeds.
_WRONG_CHANNEL_UDP = (Accept, Accepted, Promise, Fenced, CatchupRequest, CatchupReply)
_WRONG_CHANNEL_LINK = (Accept, Accepted, Promise, Fenced, RecoverPrepare, ClientReply)
_WRONG_CHANNEL_SESSION = (Prepare, Heartbeat, Accept, Nack, CatchupRequest)


# ================================================================ cluster helpers


def counters(cluster: ProcCluster, nid: int) -> Counter[str]:
    st = cluster.status(nid, timeout=5.0)
    assert st is not None, f"node {nid} does not answer /v1/status\n{cluster.logs()}"
    return Counter(st["counters"])


def state(cluster: ProcCluster) -> list[dict[str, Any]]:
    out = []
    for nid in range(N):
        st = cluster.status(nid, timeout=5.0)
        assert st is not None, f"node {nid} does not answer /v1/status\n{cluster.logs()}"
        out.append({k: st[k] for k in STATE_FIELDS})
    return out


def settled_state(cluster: ProcCluster, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The nodes' state once quiet: one leader known to all, everything applied."""
    deadline = time.monotonic() + timeout
    prev: list[dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        cur = state(cluster)
        quiet = (
            len({s["leader"] for s in cur}) == 1
            and cur[0]["leader"] is not None
            and len({s["decided"] for s in cur}) == 1
            and all(s["applied"] == s["decided"] for s in cur)
        )
        if quiet and cur == prev:
            return cur
        prev = cur
        time.sleep(0.2)
    raise AssertionError(f"cluster did not settle: {prev}\n{cluster.logs()}")


def stale_read(cluster: ProcCluster, nid: int, key: str) -> str | None:
    url = cluster.http(nid) + "/v1/kv/" + urllib.request.quote(key, safe="") + "?stale=true"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            value: str = json.loads(r.read())["value"]
            return value
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def healthz(cluster: ProcCluster, nid: int) -> bool:
    try:
        with urllib.request.urlopen(cluster.http(nid) + "/healthz", timeout=5) as r:
            return bool(r.status == 200 and json.loads(r.read()).get("ok"))
    except OSError:
        return False


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)
#: aiohttp logs each request its parser refuses (answered 400) at ERROR, with a
#: traceback - also a body it cannot decode, found while draining it after the
#: handler answered: noisy, but not a failure of the node.
_PARSER_400 = re.compile(r"aiohttp\.(http_exceptions|web_protocol)\.\w+: 400, message:")


def log_problems(root: Path) -> tuple[list[str], int]:
    """Error records in the nodes' logs (first line and exception), and how many
    were aiohttp's refusals of malformed HTTP requests (not counted as problems)."""
    out, parser_400 = [], 0
    for nid in range(N):
        text = (root / f"node-{nid}" / "node.log").read_text(errors="replace")
        starts = [m.start() for m in _LOG_RECORD.finditer(text)] + [len(text)]
        for a, b in itertools.pairwise(starts):
            rec = text[a:b]
            head = rec.split("\n", 1)[0]
            if not re.search(r" (ERROR|CRITICAL) |Traceback|Unhandled|Fatal", rec):
                continue
            last = [ln for ln in rec.strip().splitlines() if ln and not ln.startswith(" ")][-1]
            # The node logs aiohttp's records on one line (rate-limited, no traceback).
            if _PARSER_400.fullmatch(last) or _PARSER_400.search(head):
                parser_400 += 1
                continue
            out.append(f"node {nid}: {head} ... {last}")
    return out, parser_400


# ================================================================ UDP


class UdpFuzz:
    """Datagrams to every node's paxos port, paced on the node's drop counters."""

    KINDS = ("random", "mutated", "wrong_key", "malformed", "replay", "valid_refused")
    WEIGHTS = (0.25, 0.23, 0.10, 0.22, 0.17, 0.03)

    def __init__(self, cluster: ProcCluster, rng: random.Random, findings: fz.Findings) -> None:
        self.cluster = cluster
        self.key = cluster.key.masters[0]  # the cluster key (master key 0)
        self.rng = rng
        self.findings = findings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.oracles = [fz.DatagramOracle(self.key, N, nid) for nid in range(N)]
        self.expected = [Counter[str]() for _ in range(N)]
        self.sent = Counter[str]()
        self.sent_to = [0] * N
        self.valid: list[list[bytes]] = [[] for _ in range(N)]  # passed the MAC: replay seeds
        # Loopback UDP may reorder a burst (the sender can move between CPUs), and
        # only the verdict on a replay or an older epoch depends on the order: so
        # replay only datagrams the node confirmed (counted) before this burst, and
        # send the stale epoch only once the node has seen the newer one.
        self.confirmed = [0] * N
        self.client_confirmed = [False] * N
        self.base = [counters(cluster, nid) for nid in range(N)]
        epoch = rng.randrange(1 << 40, 1 << 62)
        self.sealers: list[dict[str, auth.Sealer]] = []
        self.ghosts: list[list[bytes]] = [[] for _ in range(N)]
        for _ in range(N):
            client = auth.Sealer(self.key, auth.ORIGIN_CLIENT, rng.randrange(1 << 63), epoch)
            self.sealers.append(
                {
                    "client": client,
                    # a node id no cluster has: what it says is refused, never stepped
                    "node": auth.Sealer(
                        self.key, auth.ORIGIN_NODE, rng.randrange(N, 1 << 64), epoch
                    ),
                    # the same client from an earlier run: all replays
                    "stale": auth.Sealer(
                        self.key, auth.ORIGIN_CLIENT, client.sender, epoch - rng.randrange(1, 1000)
                    ),
                    # real node ids with a huge epoch: only ever sent mutated
                    "ghost": auth.Sealer(
                        self.key, auth.ORIGIN_NODE, rng.randrange(N), (1 << 64) - 1
                    ),
                }
            )

    def _ghost(self, nid: int) -> bytes:
        """A real datagram (real key, real messages, real node ids) to mutate: from a
        pool that is renewed one datagram in four, as building them is not cheap."""
        pool = self.ghosts[nid]
        if len(pool) < 64 or self.rng.random() < 0.25:
            s = self.sealers[nid]["ghost"]
            s.origin = self.rng.randrange(2)
            body = codec.encode_many(
                [fz.rand_message(self.rng) for _ in range(self.rng.randrange(1, 4))]
            )
            d = s.seal(body, auth.ORIGIN_NODE, nid)
            if len(pool) < 64:
                pool.append(d)
            else:
                pool[self.rng.randrange(64)] = d
            return d
        return self.rng.choice(pool)

    def one(self, nid: int) -> bytes:
        rng = self.rng
        kind = rng.choices(self.KINDS, self.WEIGHTS)[0]
        confirmed = self.confirmed[nid]
        if kind == "replay" and not confirmed:
            kind = "valid_refused"
        sealers = self.sealers[nid]
        if kind == "random":
            data = fz.random_datagram(rng)
        elif kind == "mutated":
            if rng.random() < 0.6 or not confirmed:
                base = self._ghost(nid)
            else:
                base = self.valid[nid][rng.randrange(confirmed)]
            data = fz.mutate_datagram(rng, base, self._ghost(nid))[: fz.UDP_MAX]
        elif kind == "wrong_key":
            s = auth.Sealer(
                fz.wrong_key(rng, self.key),
                rng.choice((auth.ORIGIN_NODE, auth.ORIGIN_CLIENT, 2, 255)),
                rng.choice((0, 1, 2, rng.randrange(1 << 64))),
                rng.choice((1, 1 << 62, (1 << 64) - 1)),
            )
            s.counter = rng.choice((0, rng.randrange(1 << 63)))
            data = s.seal(codec.encode_many([fz.rand_message(rng)]), auth.ORIGIN_NODE, nid)
        elif kind == "malformed":
            limit = fz.MAX_DATAGRAM - auth.OVERHEAD
            _, body = fz.malformed_body(rng, limit, self.findings)
            stale = 0.1 if self.client_confirmed[nid] else 0.0
            name = rng.choices(("client", "node", "stale"), (0.45, 0.45, stale))[0]
            data = sealers[name].seal(body, auth.ORIGIN_NODE, nid)
        elif kind == "valid_refused":
            if rng.random() < 0.5:
                data = sealers["client"].seal(
                    codec.encode_many([fz.rand_message(rng, (ClientReply,))]), auth.ORIGIN_NODE, nid
                )
            else:
                msg = fz.rand_message(rng, _WRONG_CHANNEL_UDP)
                data = sealers["node"].seal(codec.encode_many([msg]), auth.ORIGIN_NODE, nid)
        else:
            data = self.valid[nid][rng.randrange(confirmed)]
        want = self.oracles[nid].expect(data, body_refused=kind == "malformed")
        if want in ("dropped_malformed", "dropped_wrong_channel"):
            assert kind in ("malformed", "valid_refused"), f"fuzzer bug: {kind} passed the MAC"
            self.valid[nid].append(data)
        self.expected[nid][want] += 1
        self.sent[kind] += 1
        self.sent_to[nid] += 1
        return data

    def run(self, total: int) -> None:
        addrs = self.cluster.addrs
        while sum(self.sent_to) < total:
            for nid in range(N):
                size = 0
                for _ in range(min(UDP_CHUNK, total - sum(self.sent_to))):
                    data = self.one(nid)
                    self.sock.sendto(data, addrs[nid])
                    size += len(data)
                    if size > UDP_CHUNK_BYTES:
                        break
            for nid in range(N):
                self.wait(nid)
        self.sock.close()

    def received(self, nid: int, now: Counter[str] | None = None) -> Counter[str]:
        now = counters(self.cluster, nid) if now is None else now
        return Counter(
            {k: now[k] - self.base[nid][k] for k in UDP_COUNTERS if now[k] != self.base[nid][k]}
        )

    def wait(self, nid: int, timeout: float = 30.0) -> None:
        """Until the node has refused every datagram sent to it so far."""
        want = sum(self.expected[nid].values())
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(nid)
            if sum(got.values()) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        assert got == self.expected[nid], (
            f"node {nid} counted {dict(got)} for the datagrams sent to it, "
            f"expected {dict(self.expected[nid])} (seed {SEED})"
        )
        self.confirmed[nid] = len(self.valid[nid])
        self.client_confirmed[nid] = self.sealers[nid]["client"].counter > 0


# ================================================================ TCP


class TcpFuzz:
    """Connections to every node's paxos port, each with one input the node must refuse."""

    KINDS = (
        "raw_random",
        "hello_bad_mac",
        "hello_bad_body",
        "hello_oversized",
        "frame_bad_mac",
        "frame_replayed",
        "frame_malformed",
        "frame_oversized",
    )
    WEIGHTS = (0.14, 0.10, 0.16, 0.04, 0.22, 0.06, 0.24, 0.04)

    def __init__(self, cluster: ProcCluster, rng: random.Random, findings: fz.Findings) -> None:
        self.cluster = cluster
        self.ring = cluster.key

        self.rng = rng
        self.findings = findings
        self.expected = [Counter[str]() for _ in range(N)]
        self.sent = Counter[str]()
        self.done = 0
        self.problems: list[str] = []
        self.foreign: deque[bytes] = deque(maxlen=64)  # frames sealed on other connections

    async def run(self, total: int) -> None:
        rng = self.rng
        silent = [
            asyncio.create_task(self.silent(i % N, i)) for i in range(min(SILENT_CONNS, total))
        ]
        idle = [await self.handshake(nid, random.Random(rng.getrandbits(64))) for nid in range(N)]
        for _reader, writer, fm in idle:
            writer.write(fm.seal(b"\x90"))  # an authenticated (empty) batch: a real client
        # A hello and nothing after it (a replayed hello looks so): dropped
        # within the handshake timeout (issue 12).
        hello_only = [
            await self.handshake(nid, random.Random(rng.getrandbits(64))) for nid in range(N)
        ]
        for nid in range(N):
            self.expected[nid]["dropped_no_frame_after_hello"] += 1
        hello_checks = [
            asyncio.create_task(self.until_closed(nid, r, w, "hello only", timeout=15.0))
            for nid, (r, w, _fm) in enumerate(hello_only)
        ]
        n = total - len(silent)
        seeds = (rng.getrandbits(64) for _ in range(n))
        todo = iter(range(n))

        async def worker() -> None:
            # A bounded pool pulling from one iterator, not a task per input:
            # a million tasks waiting on a semaphore take hours to cancel.
            for i in todo:
                await self.case(i % N, random.Random(next(seeds)))

        await asyncio.gather(*(worker() for _ in range(TCP_CONCURRENCY)))
        await asyncio.gather(*silent, *hello_checks)
        # A connection past its handshake and its first frame is not timed
        # out however long it idles.
        for nid, (reader, writer, _fm) in enumerate(idle):
            try:
                await asyncio.wait_for(reader.read(1), 0.05)
                self.problems.append(f"node {nid} closed an idle authenticated connection")
            except TimeoutError:
                pass
            writer.close()

    async def silent(self, nid: int, i: int) -> None:
        """A connection that says nothing (or half a hello): the handshake timeout closes it."""
        reader, writer = await asyncio.open_connection(*self.cluster.addrs[nid])
        writer.write((b"", b"\x00", b"\x00\x00\x01", b"\x00\x00\x00\x64" + b"x" * 10)[i % 4])
        self.expected[nid]["dropped_handshake_timeout"] += 1
        self.sent["silent"] += 1
        await self.until_closed(nid, reader, writer, "silent", timeout=15.0)

    async def handshake(
        self, nid: int, r: random.Random, role: str = "client"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, auth.FrameMac]:
        reader, writer = await asyncio.open_connection(*self.cluster.addrs[nid])
        others = [x for x in range(N) if x != nid]
        if role == "client":
            hello = [auth.ORIGIN_CLIENT, r.randrange(1 << 63), "client", None]
        elif role == "peer":
            hello = [auth.ORIGIN_NODE, r.choice(others), "peer", None]
        else:
            hello = [auth.ORIGIN_NODE, r.choice(others), "session", [r.randrange(1, 1 << 40), nid]]
        nonce_c = r.randbytes(16)
        body = fz.hello_body(*hello, nonce_c)
        key = fz.class_key(self.ring, hello[0])
        writer.write(auth.frame_raw(body, auth.hello_mac(key, body)))
        (n,) = auth.FRAME_HDR.unpack(await asyncio.wait_for(reader.readexactly(4), 5))
        frame = await asyncio.wait_for(reader.readexactly(n), 5)
        wb, mac = frame[: -auth.MAC_LEN], frame[-auth.MAC_LEN :]
        assert mac == auth.welcome_mac(key, nonce_c, wb), "bad welcome MAC"
        w = msgpack.unpackb(wb)
        k_conn = auth.conn_key(key, nonce_c, w[1])
        return reader, writer, auth.FrameMac(k_conn, True)

    async def until_closed(
        self,
        nid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        kind: str,
        timeout: float = 5.0,
    ) -> None:
        """The node must close the connection, and say nothing before it does."""
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if data:
                self.problems.append(f"{kind}: node {nid} answered {data[:60]!r}")
            else:
                self.done += 1
        except (ConnectionResetError, BrokenPipeError):
            self.done += 1
        except TimeoutError:
            self.problems.append(f"{kind}: node {nid} did not close the connection")
        finally:
            writer.close()

    async def case(self, nid: int, r: random.Random) -> None:
        kind = r.choices(self.KINDS, self.WEIGHTS)[0]
        self.sent[kind] += 1
        exp = self.expected[nid]
        if kind.startswith(("raw", "hello")):
            data = self.pre_handshake(kind, nid, r, exp)
            reader, writer = await asyncio.open_connection(*self.cluster.addrs[nid])
        else:
            role = r.choices(("client", "peer", "session"), (0.6, 0.2, 0.2))[0]
            reader, writer, fm = await self.handshake(nid, r, role)
            data = self.post_handshake(kind, role, r, fm, exp)
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the node closed before it read everything: fine, it refused
        await self.until_closed(nid, reader, writer, kind)

    def pre_handshake(self, kind: str, nid: int, r: random.Random, exp: Counter[str]) -> bytes:
        if kind == "raw_random":
            data = r.randbytes(r.randrange(4, 3000))
            if r.random() < 0.4:  # a length that fits: on to the MAC check
                n = r.randrange(auth.MAC_LEN, fz.MAX_HELLO + 1)
                data = auth.FRAME_HDR.pack(n) + data[4:]
            (n,) = auth.FRAME_HDR.unpack_from(data)
            if n > fz.MAX_HELLO or n < auth.MAC_LEN:
                exp["dropped_oversized_frame"] += 1
            else:
                data += r.randbytes(max(0, 4 + n - len(data)))  # complete: never wait
                exp["dropped_bad_handshake"] += 1
            return data
        if kind == "hello_bad_mac":
            origin, sender, role, b = r.choice(
                (
                    (auth.ORIGIN_CLIENT, r.randrange(1 << 63), "client", None),
                    (auth.ORIGIN_NODE, (nid + 1) % N, "peer", None),
                    (auth.ORIGIN_NODE, (nid + 2) % N, "session", [5, nid]),
                )
            )
            body = fz.hello_body(origin, sender, role, b, r.randbytes(16))
            exp["dropped_bad_handshake"] += 1
            return auth.frame_raw(
                body, fz.hello_mac_wrong(r, fz.class_key(self.ring, origin), body)
            )
        if kind == "hello_bad_body":
            body = fz.bad_hello_body(r, nid, self.findings)
            exp["dropped_bad_handshake"] += 1
            return auth.frame_raw(body, auth.hello_mac(fz.hello_class_key(self.ring, body), body))
        # hello_oversized: a length the handshake refuses before reading it
        n = r.choice((fz.MAX_HELLO + 1, 1 << 20, (1 << 32) - 1, 0, 1, auth.MAC_LEN - 1))
        exp["dropped_oversized_frame"] += 1
        return auth.FRAME_HDR.pack(n) + r.randbytes(r.randrange(0, 100))

    def harmless(self, role: str, r: random.Random, exp: Counter[str]) -> bytes:
        """A real message the connection's role does not take: refused, never stepped."""
        if role == "client":
            exp["dropped_malformed"] += 1
            return codec.encode_many([fz.rand_message(r, (ClientReply,))])
        exp["dropped_wrong_channel"] += 1
        types = _WRONG_CHANNEL_LINK if role == "peer" else _WRONG_CHANNEL_SESSION
        return codec.encode_many([fz.rand_message(r, types)])

    def post_handshake(
        self, kind: str, role: str, r: random.Random, fm: auth.FrameMac, exp: Counter[str]
    ) -> bytes:
        out = b""
        for _ in range(r.choice((0, 0, 0, 1, 3))):  # some accepted-and-refused frames first
            out += fm.seal(self.harmless(role, r, exp))
        if kind == "frame_replayed":  # within the connection: the implicit counter moved on
            frame = fm.seal(self.harmless(role, r, exp))
            self.foreign.append(frame)
            exp["dropped_bad_mac"] += 1
            return out + frame + frame
        if kind == "frame_malformed":
            _, body = fz.malformed_body(r, 100_000, self.findings)
            exp["dropped_malformed"] += 1
            return out + fm.seal(body)
        if kind == "frame_oversized":
            n = r.choice((fz.MAX_FRAME + auth.MAC_LEN + 1, (1 << 32) - 1, 0, 1, auth.MAC_LEN - 1))
            exp["dropped_oversized_frame"] += 1
            return out + auth.FRAME_HDR.pack(n) + r.randbytes(r.randrange(0, 64))
        # frame_bad_mac
        body = codec.encode_many([fz.rand_message(r)]) if r.random() < 0.7 else r.randbytes(50)
        v = r.randrange(7)
        nxt = (fm.n_out + 1).to_bytes(8, "big")
        if v == 0:
            frame = auth.frame_raw(body, r.randbytes(auth.MAC_LEN))
        elif v == 1:  # the MAC of the frame after this one
            fm.n_out += 1
            frame = fm.seal(body)
        elif v == 2:  # the server's direction
            frame = auth.frame_raw(body, hmac.digest(fm.key, b"s" + nxt + body, "sha256"))
        elif v == 3:  # the class key instead of the connection's
            k = fz.class_key(
                self.ring, auth.ORIGIN_CLIENT if role == "client" else auth.ORIGIN_NODE
            )
            frame = auth.frame_raw(body, hmac.digest(k, b"c" + nxt + body, "sha256"))
        elif v == 4:  # a body changed after sealing
            good = bytearray(fm.seal(body))
            good[4 + r.randrange(len(body))] ^= 1 << r.randrange(8)
            frame = bytes(good)
        elif v == 5 and self.foreign:  # a frame of another connection
            frame = r.choice(self.foreign)
        else:  # a MAC cut short (the length still counts 32 bytes or more)
            mac = fm.seal(body)[-auth.MAC_LEN :]
            frame = auth.frame_raw(body + r.randbytes(16), mac[:16])
        exp["dropped_bad_mac"] += 1
        return out + frame


# ================================================================ HTTP


async def read_response(reader: asyncio.StreamReader, head: bool) -> int | None:
    """The status of the (first, final) response, having read all of it; None if none came."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                m = re.match(rb"HTTP/\d\.\d (\d{3})", buf)
                return int(m.group(1)) if m else None
            buf += chunk
        headers, _, rest = buf.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/\d\.\d (\d{3})", headers)
        if m is None:
            return None
        status = int(m.group(1))
        if 100 <= status < 200:
            buf = rest
            continue
        cl = re.search(rb"(?im)^content-length:\s*(\d+)", headers)
        if head or status in (204, 304):
            return status
        if cl is not None:
            n = int(cl.group(1))
            while len(rest) < n:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                rest += chunk
        elif re.search(rb"(?im)^transfer-encoding:.*chunked", headers):
            while not rest.endswith(b"0\r\n\r\n"):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                rest += chunk
        else:
            while await reader.read(65536):
                pass
        return status


class HttpFuzz:
    def __init__(self, cluster: ProcCluster, rng: random.Random, findings: fz.Findings) -> None:
        self.cluster = cluster
        self.rng = rng
        self.findings = findings
        self.statuses = Counter[tuple[str, int | None]]()
        self.bad: list[str] = []
        self.done = 0

    async def run(self, total: int) -> None:
        addrs = [h.rsplit(":", 1) for h in self.cluster.layout["http_peers"]]
        # Made as they are sent (a million cases, some of 600 KB, do not all
        # fit in memory), by a bounded pool of workers (not a task each).
        todo = iter(range(total))

        async def worker() -> None:
            for i in todo:
                case = fz.http_case(self.rng, self.findings)
                host, port = addrs[i % N]
                await self.one(i % N, host, int(port), case)

        await asyncio.gather(*(worker() for _ in range(HTTP_CONCURRENCY)))

    async def one(self, nid: int, host: str, port: int, case: fz.HttpCase) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        status: int | None = None
        try:
            try:
                writer.write(case.raw)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                pass  # refused before it was all sent; the answer may be in the buffer
            status = await asyncio.wait_for(read_response(reader, case.head), 10)
        except (ConnectionResetError, BrokenPipeError):
            status = None
        except TimeoutError:
            self.bad.append(f"node {nid}: no answer in 10 s to {case.kind} {case.raw[:300]!r}")
            return
        finally:
            writer.close()
        self.statuses[(case.kind, status)] += 1
        if status is not None:
            self.done += 1
        if case.allowed is not None:
            ok = status in case.allowed
        else:
            ok = status is not None and (status < 500 or status == 503)
        if not ok:
            self.bad.append(f"node {nid}: {case.kind} got {status} for {case.raw[:300]!r}")


# ================================================================ the test


def test_wire_fuzz(tmp_path: Path) -> None:
    print(f"\nwire fuzz: FUZZ_SEED={SEED} FUZZ_INPUTS={TOTAL}")
    rng = random.Random(SEED)
    findings = fz.Findings()
    n_tcp = int(os.environ.get("FUZZ_TCP", int(TOTAL * TCP_SHARE)))
    n_http = int(os.environ.get("FUZZ_HTTP", int(TOTAL * HTTP_SHARE)))
    n_udp = int(
        os.environ.get("FUZZ_UDP", TOTAL - int(TOTAL * TCP_SHARE) - int(TOTAL * HTTP_SHARE))
    )
    print(f"inputs: udp {n_udp}, tcp {n_tcp}, http {n_http}")
    # The shared cluster key: the fuzzer plays nodes that no cluster has
    # (ids N and up) with it, which identity mode refuses before decoding
    # (tests/test_auth.py and test_attacks.py cover identity mode).
    cluster = ProcCluster(tmp_path, replicas=N, extra=NODE_ARGS, node_keys=False).start_all()
    t0 = time.monotonic()
    try:
        cluster.wait_ready()
        with cluster.client(timeout=10.0) as cl:
            for k, v in KEYS.items():
                cl.put(k, v)
            assert cl.cas("fuzz-0", KEYS["fuzz-0"], "swapped")
            assert cl.delete("fuzz-1")
        keys = dict(KEYS, **{"fuzz-0": "swapped", "fuzz-1": None})
        before = settled_state(cluster)
        base = [counters(cluster, nid) for nid in range(N)]
        t_setup = time.monotonic() - t0

        t = time.monotonic()
        udp = UdpFuzz(cluster, rng, findings)
        udp.run(n_udp)
        t_udp = time.monotonic() - t

        t = time.monotonic()
        mid = [counters(cluster, nid) for nid in range(N)]
        tcp = TcpFuzz(cluster, rng, findings)
        asyncio.run(tcp.run(n_tcp))
        t_tcp = time.monotonic() - t

        t = time.monotonic()
        late = [counters(cluster, nid) for nid in range(N)]
        http = HttpFuzz(cluster, rng, findings)
        asyncio.run(http.run(n_http))
        t_http = time.monotonic() - t

        # ---------------------------------------------------------- verdicts
        after = state(cluster)
        end = [counters(cluster, nid) for nid in range(N)]
        print(f"setup {t_setup:.1f}s, udp {t_udp:.1f}s, tcp {t_tcp:.1f}s, http {t_http:.1f}s")
        print("udp sent by kind:", dict(udp.sent), "per node:", udp.sent_to)
        for nid in range(N):
            d_in = end[nid]["datagrams_in"] - base[nid]["datagrams_in"]
            print(f"node {nid} udp drops:", dict(udp.expected[nid]), f"datagrams_in +{d_in}")
        print("tcp sent by kind:", dict(tcp.sent))
        for nid in range(N):
            print(f"node {nid} tcp drops:", dict(tcp.expected[nid]))
        print("http (kind, status):", dict(sorted(http.statuses.items(), key=str)))
        print("known node bugs, inputs withheld:", dict(findings.withheld) or "none")

        assert not findings.surprises, "\n".join(findings.surprises[:20])
        assert all(cluster.alive(nid) for nid in range(N)), "a node died\n" + cluster.logs()
        assert all(healthz(cluster, nid) for nid in range(N)), "a node is unhealthy"
        assert not tcp.problems, "\n".join(tcp.problems[:20])
        assert not http.bad, f"{len(http.bad)} bad HTTP answers:\n" + "\n".join(http.bad[:20])

        # Every datagram and frame was counted, by the counter its refusal names;
        # and no other drop counter moved (nothing was "refused" by the core).
        for nid in range(N):
            udp_got = Counter({k: mid[nid][k] - base[nid][k] for k in mid[nid] if "dropped" in k})
            assert +udp_got == +udp.expected[nid], (nid, udp_got, udp.expected[nid])
            tcp_got = Counter({k: late[nid][k] - mid[nid][k] for k in late[nid] if "dropped" in k})
            assert +tcp_got == +tcp.expected[nid], (nid, tcp_got, tcp.expected[nid])
            # HTTP refusals of the browser guard (bad Origin or Content-Type)
            # are counted as such; no protocol counter may move.
            http_got = Counter(
                {
                    k: end[nid][k] - late[nid][k]
                    for k in end[nid]
                    if "dropped" in k and not k.startswith("dropped_http_")
                }
            )
            assert not +http_got, (nid, http_got)
            assert end[nid]["datagrams_in"] - base[nid]["datagrams_in"] >= udp.sent_to[nid]
        replays = sum(e["dropped_replayed"] for e in udp.expected)
        assert replays >= udp.sent["replay"] > 0
        assert sum(e["dropped_unauthenticated"] for e in udp.expected) >= (
            udp.sent["mutated"] + udp.sent["wrong_key"]
        )

        received = sum(sum(e.values()) for e in udp.expected) + tcp.done + http.done
        print(
            f"inputs received and refused: {received} (udp {n_udp}, tcp {tcp.done}, "
            f"http {http.done})"
        )
        assert received >= n_udp + n_tcp + n_http, (received, n_udp + n_tcp + n_http)

        # Nothing changed: protocol state, data, and nothing in the logs.
        assert after == before, f"state changed:\nbefore {before}\nafter  {after}"
        for nid in range(N):
            for k, v in keys.items():
                assert stale_read(cluster, nid, k) == v, (nid, k)
        problems, parser_400 = log_problems(tmp_path)
        print(f"aiohttp logged {parser_400} refused HTTP requests at ERROR, with tracebacks")
        assert not problems, f"{len(problems)} errors logged:\n" + "\n".join(problems[:30])

        with cluster.client(timeout=10.0) as cl:
            cl.put("after-fuzz", "ok")
            assert cl.get("after-fuzz") == "ok"
        print(f"total {time.monotonic() - t0:.1f}s")
    finally:
        cluster.close()
