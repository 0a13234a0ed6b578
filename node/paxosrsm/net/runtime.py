"""The asyncio runtime of one node: sockets, timer and disk around the sans-I/O core.

Transport, as the seed designs it (docs/design.md, "The networked node"):

* clients -> proposer: UDP datagrams (TCP for requests too big for one);
* Prepare / RecoverPrepare -> every acceptor 0..N-1: UDP, retransmitted by
  the core's timer; Nack, Heartbeat and HeartbeatAck: UDP;
* Promise: the acceptor opens a TCP connection to the proposer - the *promise
  session* of that ballot - and sends the Promise over it. Accepts are
  streamed over that session, and Accepted / Fenced come back over it;
* an acceptor whose promise rises above a session's ballot closes it; the
  proposer takes a broken session as "back to preparing" (Node.session_lost);
* catch-up and snapshots: TCP peer links.

The Ready contract: everything the core produced since the last flush is taken
in one ``ready()``; its records are appended and fsynced (one fsync, in a disk
thread, while the loop keeps receiving) before any of its messages or replies
leave. Flushes are strictly sequential, so batches become durable in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..client.aio import AsyncClient, ClientError
from ..config import Role
from ..driver import (
    SESSION_TO_ACCEPTOR,
    SESSION_TO_PROPOSER,
    TO_ACCEPTOR,
    TO_PROPOSER,
    UDP,
    UDP_TYPES,
    Driver,
    channel,
)
from ..messages import (
    Accept,
    CatchupReply,
    CatchupRequest,
    ClientReply,
    ClientRequest,
    Envelope,
    Heartbeat,
    HeartbeatAck,
    Nack,
    PeerMessage,
    Prepare,
    Promise,
    Status,
)
from ..mvcc import MVCCStore
from ..node import Node, NodeStatus
from ..outbox import SafetyViolation
from ..records import AcceptRec, DecideRec, Record, SnapshotRec
from ..statemachine import ALARMS_QUERY, StateMachine, encode_alarm
from ..storage import Identity, Storage, open_storage
from ..types import Ballot, Kind, ProtocolError
from . import auth, codec
from .accesslog import AccessLog
from .admission import Admission
from .backups import Backups
from .conn import FramedConn, fd_budget
from .metrics import NodeMetrics, TimedStateMachine
from .options import NodeOptions
from .quota import Reading, StorageQuota, is_disk_full, read_fs

log = logging.getLogger("paxosrsm.node")


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


_UDP_TYPES = UDP_TYPES
#: What may arrive on a promise session, per side.
_SESSION_TO_PROPOSER = SESSION_TO_PROPOSER
_SESSION_TO_ACCEPTOR = SESSION_TO_ACCEPTOR
MAX_CLIENT_ROUTES = 200_000
#: A frame that is a fragment of a larger message starts with this byte
#: (0xc1 is never used by msgpack, so no batch begins with it); then
#: _FRAG (transfer id, index, count, total bytes), then the piece.
FRAGMENT = b"\xc1"
_FRAG = struct.Struct("<QIIQ")
#: Connections the peer port keeps open at once (less, if the descriptor
#: budget is smaller), and of those, how many may still be in their handshake.
MAX_INBOUND = 512
MAX_UNAUTHENTICATED = 64


def _slices(parts: list[bytes], size: int) -> Iterator[list[memoryview]]:
    """The concatenation of ``parts`` cut into runs of ``size`` bytes (the
    last shorter), each as views of the parts it spans: nothing copied."""
    cur: list[memoryview] = []
    room = size
    for p in parts:
        v = memoryview(p)
        pos = 0
        while pos < len(v):
            k = min(room, len(v) - pos)
            cur.append(v[pos : pos + k])
            pos += k
            room -= k
            if room == 0:
                yield cur
                cur, room = [], size
    if cur:
        yield cur


class RateLimitedLog:
    """At most one line per reason per ``every`` seconds, with a count of the rest."""

    def __init__(self, logger: logging.Logger, every: float = 5.0) -> None:
        self.logger = logger
        self.every = every
        self.last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()

    def warn(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -1e9) >= self.every:
            n = self.suppressed.pop(reason, 0)
            more = f" (+{n} more since last report)" if n else ""
            ev = {"event": "refused", "reason": reason, "suppressed": n}
            self.logger.warning("dropped input (%s): %s%s", reason, detail, more, extra=ev)
            self.last[reason] = now
        else:
            self.suppressed[reason] += 1


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: NodeServer, client_port: bool = False) -> None:
        self.server = server
        self.client_port = client_port

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.on_datagram(data, addr, self.client_port)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.
        self.server.stats["udp_errors"] += 1


def _who(route: tuple[str, Any]) -> str:
    """Where a client request came from, for the access log."""
    how, where = route
    if how == "udp":
        addr = where[0]
        return f"udp {addr[0]}:{addr[1]}"
    peer = getattr(where, "peer", "?")
    return f"{how} {peer}"


class NodeServer:
    def __init__(
        self, opts: NodeOptions, *, sm_factory: Callable[[], StateMachine] = MVCCStore
    ) -> None:
        self.opts = opts
        self.id = opts.node_id
        self.cfg = opts.cluster_config()
        self.key = auth.load_key(opts.key_file)
        if not self.key.has_peer_keys:
            raise ValueError(
                f"{opts.key_file} holds client credentials only: a node needs the cluster key"
            )
        self._key_stamp = _stat(opts.key_file)
        #: Who wrote what by the client port (issue 12; HTTP has its own).
        self.access = AccessLog()
        self.sm_factory = sm_factory
        self.stats: Counter[str] = Counter()
        self.msg_in: Counter[str] = Counter()
        self.msg_out: Counter[str] = Counter()
        self.rec_out: Counter[str] = Counter()
        self.rlog = RateLimitedLog(log)
        self.started = time.monotonic()
        self.last_tick = time.monotonic()
        self.fsync_seconds: list[float] = []
        self.storage: Storage | None = None
        self.node: Node | None = None
        self.driver: Driver | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.AbstractServer | None = None
        #: The client port's socket and server (--client-port), if separate.
        self.udp_clients: asyncio.DatagramTransport | None = None
        self.tcp_clients: asyncio.AbstractServer | None = None
        self.disk = ThreadPoolExecutor(1, thread_name_prefix="paxos-disk")
        #: Storage quota and the NOSPACE alarm (net/quota.py).
        self.quota = StorageQuota(opts.quota_bytes, opts.quota_reserve_bytes)
        #: A write failed with ENOSPC and is being retried: no peer traffic.
        self.disk_full = False
        self.alarms: list[int] = []
        self.alarm_client: AsyncClient | None = None
        self.alarm_task: asyncio.Task[None] | None = None
        self.last_compact = 0.0
        #: Payload bytes made durable since the last quota check.
        self.written_since_check = 0
        self.quota_due = asyncio.Event()
        self.dirty = asyncio.Event()
        self.stopping = asyncio.Event()
        self.fatal: BaseException | None = None
        self.tasks: list[asyncio.Task[None]] = []
        # addresses: node id -> resolved (ip, port)
        self.resolved: dict[int, tuple[str, int]] = {}
        #: ids whose name did not resolve: (next attempt at, current pause)
        self.resolve_retry: dict[int, tuple[float, float]] = {}
        self.resolving: set[int] = set()
        #: the last DNS answer per id: a repeated answer does not override an
        #: address learned from the peer itself (DNS may lag behind a new pod)
        self.dns_answer: dict[int, tuple[str, int]] = {}
        # promise sessions: acceptor side (we promised to a proposer) and
        # proposer side (an acceptor promised to us), keyed (peer, ballot)
        self.sessions_out: dict[tuple[int, Ballot], FramedConn] = {}
        self.sessions_in: dict[tuple[int, Ballot], FramedConn] = {}
        #: Connections accepted on the peer port, open now.
        self.inbound: set[FramedConn] = set()
        self.max_inbound = max(16, min(MAX_INBOUND, fd_budget() // 2))
        self.links: dict[int, FramedConn] = {}  # outgoing peer links (catch-up)
        #: Messages larger than a frame (a catch-up snapshot) travel in
        #: fragments (_send_fragments); at most this many bytes of them, all
        #: links together, are reassembled at once: twice the storage quota
        #: (a snapshot is at most about the quota) and a frame.
        self.max_transfer = 2 * opts.quota_bytes + opts.max_frame
        self.reassembling = 0
        #: When the last fragment of a transfer to this node arrived.
        self.last_fragment = 0.0
        self.xfers = 0
        self.conn_tasks: set[asyncio.Task[None]] = set()
        self.client_routes: OrderedDict[int, tuple[str, Any]] = OrderedDict()
        self.sealer: auth.Sealer | None = None
        # Datagrams sent before this run started are refused: captured ones
        # cannot be replayed to the new run, whose windows are empty (issue 12).
        self.opener = auth.Opener(
            self.key,
            auth.ORIGIN_NODE,
            self.id,
            not_before_ms=time.time_ns() // 1_000_000 - auth.START_SLACK_MS,
        )
        #: Clients of this process (the HTTP gateway, the alarm proposer):
        #: rekeyed with the node when its key file changes.
        self.own_clients: list[AsyncClient] = []
        self.admission = Admission()
        self.ssl_server: ssl.SSLContext | None = None
        self.ssl_client: ssl.SSLContext | None = None
        self.leader_seen: tuple[int, Ballot, float] | None = None
        self.applied_total = 0
        #: Called (synchronously, on the loop) after a cycle that applied
        #: commands: the watch hub's wake-up (no polling delay).
        self.on_applied: list[Callable[[], None]] = []
        #: Clients in this process that submit to this node directly.
        self.local_clients: list[AsyncClient] = []
        #: hooks for the HTTP layer (reply futures of in-process requests)
        self.on_reply: Callable[[ClientReply], bool] | None = None
        #: Histograms and counters for /metrics (net/metrics.py).
        self.metrics = NodeMetrics()
        #: Bytes of the data directory (measured with the quota, every 2 s).
        self.disk_bytes = 0
        self.was_recovering = False
        #: Backups taken on this node (net/backups.py).
        self.backups = Backups(self)

    # ================================================================ lifecycle

    async def start(self) -> None:
        o = self.opts
        loop = asyncio.get_running_loop()
        os.makedirs(o.data_dir, exist_ok=True)
        self.storage = open_storage(
            o.data_dir, Identity(o.cluster_id, self.id, self.cfg.n_acceptors), o.storage_engine
        )
        state = self.storage.load()
        self.node = Node(
            self.cfg,
            self.id,
            state,
            seed=int.from_bytes(os.urandom(8), "big"),
            sm_factory=lambda: TimedStateMachine(self.sm_factory(), self.metrics),
            initial_state=o.initial_cluster_state,
        )
        self.driver = Driver(self.node)
        self.sealer = auth.Sealer(self.key, auth.ORIGIN_NODE, self.id, auth.next_epoch(o.data_dir))
        if o.tls_cert:
            self.ssl_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_server.load_cert_chain(o.tls_cert, o.tls_key)
            self.ssl_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            self.ssl_client.check_hostname = False
            if o.tls_ca:
                # With a CA, a peer proves its name too: the host it is
                # configured under (--acceptors/--learners) must be in its
                # certificate (issue 12: host names were not checked).
                self.ssl_server.load_verify_locations(o.tls_ca)
                self.ssl_server.verify_mode = ssl.CERT_REQUIRED
                self.ssl_client.load_verify_locations(o.tls_ca)
                self.ssl_client.load_cert_chain(o.tls_cert, o.tls_key)
                self.ssl_client.check_hostname = True
            else:
                self.ssl_client.verify_mode = ssl.CERT_NONE
        await self._resolve_all()
        self.udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(o.listen, o.port)
        )
        sock = self.udp.get_extra_info("socket")
        for opt in ("SO_RCVBUF", "SO_SNDBUF"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), 4 << 20)
        self.tcp_server = await loop.create_server(
            self._accept_conn, o.listen, o.port, ssl=self.ssl_server, reuse_address=True
        )
        if o.client_port:
            self.udp_clients, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self, client_port=True), local_addr=(o.listen, o.client_port)
            )
            sock = self.udp_clients.get_extra_info("socket")
            for opt in ("SO_RCVBUF", "SO_SNDBUF"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), 4 << 20)
            self.tcp_clients = await loop.create_server(
                lambda: self._accept_conn(client_port=True),
                o.listen,
                o.client_port,
                ssl=self.ssl_server,
                reuse_address=True,
            )
        self._introduce()
        # Whatever the core produced at construction (an incarnation record).
        self.dirty.set()
        for coro in (self._flusher(), self._ticker(), self._housekeeping(), self._quota_loop()):
            self.tasks.append(asyncio.create_task(coro))
        log.info(
            "node %d up: paxos %s:%d (udp+tcp), data %s, %d acceptors, role %s",
            self.id,
            o.listen,
            o.port,
            o.data_dir,
            self.cfg.n_acceptors,
            self.node.role,
        )

    async def wait(self) -> None:
        """Until stop() or a fatal error; re-raises the fatal error."""
        await self.stopping.wait()
        if self.fatal is not None:
            raise self.fatal

    async def stop(self) -> None:
        self.stopping.set()
        if self.alarm_task is not None:
            self.alarm_task.cancel()
        if self.alarm_client is not None:
            with contextlib.suppress(Exception):
                await self.alarm_client.close()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for tr in (self.udp, self.udp_clients):
            if tr is not None:
                tr.close()
        for srv in (self.tcp_server, self.tcp_clients):
            if srv is not None:
                srv.close()
        for c in [*self.sessions_in.values(), *self.sessions_out.values(), *self.links.values()]:
            c.close()
        self.disk.shutdown(wait=True)
        d = self.driver
        if self.storage is not None and d is not None and d.deferred and self.fatal is None:
            with contextlib.suppress(Exception):
                self.storage.append(d.deferred)  # a clean stop keeps learned decisions
            d.deferred = []
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    def _die(self, e: BaseException) -> None:
        """Fail-stop: a broken invariant or a failed disk. Restarting from the
        disk is always safe; running on is not."""
        if self.fatal is None:
            log.critical("node %d stopping: %r", self.id, e, exc_info=e)
            self.fatal = e
        self.stopping.set()

    # ================================================================ timers

    async def _ticker(self) -> None:
        period = self.opts.tick_ms / 1000
        ticks = 0
        while True:
            # Ticks that were missed (a busy loop, SIGSTOP) are skipped, never
            # run back to back: a starved follower must not rush through its
            # election timeout before it reads the heartbeats waiting for it.
            await asyncio.sleep(period)
            self.last_tick = time.monotonic()
            self.access.flush(self.id)
            if self.access.dropped:
                self.stats["access_log_dropped"] += self.access.dropped
                self.access.dropped = 0
            driver = self.driver
            assert driver is not None
            ticks += 1
            if ticks <= 200 and ticks % 20 == 1:
                self._introduce()  # ten times in the first two seconds
            if self.disk_full:
                continue  # no elections or proposals from a node that cannot write
            try:
                # A leader re-invites (by UDP, in the next Ready) the acceptors
                # that hold no promise session with it: Node.reinvite.
                self.stats["invites"] += driver.tick(self._has_session)
            except Exception as e:
                self._die(e)
                return
            self.dirty.set()
            self._watch_leader()

    def _watch_leader(self) -> None:
        """One log line (and a metric) per leader change this node sees, and
        one when a lost-disk recovery ends."""
        node = self.node
        if node is not None:
            rec = node.recovering
            if rec != self.was_recovering:
                if rec:
                    log.warning("node %d: recovering an empty disk: no vote until a quorum "
                                "told it what it may have promised", self.id,
                                extra={"event": "recovery", "state": "started"})  # fmt: skip
                else:
                    log.info("node %d: recovery done (incarnation %d): voting again", self.id,
                             node.inc, extra={"event": "recovery", "state": "done"})  # fmt: skip
                self.was_recovering = rec
        lead = self.leader()
        ballot = str(self.leader_seen[1]) if self.leader_seen is not None else None
        if self.node is not None and self.node.is_leader:
            b = self.node.status().ballot
            ballot = str(b) if b is not None else ballot
        if self.metrics.saw_leader(lead, ballot):
            if lead is None:
                log.warning("node %d: no leader known", self.id,
                            extra={"event": "leader_lost"})  # fmt: skip
            else:
                ev = {"event": "leader_change", "leader": lead, "ballot": ballot}
                log.info("node %d: leader is now %d (ballot %s)", self.id, lead, ballot, extra=ev)

    def _has_session(self, acceptor: int, ballot: Ballot) -> bool:
        return (acceptor, ballot) in self.sessions_in

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            node = self.node
            assert node is not None
            mine = node.status().ballot
            for (peer, b), c in list(self.sessions_in.items()):
                if b != mine:
                    c.close()  # a session of a ballot we no longer use
                    self.sessions_in.pop((peer, b), None)
            with contextlib.suppress(OSError):
                await self._resolve_all()
            self._reload_key()

    def _reload_key(self) -> None:
        """A rotation: the key file changed. Every key in it is accepted from
        now on, the first one seals; connections open keep theirs."""
        stamp = _stat(self.opts.key_file)
        if stamp == self._key_stamp:
            return
        self._key_stamp = stamp
        try:
            ring = auth.load_key(self.opts.key_file)
            if not ring.has_peer_keys:
                raise ValueError("it holds client credentials only")
        except ValueError as e:
            self._bad("key_file_bad", f"{e}; the keys loaded before stay in force")
            return
        self.key = ring
        self.opener.rekey(ring)
        if self.sealer is not None:
            self.sealer.rekey(ring)
        for c in self.own_clients:
            c.rekey(ring)
        self.stats["key_reloads"] += 1
        log.info(
            "node %d: key file reloaded: keys %s, sending with key %d",
            self.id,
            sorted(ring.masters),
            ring.primary,
        )

    async def _quota_loop(self) -> None:
        """The storage quota, every 2 s and after heavy writes (net/quota.py)."""
        while True:
            self.quota_due.clear()
            self.written_since_check = 0
            try:
                await self._check_quota()
            except Exception as e:  # measuring must never stop the node
                self._bad("quota_check", f"{type(e).__name__}: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.quota_due.wait(), 2.0)

    async def _check_quota(self) -> None:
        """Raise or clear this node's NOSPACE alarm (net/quota.py), and
        compact while it is raised."""
        node, driver, storage = self.node, self.driver, self.storage
        if node is None or driver is None or storage is None:
            return
        loop = asyncio.get_running_loop()
        used = await loop.run_in_executor(self.disk, storage.used_bytes)
        free, total = read_fs(self.opts.data_dir)
        verdict = self.quota.judge(Reading(used, free, total))
        mine = self.id in self._read_alarms()
        if verdict == "over" and not mine:
            self._propose_alarm(True, used, free)
        elif verdict in ("under", "compact") and mine:  # below CLEAR_BELOW of the quota
            self._propose_alarm(False, used, free)
        now = time.monotonic()
        busy = mine or verdict in ("over", "compact")
        if busy and now - self.last_compact >= 1.0:
            self.last_compact = now
            if driver.compact():
                self.stats["compactions"] += 1
                log.info("node %d: storage over its quota: snapshot taken early to compact",
                         self.id, extra={"event": "compaction", "reason": "quota"})  # fmt: skip
                self.dirty.set()
        # For the metrics only, after every decision above: never in their way.
        try:
            self.disk_bytes = await loop.run_in_executor(self.disk, storage.disk_usage)
        except OSError as e:
            self._bad("disk_usage", f"{type(e).__name__}: {e}")

    def _read_alarms(self) -> list[int]:
        """The members whose NOSPACE alarm is raised, as this replica applied it."""
        node = self.node
        answer = node.read_local(ALARMS_QUERY) if node is not None else None
        try:
            alarms = json.loads(answer)["value"] if answer is not None else []
        except (ValueError, KeyError, TypeError):
            alarms = []  # a state machine of the user's own, without alarms
        self.alarms = alarms if isinstance(alarms, list) else []
        return self.alarms

    def _propose_alarm(self, active: bool, used: int, free: int) -> None:
        if self.alarm_task is not None and not self.alarm_task.done():
            return
        log.warning(
            "node %d: %s its NOSPACE alarm (holds %d bytes, quota %d; %d bytes free)",
            self.id,
            "raising" if active else "clearing",
            used,
            self.quota.effective(self.quota.last.total) if self.quota.last else 0,
            free,
        )

        async def go() -> None:
            if self.alarm_client is None:
                c = AsyncClient(
                    self.opts.client_addresses(), self.key, timeout=5.0, ssl=self.ssl_client
                )
                self.alarm_client = await c.connect()
                self.own_clients.append(c)
            try:
                await self.alarm_client.request(Kind.WRITE, encode_alarm(self.id, active))
                self.stats["alarms_raised" if active else "alarms_cleared"] += 1
            except ClientError as e:
                self._bad("alarm_not_proposed", f"{type(e).__name__}: {e}")

        self.alarm_task = asyncio.get_running_loop().create_task(go())

    async def _resolve_all(self) -> None:
        """Host names are resolved here, never on the send path (pod IPs change).

        A name that does not resolve is tried again with a backoff (2 s
        doubling to 30 s): a cluster lists learner slots that may not be
        running (docs/design.md, "Learners come and go"), and those must not
        cost a DNS round every 2 s each. A node that contacts us is resolved
        at once instead (resolve_soon)."""
        now = time.monotonic()
        due = [
            nid for nid in self.cfg.node_ids if self.resolve_retry.get(nid, (0.0, 0.0))[0] <= now
        ]
        await asyncio.gather(*(self._resolve(nid) for nid in due))

    async def _resolve(self, nid: int) -> None:
        host, port = self.opts.addr_of(nid)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError:
            infos = []
        for fam, _t, _p, _c, sa in infos:
            if fam == socket.AF_INET:
                addr = (str(sa[0]), int(sa[1]))
                if self.dns_answer.get(nid) != addr or nid not in self.resolved:
                    self.resolved[nid] = addr
                self.dns_answer[nid] = addr
                self.resolve_retry.pop(nid, None)
                return
        self.stats["resolve_errors"] += 1
        # Keep the last known address (a name may vanish briefly while its
        # pod restarts); retry later with a growing pause.
        pause = min(30.0, 2 * self.resolve_retry.get(nid, (0.0, 1.0))[1])
        self.resolve_retry[nid] = (time.monotonic() + pause, pause)

    def learn_addr(self, nid: int, ip: str) -> None:
        """An authenticated message from node ``nid`` came from ``ip``: that is
        where it is now. A restarted pod has a new IP before DNS says so;
        without this, the leader's heartbeats would go to the old address,
        and the restarted node would time out and start an election. Only
        authenticated, fresh datagrams get here (past the anti-replay window),
        sent from the peer's own protocol port: a third party cannot forge one
        (one that races a captured datagram here from elsewhere misdirects us
        only until the peer's next datagram). TCP connections are not used: their source address
        is picked by routing, not by the peer's listening socket."""
        if not self.opts.learn_addresses or nid == self.id or not self.cfg.is_node(nid):
            return
        if not ip or ip == "?":
            return
        addr = (ip, self.opts.addr_of(nid)[1])
        if self.resolved.get(nid) != addr:
            self.resolved[nid] = addr
            self.resolve_retry.pop(nid, None)
            self.stats["addresses_learned"] += 1

    def _port_of(self, nid: int) -> int:
        return self.opts.addr_of(nid)[1] if self.cfg.is_node(nid) else -1

    def _introduce(self) -> None:
        """Tell every other node where we are now: an empty, authenticated
        datagram from our protocol socket (learn_addr on the other side). A
        restarted pod is thereby reachable at once, before DNS catches up,
        so the leader's heartbeats reach it before its election timeout.
        Sent a few times after start (a datagram may be lost)."""
        if self.udp is None or self.sealer is None:
            return
        for nid in self.cfg.node_ids:
            addr = self.resolved.get(nid)
            if nid != self.id and addr is not None:
                self._udp_out([], addr, auth.ORIGIN_NODE, nid)

    def resolve_soon(self, nid: int) -> None:
        """An authenticated peer we cannot reach yet (a learner that just
        started, a pod with a new IP) contacted us: look its name up now."""
        if nid == self.id or nid in self.resolving or not self.cfg.is_node(nid):
            return
        self.resolving.add(nid)

        async def go() -> None:
            try:
                await self._resolve(nid)
            finally:
                self.resolving.discard(nid)

        task = asyncio.get_running_loop().create_task(go())
        self.conn_tasks.add(task)
        task.add_done_callback(self.conn_tasks.discard)

    # ================================================================ the Ready loop

    async def _flusher(self) -> None:
        """The Ready loop (paxosrsm.driver): one cycle at a time, fsync, send."""
        loop = asyncio.get_running_loop()
        driver = self.driver
        storage = self.storage
        assert driver is not None and storage is not None
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                fl = driver.cycle()
            except Exception as e:
                self._die(e)
                return
            if fl.more:
                self.dirty.set()  # the next wave goes out in the next cycle
            if fl.arm_deferred:
                loop.call_later(self.opts.tick_ms / 1000, self._flush_deferred)
            if fl.records:
                written = 0
                for rec in fl.records:
                    self.rec_out[type(rec).__name__] += 1
                    if isinstance(rec, AcceptRec | DecideRec):
                        written += sum(len(c.payload) for c in rec.value)
                self.written_since_check += written
                last = self.quota.last
                quota = self.quota.effective(last.total) if last else self.opts.quota_bytes
                if self.written_since_check * 16 >= quota:
                    self.quota_due.set()
                t0 = time.perf_counter()
                try:
                    await self._append(storage, fl.records)
                except Exception as e:  # a failed fsync: the disk cannot be trusted
                    self._die(e)
                    return
                driver.fsynced(fl.records)
                now = time.perf_counter()
                dt = now - t0
                self.stats["fsyncs"] += 1
                self.fsync_seconds.append(dt)
                if len(self.fsync_seconds) > 4096:
                    del self.fsync_seconds[:2048]
                m = self.metrics
                m.fsync.observe(dt)
                if m.accept_sent:
                    for rec in fl.records:
                        if type(rec) is DecideRec:
                            m.decided(rec.slot, now)
                snaps = [rec for rec in fl.records if type(rec) is SnapshotRec]
                if snaps:
                    m.snap_save.observe(dt)
                    slot = snaps[-1].snapshot.slot
                    log.info("node %d: snapshot at slot %d written, log trimmed below it "
                             "(%.1f ms)", self.id, slot, dt * 1000,
                             extra={"event": "snapshot", "slot": slot})  # fmt: skip
            if fl.committed:
                self.applied_total += len(fl.committed)
                self.metrics.applied(len(fl.committed))
            if fl.leadership is not None:
                st = driver.node.status()
                if fl.leadership:
                    log.info("node %d leads at ballot %s", self.id, st.ballot,
                             extra={"event": "lead", "ballot": str(st.ballot)})  # fmt: skip
                else:
                    self.stats["leadership_lost"] += 1
                    self.metrics.proposals_failed.inc(st.in_flight)
                    self.metrics.lost_lead()
                    ev = {"event": "lead_lost", "leader_hint": st.leader_hint}
                    log.info("node %d no longer leads (leader hint %s)", self.id, st.leader_hint,
                             extra=ev)  # fmt: skip
            try:
                self._send_all(fl.messages, fl.replies)
            except Exception as e:
                self._die(e)
                return
            if fl.committed:
                for cb in self.on_applied:
                    cb()
            self._close_superseded_sessions()

    async def _append(self, storage: Storage, records: list[Record]) -> None:
        """Make ``records`` durable. A full disk is not fatal: the same
        records are written again every second until they fit (the append
        is one transaction, rolled back on failure, and idempotent), and
        meanwhile the node takes no peer traffic (``disk_full``): to the
        others it is a crashed node, which they tolerate. The messages that
        wait on these records are sent only once they are durable."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self.disk, storage.append, records)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                if not self.disk_full:
                    log.error("node %d: disk full (%s); retrying every second", self.id, e)
                self.disk_full = True
                self.stats["disk_full_retries"] += 1
                await asyncio.sleep(1.0)
                continue
            if self.disk_full:
                log.warning("node %d: the disk has room again; back in the cluster", self.id)
                self.disk_full = False
            return

    def _flush_deferred(self) -> None:
        if self.driver is not None and self.driver.flush_deferred():
            self.dirty.set()

    # ================================================================ outgoing

    def _send_all(self, messages: list[Envelope], replies: list[ClientReply]) -> None:
        udp: dict[int, list[PeerMessage]] = {}
        tcp: dict[tuple[str, int, Ballot | None], list[PeerMessage]] = {}
        now = time.perf_counter()
        receiving = self._receiving_transfer()
        for env in messages:
            msg, dst = env.msg, env.dst
            if receiving and type(msg) is CatchupRequest:
                # A snapshot is arriving in fragments: asking again (the
                # core's retransmit timer) would make a peer encode and send
                # the whole state once more. Dropped, as the network may.
                self.stats["catchup_deferred"] += 1
                continue
            self.msg_out[type(msg).__name__] += 1
            if type(msg) is Accept:
                self.metrics.accept_out(msg.slot, now)
            if dst == self.id:
                asyncio.get_running_loop().call_soon(self._deliver_local, msg)
                continue
            ch = channel(msg)
            if ch == UDP:
                udp.setdefault(dst, []).append(msg)
            elif ch == TO_PROPOSER:
                assert isinstance(msg, SESSION_TO_PROPOSER)
                tcp.setdefault(("out", dst, msg.ballot), []).append(msg)
            elif ch == TO_ACCEPTOR:
                assert isinstance(msg, SESSION_TO_ACCEPTOR)
                tcp.setdefault(("in", dst, msg.ballot), []).append(msg)
            else:  # catch-up
                tcp.setdefault(("link", dst, None), []).append(msg)
        # One encoding per message, however many peers it goes to (a leader's
        # Accept goes to every acceptor).
        cache: dict[int, bytes] = {}
        for dst, msgs in udp.items():
            self._send_udp(dst, msgs, cache)
        for (kind, dst, b), msgs in tcp.items():
            if kind == "in":
                assert b is not None
                c = self.sessions_in.get((dst, b))
                if c is None or c.closed:
                    self.stats["no_session"] += len(msgs)  # retransmitted after a promise
                    continue
                self._send_frames(c, msgs, cache)
            elif kind == "out":
                assert b is not None
                self._send_session(dst, b, msgs, cache)
            else:
                self._send_link(dst, msgs, cache)
        if replies:
            self._send_replies(replies)

    def _send_frames(self, c: FramedConn, msgs: list[PeerMessage], cache: dict[int, bytes]) -> None:
        """Send ``msgs`` on ``c`` in as many frames as the frame limit needs
        (each message is encoded once, however many peers it goes to). A
        single message over the limit is dropped and counted: the receiver
        would refuse the frame and break the connection."""
        limit = self.opts.max_frame - 16
        batch: list[bytes] = []
        size = 0
        for m in msgs:
            if type(m) is CatchupReply and m.snapshot is not None and len(m.snapshot.state) > limit:
                # A snapshot larger than a frame: in fragments, its state
                # never copied into one encoded message.
                if c.meta.get("xfer"):
                    # This link is already carrying it: a repeated request.
                    self.stats["transfer_busy"] += 1
                    continue
                try:
                    parts = codec.encode_parts(m)
                except ProtocolError as err:
                    self._bad("oversized_outgoing", str(err))
                    continue
                total = sum(map(len, parts))
                if total <= self.max_transfer:
                    self._send_fragments(c, parts)
                else:
                    self._bad("oversized_outgoing", f"CatchupReply of {total} bytes not sent")
                continue
            e = cache.get(id(m))
            if e is None:
                e = cache[id(m)] = codec.encode(m)
            if len(e) > limit:
                if type(m) is CatchupReply and len(e) <= self.max_transfer:
                    self._send_fragments(c, [e])  # many entries
                else:
                    self._bad(
                        "oversized_outgoing", f"{type(m).__name__} of {len(e)} bytes not sent"
                    )
                continue
            if batch and size + len(e) > limit:
                c.send(codec.pack_encoded(batch))
                batch, size = [], 0
            batch.append(e)
            size += len(e)
        if batch:
            c.send(codec.pack_encoded(batch))

    def _send_fragments(self, c: FramedConn, parts: list[bytes]) -> None:
        """Send one encoded message larger than a frame (a catch-up reply
        carrying a snapshot; ``parts`` joined are its encoding) as
        fragments, one transfer at a time per link,
        paced by the link's write buffer (a frame of at most --max-frame
        each; the receiver reassembles it: ``_reassemble``)."""
        if c.meta.get("xfer"):
            self.stats["transfer_busy"] += 1  # the learner asks again
            return
        c.meta["xfer"] = True
        self.xfers += 1
        task = asyncio.get_running_loop().create_task(self._fragments(c, parts, self.xfers))
        self.conn_tasks.add(task)
        task.add_done_callback(self.conn_tasks.discard)

    async def _fragments(self, c: FramedConn, parts: list[bytes], xfer: int) -> None:
        size = self.opts.max_frame - 64
        total = sum(map(len, parts))
        n = -(-total // size)
        try:
            for i, pieces in enumerate(_slices(parts, size)):
                # Before the handshake, and while the peer has not read half
                # of what the link may hold unsent, wait (FramedConn.send
                # breaks a link whose peer does not read).
                while not c.closed and (
                    c.transport is None
                    or c.mac is None
                    or c.transport.get_write_buffer_size() > c.max_unsent // 2
                ):
                    await asyncio.sleep(0.002)
                head = FRAGMENT + _FRAG.pack(xfer, i, n, total)
                if c.closed or not c.send_parts([head, *pieces]):
                    self.stats["transfers_broken"] += 1
                    return
            self.stats["transfers_sent"] += 1
        finally:
            c.meta["xfer"] = False

    def _reassemble(self, conn: FramedConn, body: bytes | memoryview) -> bytes | None:
        """One fragment of a transfer (``_fragments``) on a peer link. In
        order, one transfer at a time per link, at most ``max_transfer``
        bytes in all links together; anything else breaks the link (TCP
        keeps order: a gap means a confused or hostile peer; counted as
        ``malformed``, the log line says why). Returns the
        whole message, as a frame of one, once its last fragment is in."""
        meta = conn.meta
        try:
            xfer, i, n, total = _FRAG.unpack_from(body, 1)
        except struct.error:
            xfer, i, n, total = -1, -1, 0, 0
        piece = body[1 + _FRAG.size :]
        self.last_fragment = time.monotonic()
        st = meta.get("frag")
        if i == 0 and st is None:
            if not 2 <= n <= total or total > self.max_transfer - self.reassembling:
                self._bad("malformed", f"a transfer of {total} bytes in {n} fragments from "
                          f"{conn.peer} ({self.reassembling} bytes being reassembled)")  # fmt: skip
                conn.close()
                return None
            st = meta["frag"] = [xfer, n, total, [], 0]
            self.reassembling += total
        elif st is None or (xfer, n, total) != (st[0], st[1], st[2]) or i != len(st[3]):
            self._bad("malformed", f"fragment {i}/{n} of {xfer} from {conn.peer} out of order")
            self._drop_reassembly(conn)
            conn.close()
            return None
        st[3].append(piece)
        st[4] += len(piece)
        if st[4] > st[2] or (i == n - 1 and st[4] != st[2]):
            self._bad("malformed", f"transfer {xfer} from {conn.peer}: {st[4]} bytes of {st[2]}")
            self._drop_reassembly(conn)
            conn.close()
            return None
        if i < n - 1:
            return None
        self._drop_reassembly(conn)
        self.stats["transfers_received"] += 1
        # As codec.pack_encoded([whole]) (0x91: a msgpack array of one), in one copy.
        return b"".join([b"\x91", *st[3]])

    def _receiving_transfer(self) -> bool:
        """A transfer to this node is under way: part of it is held and a
        fragment came within the last 5 s (a stalled one stops counting, and
        its link's close drops it)."""
        return self.reassembling > 0 and time.monotonic() - self.last_fragment < 5.0

    def _drop_reassembly(self, conn: FramedConn) -> None:
        st = conn.meta.pop("frag", None)
        if st is not None:
            self.reassembling -= st[2]

    def _send_udp(self, dst: int, msgs: list[PeerMessage], cache: dict[int, bytes]) -> None:
        addr = self.resolved.get(dst)
        if addr is None or self.udp is None or self.sealer is None:
            self.stats["unresolved"] += 1
            return
        limit = self.opts.max_datagram - auth.OVERHEAD
        batch: list[Any] = []
        size = 0
        for m in msgs:
            enc = cache.get(id(m))
            if enc is None:
                enc = cache[id(m)] = codec.encode(m)
            if len(enc) > limit:
                self._send_link(dst, [m], cache)  # too big for a datagram
                continue
            if size + len(enc) + 8 > limit and batch:
                self._udp_out(batch, addr, auth.ORIGIN_NODE, dst)
                batch, size = [], 0
            batch.append(enc)
            size += len(enc)
        if batch:
            self._udp_out(batch, addr, auth.ORIGIN_NODE, dst)

    def _udp_out(
        self, encoded: list[bytes], addr: tuple[str, int], dst_origin: int, dst: int
    ) -> None:
        assert self.sealer is not None and self.udp is not None
        body = codec.pack_encoded(encoded)
        try:
            sealed = self.sealer.seal(body, dst_origin, dst)
        except auth.AuthError as e:  # no pair key with that node (identity mode)
            self._bad("no_key", str(e))
            return
        self.udp.sendto(sealed, addr)

    def _connect(
        self, dst: int, hello: list[Any], on_lost: Callable[[FramedConn], None]
    ) -> FramedConn | None:
        """Start a connection; frames sent before it is up wait in memory."""
        addr = self.resolved.get(dst)
        if addr is None:
            self.stats["unresolved"] += 1
            return None
        loop = asyncio.get_running_loop()
        conn = FramedConn(
            self.key,
            self.opts.max_frame,
            hello=hello,
            on_frame=self._on_frame,
            on_lost=on_lost,
            on_bad=self._bad,
            peer_id=dst,
        )
        conn.meta = {"peer": dst}

        async def go() -> None:
            try:
                await loop.create_connection(
                    lambda: conn,
                    addr[0],
                    addr[1],
                    ssl=self.ssl_client,
                    server_hostname=self.opts.addr_of(dst)[0] if self.ssl_client else None,
                )
            except OSError:
                self.stats["connect_errors"] += 1
                conn.closed = True
                on_lost(conn)
                self.resolve_soon(dst)  # the name may point elsewhere now

        task = loop.create_task(go())
        self.conn_tasks.add(task)
        task.add_done_callback(self.conn_tasks.discard)
        return conn

    def _send_session(
        self, dst: int, b: Ballot, msgs: list[PeerMessage], cache: dict[int, bytes]
    ) -> None:
        """Acceptor side: the promise session to proposer ``dst`` for ballot ``b``."""
        key = (dst, b)
        c = self.sessions_out.get(key)
        if c is None or c.closed:
            if not any(isinstance(m, Promise) for m in msgs):
                self.stats["no_session"] += len(msgs)  # only a Promise opens a session
                return
            for (p, ob), old in list(self.sessions_out.items()):
                if p == dst and ob < b:
                    old.close()
                    self.sessions_out.pop((p, ob), None)

            def lost(conn: FramedConn, key: tuple[int, Ballot] = key) -> None:
                if self.sessions_out.get(key) is conn:
                    self.sessions_out.pop(key, None)

            c = self._connect(
                dst, ["hello", 1, auth.ORIGIN_NODE, self.id, "session", [b.round, b.node]], lost
            )
            if c is None:
                return
            c.meta.update(kind="session-out", ballot=b)
            self.sessions_out[key] = c
        self._send_frames(c, msgs, cache)

    def _send_link(
        self, dst: int, msgs: list[PeerMessage], cache: dict[int, bytes] | None = None
    ) -> None:
        c = self.links.get(dst)
        if c is None or c.closed:

            def lost(conn: FramedConn) -> None:
                if self.links.get(dst) is conn:
                    self.links.pop(dst, None)

            c = self._connect(dst, ["hello", 1, auth.ORIGIN_NODE, self.id, "peer", None], lost)
            if c is None:
                return
            c.meta.update(kind="link-out")
            self.links[dst] = c
        self._send_frames(c, msgs, {} if cache is None else cache)

    def _close_superseded_sessions(self) -> None:
        """The seed: a higher prepare breaks the session of the lower ballot."""
        node = self.node
        assert node is not None
        if not self.sessions_out:
            return
        promised = node.status().promised
        if promised is None:
            return
        for key, c in list(self.sessions_out.items()):
            if key[1] < promised:
                c.close()
                self.sessions_out.pop(key, None)
                self.stats["sessions_broken"] += 1

    def _send_replies(self, replies: list[ClientReply]) -> None:
        by_route: dict[tuple[str, Any], list[bytes]] = {}
        limit = self.opts.max_datagram - auth.OVERHEAD
        for r in replies:
            if r.status == Status.BUSY:
                self.metrics.proposals_failed.inc()
            if self.on_reply is not None and self.on_reply(r):
                continue
            if any(c.take_reply(r) for c in self.local_clients):
                continue  # a client in this process (the HTTP and gRPC APIs)
            route = self.client_routes.get(r.client_id)
            if route is None:
                self.stats["reply_no_route"] += 1
                continue
            enc = codec.encode(r)
            if route[0] == "udp" and len(enc) + 8 > limit:
                # The client cannot take it by UDP: it asks again over TCP.
                self.stats["replies_too_large"] += 1
                big = ClientReply(r.client_id, r.seq, Status.TOO_LARGE, b"", r.leader_hint)
                enc = codec.encode(big)
            by_route.setdefault(route, []).append(enc)
        assert self.sealer is not None
        for (kind, where), encs in by_route.items():
            if kind == "tcp":
                conn: FramedConn = where
                conn.send(codec.pack_encoded(encs))
                continue
            batch: list[bytes] = []
            size = 0
            for e in encs:
                if size + len(e) + 8 > limit and batch:
                    self._udp_reply(batch, where)
                    batch, size = [], 0
                batch.append(e)
                size += len(e)
            if batch:
                self._udp_reply(batch, where)

    def _udp_reply(self, encoded: list[bytes], where: tuple[Any, ...]) -> None:
        """Replies go out of the socket the request came in on (a Service's
        UDP translation expects them from that port)."""
        assert self.sealer is not None
        addr, client, via_client_port = where
        t = self.udp_clients if via_client_port else self.udp
        assert t is not None
        t.sendto(self.sealer.seal(codec.pack_encoded(encoded), auth.ORIGIN_CLIENT, client), addr)

    # ================================================================ incoming

    def _bad(self, reason: str, detail: str) -> None:
        self.stats[f"dropped_{reason}"] += 1
        self.rlog.warn(reason, detail)

    def on_datagram(
        self, data: bytes, addr: tuple[str, int], via_client_port: bool = False
    ) -> None:
        self.stats["datagrams_in"] += 1
        if not self.admission.admit(addr[0]):
            # An unknown source over its budget: dropped before any work.
            self._bad("rate_limited", f"unauthenticated datagrams from {addr[0]}")
            return
        if len(data) > self.opts.max_datagram:
            self._bad("oversized_datagram", f"{len(data)} bytes from {addr}")
            return
        try:
            origin, sender, body = self.opener.open(data)
        except auth.AuthError as e:
            reason = (
                "replayed"
                if isinstance(e, auth.ReplayError)
                else "stale"
                if isinstance(e, auth.StaleError)
                else "unauthenticated"
            )
            self._bad(reason, f"{addr[0]}:{addr[1]}: {e}")
            return
        if self.opts.client_port and via_client_port != (origin == auth.ORIGIN_CLIENT):
            # Each port takes its own traffic only (issue 12): the client
            # port (what a Service exposes) never reaches the peer protocol.
            self._bad("wrong_port", f"{addr[0]}:{addr[1]}: origin {origin} on the wrong port")
            return
        self.admission.trust(addr[0])
        if origin == auth.ORIGIN_NODE and addr[1] == self._port_of(sender):
            self.learn_addr(sender, addr[0])
        if origin == auth.ORIGIN_CLIENT:
            node = self.node
            if node is not None and node.queued >= self.opts.max_pending:
                # Load shedding at the door, before any decoding: a leader
                # with this much queued must keep its heartbeats and Accepts
                # flowing, or followers take it for dead. The requests never
                # entered, so their clients retry (same seq) on their timers.
                self.stats["shed_datagrams"] += 1
                return
        try:
            msgs = codec.decode_many(body)
        except ProtocolError as e:
            self._bad("malformed", f"{addr[0]}:{addr[1]}: {e}")
            return
        if origin == auth.ORIGIN_CLIENT:
            self._client_msgs(sender, msgs, ("udp", (addr, sender, via_client_port)))
            return
        for m in msgs:
            if not isinstance(m, _UDP_TYPES):
                self._bad("wrong_channel", f"{type(m).__name__} by UDP from node {sender}")
                continue
            self._step(sender, m)

    def _client_msgs(self, sender: int, msgs: list[Any], route: tuple[str, Any]) -> None:
        driver = self.driver
        assert driver is not None
        for m in msgs:
            if not isinstance(m, ClientRequest):
                self._bad("malformed", f"client {sender} sent {type(m).__name__}")
                continue
            # Replies go back the way the request came (one client process may
            # hold many client ids: one per request in flight).
            self.client_routes[m.client_id] = route
            self.client_routes.move_to_end(m.client_id)
            if len(self.client_routes) > MAX_CLIENT_ROUTES:
                self.client_routes.popitem(last=False)
            self.msg_in["ClientRequest"] += 1
            if m.kind == Kind.WRITE:
                self.access.write(_who(route), m.client_id, m.seq, m.payload)
            if self.disk_full:
                self._bad("disk_full", "client request while the disk is full")
                continue
            try:
                driver.client(m, revalidate=False)  # built by the codec
            except ProtocolError as e:
                self._bad("refused", f"client {sender}: {e}")
            except Exception as e:
                self._die(e)
                return
        self.dirty.set()

    def submit_local(self, req: ClientRequest) -> None:
        """A request from this process (the HTTP and gRPC APIs' client); its
        reply goes to that client's ``take_reply``. Dropped while the node
        cannot take it (starting, disk full): the client's timer retries."""
        driver = self.driver
        if driver is None or self.disk_full or self.stopping.is_set():
            self.stats["local_requests_dropped"] += 1
            return
        try:
            driver.client(req)
        except ProtocolError as e:
            self._bad("refused", f"local client request: {e}")
            return
        self.dirty.set()

    def _step(self, src: int, m: PeerMessage) -> None:
        driver = self.driver
        assert driver is not None
        self.msg_in[type(m).__name__] += 1
        if self.disk_full:
            self._bad("disk_full", f"{type(m).__name__} from node {src} while the disk is full")
            return
        try:
            driver.step(src, m, revalidate=False)  # the codec built m through its constructor
        except ProtocolError as e:
            self._bad("refused", f"{type(m).__name__} from node {src}: {e}")
            return
        except (SafetyViolation, Exception) as e:
            self._die(e)
            return
        if isinstance(m, Heartbeat | Accept):  # only once the core accepted it
            self.leader_seen = (m.ballot.node, m.ballot, time.monotonic())
        if src not in self.resolved:
            self.resolve_soon(src)  # an authenticated peer we could not answer yet
        self.dirty.set()

    def _deliver_local(self, m: PeerMessage) -> None:
        if not self.stopping.is_set():
            self._step(self.id, m)

    def _accept_conn(self, client_port: bool = False) -> FramedConn:
        """A connection to the peer port. At most ``max_inbound`` at once (a
        share of the descriptor budget), of which at most
        MAX_UNAUTHENTICATED still in their handshake: a stranger's
        connections are refused before they cost more than a descriptor,
        and the node keeps what storage and snapshots need."""
        refuse: str | None = None
        if len(self.inbound) >= self.max_inbound:
            refuse = "conn_limit"
        elif sum(1 for c in self.inbound if c.mac is None) >= MAX_UNAUTHENTICATED:
            refuse = "handshake_limit"
        conn = FramedConn(
            self.key,
            self.opts.max_frame,
            on_hello=self._on_hello,
            on_frame=self._on_frame,
            on_lost=self._on_conn_lost,
            on_bad=self._bad,
            refuse=refuse,
        )
        conn.meta["port"] = "client" if client_port else "peer"
        if refuse is None:
            self.inbound.add(conn)
        return conn

    def _on_hello(self, conn: FramedConn, h: list[Any]) -> bool:
        # ["hello", 1, origin, sender, kind, ballot]
        if len(h) != 6 or h[1] != 1 or type(h[3]) is not int:
            return False
        origin, sender, kind, b = h[2], h[3], h[4], h[5]
        if self.opts.client_port and (conn.meta.get("port") == "client") != (kind == "client"):
            self.stats["dropped_wrong_port"] += 1
            return False  # each port takes its own kind of connection (issue 12)
        if origin == auth.ORIGIN_CLIENT and kind == "client":
            conn.meta = {"kind": "client", "peer": sender}
            return True
        if origin != auth.ORIGIN_NODE or not self.cfg.is_node(sender) or sender == self.id:
            return False
        if kind == "peer":
            conn.meta = {"kind": "link-in", "peer": sender}
            return True
        if kind == "session" and type(b) is list and len(b) == 2:
            node = self.node
            assert node is not None
            if sender >= self.cfg.n_acceptors or not (node.role & (Role.PROPOSER | Role.ACCEPTOR)):
                return False
            try:
                ballot = Ballot(b[0], b[1])
            except ProtocolError:
                return False
            if ballot.node != self.id:
                return False
            # Registered on its first authenticated frame (see _on_frame): a
            # replayed hello alone must not displace a live session.
            conn.meta = {"kind": "session-in", "peer": sender, "ballot": ballot}
            return True
        return False

    def _on_frame(self, conn: FramedConn, body: bytes | memoryview) -> None:
        meta = conn.meta
        kind = meta.get("kind")
        peer = meta.get("peer")
        big = body[:1] == FRAGMENT
        if big:
            if kind not in ("link-in", "link-out"):
                self._bad("malformed", f"a fragment on a {kind} connection from {conn.peer}")
                conn.close()
                return
            whole = self._reassemble(conn, body)
            if whole is None:
                return
            body = whole
        try:
            msgs = codec.decode_many(body, big)
        except ProtocolError as e:
            self._bad("malformed", f"frame from {conn.peer}: {e}")
            conn.close()
            return
        if kind == "client":
            assert isinstance(peer, int)
            self._client_msgs(peer, msgs, ("tcp", conn))
            return
        assert isinstance(peer, int)
        for m in msgs:
            if kind == "session-in":
                b = meta["ballot"]
                if not isinstance(m, _SESSION_TO_PROPOSER) or m.ballot != b:
                    self._bad("wrong_channel", f"{type(m).__name__} on session {b} of {peer}")
                    continue
                if not meta.get("registered"):
                    meta["registered"] = True
                    old = self.sessions_in.get((peer, b))
                    if old is not None and old is not conn:
                        old.meta["registered"] = False
                        old.close()
                    self.sessions_in[(peer, b)] = conn
            elif kind == "session-out":
                b = meta["ballot"]
                if not isinstance(m, _SESSION_TO_ACCEPTOR) or m.ballot != b:
                    self._bad("wrong_channel", f"{type(m).__name__} on session {b} to {peer}")
                    continue
            elif kind in ("link-in", "link-out"):
                if not isinstance(m, CatchupRequest | CatchupReply | Heartbeat | HeartbeatAck
                                  | Prepare | Nack):  # fmt: skip
                    self._bad("wrong_channel", f"{type(m).__name__} on a peer link from {peer}")
                    continue
            else:
                continue
            self._step(peer, m)

    def _on_conn_lost(self, conn: FramedConn) -> None:
        self.inbound.discard(conn)
        self._drop_reassembly(conn)
        meta = conn.meta
        if meta.get("kind") == "session-in" and meta.get("registered"):
            peer, b = meta["peer"], meta["ballot"]
            if self.sessions_in.get((peer, b)) is conn:
                self.sessions_in.pop((peer, b), None)
            node = self.node
            assert node is not None
            self.stats["sessions_lost"] += 1
            try:
                node.session_lost(peer, b)
            except Exception as e:
                self._die(e)
                return
            self.dirty.set()
        elif meta.get("kind") == "client":
            peer = meta.get("peer")
            if isinstance(peer, int) and self.client_routes.get(peer) == ("tcp", conn):
                self.client_routes.pop(peer, None)

    # ================================================================ status

    def is_ready(self) -> bool:
        """Readiness: caught up, knows a leader, and not recovering a lost disk."""
        node = self.node
        if node is None or node.recovering:
            return False
        return self._ready(node.status())

    def _ready(self, st: NodeStatus) -> bool:
        if st.recovering:
            return False
        if "learner" in st.roles and st.decided - st.applied > max(128, 2 * self.cfg.window):
            return False
        return self.leader() is not None

    def leader(self) -> int | None:
        node = self.node
        if node is None:
            return None
        if node.is_leader:
            return self.id
        if self.leader_seen is None:
            return None
        lid, _b, at = self.leader_seen
        horizon = 3 * self.cfg.election_ticks * self.opts.tick_ms / 1000
        return lid if time.monotonic() - at < horizon else None

    def status(self) -> dict[str, Any]:
        node = self.node
        assert node is not None
        st = node.status()
        learner = "learner" in st.roles
        ballot = None
        if st.is_leader and st.ballot is not None:
            ballot = str(st.ballot)
        elif self.leader_seen is not None:
            ballot = str(self.leader_seen[1])
        decided, applied = st.decided, st.applied
        fs = sorted(self.fsync_seconds[-512:])
        return {
            "node_id": self.id,
            "cluster_id": self.opts.cluster_id,
            "address": "{}:{}".format(*self.opts.addr_of(self.id)),
            "roles": list(st.roles),
            "leader": self.leader(),
            "is_leader": st.is_leader,
            "ballot": ballot,
            "promised": str(st.promised) if st.promised is not None else None,
            "decided": decided,
            "applied": applied,
            "lag": max(0, decided - applied) if learner else None,
            "snapshot_slot": st.snapshot_slot,
            "recovering": st.recovering,
            "incarnation": st.incarnation,
            "ready": self._ready(st),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "fsync_p50_ms": round(fs[len(fs) // 2] * 1000, 3) if fs else None,
            "fsync_p99_ms": round(fs[int(len(fs) * 0.99)] * 1000, 3) if fs else None,
            "storage": self._storage_status(),
            # The key file as this node runs it (the operator's key rotation
            # advances once every member runs the file as it stands).
            "keys": sorted(self.key.masters),
            # Identity mode: the nodes this one holds pair keys with.
            "identity": self.key.identity,
            "pair_peers": sorted({j for row in self.key.pairs.values() for j in row}),
            "key_primary": self.key.primary,
            "counters": dict(self.stats),
        }

    def _storage_status(self) -> dict[str, Any]:
        r = self.quota.last
        return {
            "used_bytes": r.used if r else None,
            "free_bytes": r.free if r else None,
            "quota_bytes": self.quota.effective(r.total) if r else self.opts.quota_bytes,
            "reserve_bytes": self.quota.reserve(r.total) if r else None,
            "disk_full": self.disk_full,
            # Members whose NOSPACE alarm is raised (replicated): while any
            # is, the cluster takes only reads and deletes.
            "alarms": self._read_alarms(),
        }
