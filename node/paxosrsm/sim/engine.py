"""The deterministic simulator: the real core on a seeded network, clock and disk.

Everything random comes from one ``random.Random(seed)``; events run in
(time, sequence) order from one heap; so a seed replays the same run exactly
(TigerBeetle's VOPR and FoundationDB's simulation follow the same plan).

What it models:
  * network: loss, duplication, delay (hence reordering), symmetric and
    asymmetric partitions, per directed link;
  * clock: simulated microseconds; each node ticks on its own phase;
  * disk: records written by a Ready become durable only when their fsync
    completes (FIFO, with latency); a crash loses everything not yet durable,
    and the messages that were waiting on it;
  * faults: crash + restart, pause + resume, and wipe (empty disk, same id).

Issue 11 made it drive the node the way the runtime does and widened its
faults (docs/design.md, section 10):
  * one driver (paxosrsm.driver) for both: steps and ticks between flusher
    cycles, learner records sent before their fsync, the promise sessions of
    the seed's transport with the leader's re-invites;
  * long holds: a message may arrive seconds late, after its sender or its
    receiver crashed, restarted or lost its disk (and a paused process keeps
    the datagrams it was sent);
  * sizes: values up to 1 MiB, every message measured by the wire codec
    against the runtime's frame and datagram limits;
  * storage: a torn final batch (the journal drops it), a lost fsync, a
    corrupt record (detected by its checksum: the node refuses to start and
    rejoins with an empty disk), ENOSPC (the node stops, as the runtime does);
  * per-node clock skew; acceptor-only, proposer-only and learner-only nodes;
  * BUGGIFY: late flusher cycles, a wipe racing an election, stale messages
    of a crashed or wiped node held back;
  * Node.check_invariants() after every input.
"""

from __future__ import annotations

import heapq
import json
import pickle
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..check.linearizability import CheckResult, Op, check_history
from ..client.core import Completion, Outcome
from ..client.core import SessionClient as Client
from ..config import ClusterConfig, Role
from ..driver import TO_ACCEPTOR, TO_PROPOSER, UDP, Driver, Flush, channel
from ..messages import (
    Accept,
    Accepted,
    CatchupRequest,
    ClientReply,
    ClientRequest,
    Envelope,
    Fenced,
    PeerMessage,
    Prepare,
    Promise,
    RecoverPrepare,
)
from ..net import codec as wire
from ..node import Node
from ..outbox import SafetyViolation
from ..records import AcceptRec, DurableState, Record, RecoveryRec
from ..statemachine import encode_op
from ..types import MAX_PAYLOAD_BYTES, Ballot, Kind, Value

SESSION_MSGS = (Promise, Accepted, Fenced, Accept)

US = 1
MS = 1000 * US
SEC = 1000 * MS


class SimulationFailure(AssertionError):
    #: Simulated microseconds when it failed.
    sim_us = 0

    def __init__(self, seed: int, what: str) -> None:
        super().__init__(
            f"simulation seed={seed} failed: {what}\n"
            f"  replay with: python -m paxosrsm.sim run --seed {seed} -v"
        )
        self.seed = seed
        self.what = what


@dataclass
class SimParams:
    """Knobs for one run; ``SimParams.random(rng)`` draws a mixed-fault profile."""

    cfg: ClusterConfig = field(default_factory=ClusterConfig)
    clients: int = 3
    keys: tuple[str, ...] = ("a", "b", "c")
    tick_us: int = 10 * MS
    min_delay_us: int = 200 * US
    max_delay_us: int = 3 * MS
    fsync_us: int = 1 * MS
    loss: float = 0.0
    dup: float = 0.0
    #: Faults are injected during [0, fault_until); then everything heals.
    fault_until_us: int = 6 * SEC
    #: After healing, every client request must finish within this bound.
    liveness_us: int = 8 * SEC
    faults: bool = True
    #: Clients run a random workload; scenario tests turn this off and script ops.
    workload: bool = True
    #: Which faults the nemesis may use.
    fault_kinds: tuple[str, ...] = ("partition", "oneway", "isolate", "crash", "pause", "lossy")
    client_retry_ticks: int = 10
    client_give_up_ticks: int = 300
    #: TEST DOUBLE when False: a wiped acceptor rejoins at once, as if new,
    #: skipping recovery. Kept to show that this loses safety.
    recovery: bool = True
    #: The runtime's order (net/runtime.py ``_flusher``): a step, a tick or a
    #: client request only changes the core; one flusher per node then runs
    #: propose(), ready(), the fsync and the sends, one cycle at a time, while
    #: further steps and ticks run during its fsync. When False, the simple
    #: order: propose() and ready() right after every input.
    runtime_order: bool = False
    #: BUGGIFY (FoundationDB): the chance that a flusher cycle starts up to
    #: ``flusher_lag_ticks`` late, so that ticks and steps pile up before the
    #: next propose() (the window of issue 11's S1).
    flusher_lag: float = 0.0
    flusher_lag_ticks: int = 3
    #: Model the seed's promise sessions (driver.channel): Accepts and votes
    #: travel only on a session that a Promise opened; a higher promise or a
    #: crash closes it and the proposer hears "session lost"; the leader
    #: re-invites acceptors without one (Driver.tick).
    sessions: bool = False
    #: The chance that a peer message is held for long_hold_us (a stalled
    #: link, a full switch buffer): it may arrive after its sender or receiver
    #: crashed, restarted or lost its disk.
    long_hold: float = 0.0
    long_hold_us: tuple[int, int] = (300 * MS, 5 * SEC)
    #: BUGGIFY: when a node crashes or loses its disk, the chance that the
    #: messages it still has in flight are held back another 0.5-4 s.
    stale_on_crash: float = 0.0
    #: BUGGIFY "a recovery racing an election": the chance that a node that
    #: has just started an election loses its disk within a few milliseconds.
    wipe_on_election: float = 0.0
    #: BUGGIFY "a snapshot install mid-window": the chance that a catch-up
    #: request is held 50 ms-2 s, so that its answer (which carries no
    #: ballot) reaches a leader that has been deposed meanwhile (issue 11, S1).
    stale_catchup: float = 0.0
    #: Per-node tick period multipliers are drawn from [1/skew, skew].
    tick_skew: float = 1.0
    #: Storage faults: the chance that a batch write fails with ENOSPC (the
    #: node stops, as the runtime does, and is restarted later), and whether a
    #: crash during an fsync leaves a torn final batch in the journal.
    enospc: float = 0.0
    torn_writes: bool = False
    #: Client values: the chance that a put carries a large value, and its
    #: size range in bytes (the wire codec measures every message then).
    large_values: float = 0.0
    large_value_bytes: tuple[int, int] = (16 << 10, 256 << 10)
    #: Encode every peer message with the wire codec and apply the runtime's
    #: size limits (datagram -> link fallback, frame limit).
    wire_sizes: bool = False
    max_datagram: int = 60_000
    max_frame: int = 64 << 20
    #: Client churn: the chance that a client gives up on a request and moves
    #: on under a new client id (its old request may still be chosen).
    churn: float = 0.0
    stale_reads: float = 0.0

    @staticmethod
    def random(rng: random.Random, *, wipe: bool = False) -> SimParams:
        n = rng.choice((1, 3, 3, 3, 5, 5, 7))
        roles: dict[int, Role] = {}
        shape = rng.random()
        if shape < 0.15 and n > 1:
            # Acceptor-only nodes, with proposers/learners elsewhere.
            for i in rng.sample(range(n), rng.randint(1, n - 1)):
                roles[i] = Role.ACCEPTOR
            roles[n] = Role.PROPOSER | Role.LEARNER
        elif shape < 0.3:
            roles[n] = Role.PROPOSER | Role.LEARNER  # a proposer-only node
            roles[n + 1] = Role.LEARNER  # a learner-only node
        elif shape < 0.4 and n > 1:
            roles[rng.randrange(n)] = Role.ACCEPTOR | Role.LEARNER
            roles[n] = Role.LEARNER
        cfg = ClusterConfig(
            n_acceptors=n,
            roles=roles,
            nack=rng.random() < 0.5,
            window=rng.choice((1, 4, 32)),
            max_batch=rng.choice((1, 8, 64)),
            snapshot_interval=rng.choice((5, 20, 1000)),
            log_retain=rng.choice((0, 3, 50)),
            retransmit_ticks=rng.choice((3, 4, 6)),
            eager_propose=rng.random() < 0.5,
            propose_slots_per_call=rng.choice((0, 0, 1, 2)),
            prevote=rng.random() < 0.7,
            # Small pages make long Promises common (issue 12: paging).
            promise_bytes=rng.choice((16 << 20, 16 << 20, 300, 2000)),
        )
        kinds: tuple[str, ...] = (
            "partition",
            "oneway",
            "isolate",
            "isolate_leader",
            "isolate_leader",
            "crash",
            "pause",
            "lossy",
            "session_break",
            "mute_leader",
        )
        if wipe and n > 1:
            kinds += ("wipe", "wipe")
        if wipe and n > 1:
            kinds += ("corrupt",)
        runtime_order = rng.random() < 0.75
        return SimParams(
            runtime_order=runtime_order,
            flusher_lag=rng.choice((0.0, 0.05, 0.3)) if runtime_order else 0.0,
            sessions=runtime_order and rng.random() < 0.7,
            long_hold=rng.choice((0.0, 0.0, 0.002, 0.01, 0.05)),
            stale_on_crash=rng.choice((0.0, 0.5, 1.0)),
            wipe_on_election=rng.choice((0.0, 0.0, 0.1, 0.5)) if wipe and n > 1 else 0.0,
            stale_catchup=rng.choice((0.0, 0.0, 0.1, 0.5)),
            tick_skew=rng.choice((1.0, 1.1, 1.5)),
            enospc=rng.choice((0.0, 0.0, 0.001, 0.01)),
            torn_writes=rng.random() < 0.5,
            large_values=rng.choice((0.0, 0.0, 0.02, 0.2)),
            wire_sizes=rng.random() < 0.3,
            churn=rng.choice((0.0, 0.0, 0.05)),
            stale_reads=rng.choice((0.0, 0.1)),
            keys=tuple("abcdefghijklmnopqrst"[: rng.choice((1, 3, 3, 8, 20))]),
            cfg=cfg,
            clients=rng.choice((1, 2, 3, 4)),
            loss=rng.choice((0.0, 0.01, 0.05)),
            dup=rng.choice((0.0, 0.01, 0.05)),
            max_delay_us=rng.choice((1 * MS, 3 * MS, 20 * MS)),
            fsync_us=rng.choice((100 * US, 1 * MS, 5 * MS)),
            fault_kinds=kinds,
        )


class DiskCorrupt(Exception):
    """A committed batch failed its checksum: the node must not start on it."""


@dataclass
class SimDisk:
    """The storage contract, modelled: a journal of batches, each committed
    whole by one fsync and carrying a CRC32 (as every stored row and snapshot
    does in storage/sqlite.py). A crash during an fsync may leave a torn tail,
    which loading drops (it was never acknowledged); a committed batch that
    fails its checksum is corruption, and loading refuses it."""

    #: Committed batches: (crc32, pickled records).
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    #: Bytes of a batch whose fsync a crash interrupted.
    torn: bytes | None = None
    busy_until: int = 0
    torn_dropped: int = 0
    #: The batch whose fsync is under way: (node epoch, records).
    writing: tuple[int, list[Record]] | None = None
    #: The last committed RecoveryRec says the acceptor recovered (the
    #: nemesis' fault budget counts a recovery only once it is durable).
    recovered: bool = False

    def commit(self, records: list[Record]) -> None:
        if not records:
            return
        for r in records:
            if isinstance(r, RecoveryRec):
                self.recovered = not r.active
        body = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        self.frames.append((zlib.crc32(body), body))

    def load(self) -> list[Record]:
        if self.torn is not None:
            self.torn = None  # the journal's tail: an incomplete batch is dropped whole
            self.torn_dropped += 1
        out: list[Record] = []
        for i, (crc, body) in enumerate(self.frames):
            if zlib.crc32(body) != crc:
                raise DiskCorrupt(f"batch {i} of {len(self.frames)} fails its checksum")
            out.extend(pickle.loads(body))
        return out

    @property
    def durable(self) -> list[Record]:
        return [r for _, body in self.frames for r in pickle.loads(body)]

    @durable.setter
    def durable(self, records: list[Record]) -> None:
        self.frames = []
        self.torn = None
        self.commit(list(records))


@dataclass
class SimNode:
    id: int
    node: Node | None
    disk: SimDisk
    driver: Driver | None = None
    #: This node's tick period (clock skew).
    tick_us: int = 10 * MS
    #: Promise sessions (SimParams.sessions): as an acceptor, to (proposer,
    #: ballot); as a proposer, from (acceptor, ballot).
    sessions_out: set[tuple[int, Ballot]] = field(default_factory=set)
    sessions_in: set[tuple[int, Ballot]] = field(default_factory=set)
    #: Its messages in flight: cell id -> cell (see Simulator._send).
    in_flight: dict[int, list[Any]] = field(default_factory=dict)
    #: Stale requests of its earlier incarnations, held back (BUGGIFY).
    stale: list[list[Any]] = field(default_factory=list)
    last_prepare: Ballot | None = None
    #: BUGGIFY (after a wipe during its election): its learner's catch-up
    #: requests are lost until its next Prepare or this time, so that its
    #: next election starts from a slot below the lost disk's one.
    no_catchup_until: int = 0
    #: BUGGIFY (same moment): its clock jumps forward once it is back.
    jump_on_restart: bool = False
    epoch: int = 0
    paused: bool = False
    #: The runtime's ENOSPC stall (net/quota.py): until then its write is
    #: retried, its peer input dropped and its ticks skipped.
    stalled_until: int = 0
    buffered: list[Callable[[], None]] = field(default_factory=list)
    incarnation: int = 0
    #: Its disk was wiped; it must rejoin as "existing" (recover before voting).
    wiped: bool = False
    #: Runtime order: the core changed since the last flusher cycle began.
    dirty: bool = False
    #: Runtime order: a flusher cycle is scheduled or waiting on its fsync.
    flushing: bool = False


@dataclass
class OpRecord:
    client: int
    seq: int
    kind: str
    key: str
    arg: tuple[str | None, ...]
    read_kind: Kind
    invoke: int
    complete: int | None = None
    outcome: Outcome | None = None
    result: Any = None


@dataclass
class SimResult:
    seed: int
    params: SimParams
    ops: int
    ok_ops: int
    unknown_ops: int
    max_slot: int
    elections: int
    faults: int
    linearizability: CheckResult | None
    end_us: int
    stats: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        c = self.params.cfg
        return (
            f"seed={self.seed} n={c.n_acceptors} nack={c.nack} ops={self.ops} "
            f"ok={self.ok_ops} unknown={self.unknown_ops} slots={self.max_slot + 1} "
            f"faults={self.faults} sim_time={self.end_us / SEC:.1f}s"
            + "".join(f" {k}={v}" for k, v in sorted(self.stats.items()))
        )


class Simulator:
    def __init__(self, seed: int, params: SimParams | None = None, *, verbose: bool = False):
        self.seed = seed
        self.rng = random.Random(seed)
        self.p = params if params is not None else SimParams.random(self.rng)
        self.cfg = self.p.cfg
        self.verbose = verbose
        self.now = 0
        self._seq = 0
        self._cell = 0
        self._force_stale = False
        #: BUGGIFY: (node, until): every other node's clock runs slow until then.
        self.slow_clocks: tuple[int, int] = (-1, 0)
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self.nodes: dict[int, SimNode] = {}
        #: Counters of what the faults and limits did (for tests and the summary).
        self.stats: dict[str, int] = {}
        for nid in self.cfg.node_ids:
            sn = SimNode(nid, None, SimDisk())
            sk = self.p.tick_skew
            sn.tick_us = max(1, int(self.p.tick_us * (sk ** self.rng.uniform(-1, 1))))
            self.nodes[nid] = sn
            self._boot(sn)
        self.blocked: set[tuple[int, int]] = set()
        self._holds: list[tuple[Callable[[Envelope], bool], list[Envelope]]] = []
        #: Messages sent, by type (for tests and the summary).
        self.sent: dict[str, int] = {}
        self.loss = self.p.loss
        self.dup = self.p.dup
        self.clients: dict[int, Client] = {}
        self.client_ops: dict[int, OpRecord | None] = {}
        self.history: list[OpRecord] = []
        self.stop_clients_at: int | None = None
        self.next_client_id = 100 + self.p.clients
        # oracle
        self.votes: dict[tuple[int, Ballot], tuple[Value, set[int]]] = {}
        self.chosen: dict[int, Value] = {}
        self.learned: dict[int, Value] = {}
        self.submitted: set[tuple[int, int, bytes]] = set()
        self.faults_injected = 0
        self.elections = 0
        self.healed_at: int | None = None
        for i in range(self.p.clients):
            self._new_client(100 + i)
        for sn in self.nodes.values():
            self._at(self.rng.randrange(sn.tick_us), self._node_tick, sn.id, sn.epoch)

    def _new_client(self, cid: int) -> None:
        self.clients[cid] = Client(
            cid,
            tuple(self.cfg.proposer_ids),
            random.Random(self.rng.getrandbits(64)),
            retry_ticks=self.p.client_retry_ticks,
            give_up_ticks=self.p.client_give_up_ticks,
        )
        self.client_ops[cid] = None
        self._at(self.rng.randrange(self.p.tick_us), self._client_tick, cid)

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    # ------------------------------------------------------------ event loop

    def _at(self, delay: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + max(0, delay), self._seq, lambda: fn(*args)))

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.now / SEC:9.4f}s] {msg}")

    def run_until(self, t: int) -> None:
        while self._heap and self._heap[0][0] <= t:
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            try:
                fn()
            except SafetyViolation as e:
                f = SimulationFailure(self.seed, f"runtime invariant: {e}")
                f.sim_us = self.now
                raise f from e
        self.now = max(self.now, t)

    def fail(self, what: str) -> None:
        e = SimulationFailure(self.seed, what)
        e.sim_us = self.now
        raise e

    # ------------------------------------------------------------ nodes

    def _boot(self, sn: SimNode) -> bool:
        """Start the node from its disk; False if the disk is corrupt (the
        node refuses to start, as SQLiteStorage.load raises StorageCorrupt)."""
        try:
            records = sn.disk.load()
        except DiskCorrupt as e:
            self.log(f"node {sn.id} refuses to start: {e}")
            self.count("corrupt_detected")
            return False
        state = DurableState.fold(records)
        sn.incarnation += 1
        initial = "existing" if sn.wiped and self.p.recovery else "new"
        sn.node = Node(self.cfg, sn.id, state, seed=self.rng.getrandbits(64), initial_state=initial)
        sn.driver = Driver(sn.node)
        return True

    def _has_session(self, sn: SimNode) -> Callable[[int, Ballot], bool] | None:
        if not self.p.sessions:
            return None
        return lambda a, b: (a, b) in sn.sessions_in

    def _node_tick(self, nid: int, epoch: int) -> None:
        sn = self.nodes[nid]
        if sn.epoch != epoch:
            return  # this timer belongs to an earlier incarnation
        self._at(sn.tick_us, self._node_tick, nid, epoch)
        node, drv = sn.node, sn.driver
        if node is None or drv is None or sn.paused:
            return
        fast, until = self.slow_clocks
        if nid != fast and self.now < until and self.rng.random() < 0.8:
            return  # BUGGIFY: a slow clock (see _buggify_wipe)
        if self.now < sn.stalled_until:
            return  # the runtime skips ticks while its disk is full
        if self.p.enospc and self.rng.random() < self.p.enospc / 4 and drv.compact():
            # The runtime compacts early when its store nears the quota.
            self.count("compactions")
            node.check_invariants()
        was_leader = node.is_leader
        self.count("invites", drv.tick(self._has_session(sn)))
        node.check_invariants(full=node.ticks % 16 == 0)
        if node.is_leader and not was_leader:
            self.elections += 1
            self.log(f"node {nid} leads")
        self._drain(sn)

    def _maybe_wipe_on_election(self, sn: SimNode, msg: Prepare) -> None:
        """BUGGIFY: a node whose Prepares for a new ballot just left loses its
        disk before they are answered (a recovery racing an election)."""
        if msg.ballot == sn.last_prepare:
            return
        sn.last_prepare = msg.ballot
        p = self.p.wipe_on_election
        if not p or self.now >= self.p.fault_until_us:
            return
        if self.rng.random() >= p or not self._may_wipe(sn.id):
            return
        self._at(self.rng.randint(0, self.p.min_delay_us), self._buggify_wipe, sn.id, sn.epoch)

    def _buggify_wipe(self, nid: int, epoch: int) -> None:
        sn = self.nodes[nid]
        if sn.epoch != epoch or sn.node is None or not self._may_wipe(nid):
            return
        self.faults_injected += 1
        self.count("wipe_on_election")
        self._force_stale = True  # its Prepares in flight go stale, held for its return
        self.wipe(nid)
        self._force_stale = False
        self.log(f"BUGGIFY: wipe disk of node {nid} during its election")
        # Back soon (a pod rescheduled at once), so that its recovery and its
        # next election overlap what its lost disk left in flight.
        back = self.rng.randint(20 * MS, 400 * MS)
        if self.rng.random() < 0.5:
            # ... and it elects itself again before its learner catches up:
            # its new Prepare asks from a slot below the one its lost disk
            # asked from, at the same ballot if nobody else moved on - the
            # moment a stale answer could pass for a fresh one (issue 11, S3).
            sn.no_catchup_until = self.now + self.rng.randint(1 * SEC, 4 * SEC)
            if self.rng.random() < 0.5:
                # Back at once, and its clock jumps forward (a VM resumed, an
                # NTP step): its election timer fires before anyone else's
                # moves the ballots on.
                sn.jump_on_restart = True
                back = self.rng.randint(2 * MS, 30 * MS)
                # Everyone else's clock runs slow meanwhile (skew).
                self.slow_clocks = (nid, self.now + self.rng.randint(300 * MS, 1 * SEC))
        self._at(back, self._restart, nid)

    def _deliver(self, env: Envelope, epoch: int) -> None:
        sn = self.nodes[env.dst]
        if sn.node is None or (epoch >= 0 and epoch != sn.epoch):
            return  # dead, or a self-message of an earlier incarnation
        if sn.paused:
            sn.buffered.append(lambda: self._deliver(env, epoch))
            return
        if self.now < sn.stalled_until and env.src != env.dst:
            self.count("dropped_disk_full")
            return  # the runtime drops peer input while its write is retried
        if self.p.sessions and env.src != env.dst:
            ch = channel(env.msg)
            if ch == TO_PROPOSER:
                msg = env.msg
                assert isinstance(msg, SESSION_MSGS)
                sn.sessions_in.add((env.src, msg.ballot))
        drv = sn.driver
        assert drv is not None
        node = sn.node
        was_leader = node.is_leader
        if isinstance(env.msg, Promise) and env.msg.upto != -1:
            self.count("recovery_pages" if env.msg.recover_inc else "promise_pages")
        drv.step(env.src, env.msg, revalidate=False)
        node.check_invariants()
        if node.is_leader and not was_leader:
            self.elections += 1
            self.log(f"node {sn.id} leads")
        self._drain(sn)

    def _session_lost(self, nid: int, epoch: int, acceptor: int, b: Ballot) -> None:
        sn = self.nodes[nid]
        if sn.epoch != epoch or sn.node is None or sn.driver is None:
            return
        if sn.paused:
            sn.buffered.append(lambda: self._session_lost(nid, epoch, acceptor, b))
            return
        sn.sessions_in.discard((acceptor, b))
        sn.driver.session_lost(acceptor, b)
        sn.node.check_invariants()
        self._drain(sn)

    def _close_session(self, acceptor: SimNode, key: tuple[int, Ballot]) -> None:
        """The acceptor's end of a promise session closed: the proposer hears
        of it (a TCP close) after a network delay, if it still runs."""
        acceptor.sessions_out.discard(key)
        proposer, b = key
        pn = self.nodes[proposer]
        if pn.node is None:
            return
        self.count("sessions_broken")
        d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
        self._at(d, self._session_lost, proposer, pn.epoch, acceptor.id, b)

    def _deliver_client(self, nid: int, req: ClientRequest) -> None:
        sn = self.nodes[nid]
        if sn.node is None or sn.driver is None:
            return
        if sn.paused:
            sn.buffered.append(lambda: self._deliver_client(nid, req))
            return
        sn.driver.client(req)
        sn.node.check_invariants()
        self._drain(sn)

    def _drain(self, sn: SimNode) -> None:
        if self.p.runtime_order:
            sn.dirty = True
            self._wake_flusher(sn)
            return
        drv = sn.driver
        assert drv is not None
        fl = drv.cycle()
        assert sn.node is not None
        sn.node.check_invariants()
        self._process(sn, fl)

    def _wake_flusher(self, sn: SimNode) -> None:
        if sn.flushing or not sn.dirty:
            return
        sn.flushing = True
        delay = 0
        if self.p.flusher_lag and self.rng.random() < self.p.flusher_lag:
            delay = self.rng.randint(1, self.p.flusher_lag_ticks * sn.tick_us)
        self._at(delay, self._flusher_cycle, sn.id, sn.epoch)

    def _flusher_cycle(self, nid: int, epoch: int) -> None:
        """One cycle of the runtime's flusher: propose, ready, fsync, send."""
        sn = self.nodes[nid]
        if sn.epoch != epoch or sn.node is None or sn.driver is None:
            return  # crashed: the new incarnation has its own flusher
        if sn.paused:
            sn.flushing = False  # a paused process does nothing; an input wakes it
            return
        sn.dirty = False
        fl = sn.driver.cycle()
        if fl.more:
            sn.dirty = True  # the next wave goes out in the next cycle
        sn.node.check_invariants()
        self._process(sn, fl, then=lambda: self._flusher_done(sn, epoch))

    def _flusher_done(self, sn: SimNode, epoch: int) -> None:
        if sn.epoch != epoch:
            return
        sn.flushing = False
        self._wake_flusher(sn)

    def _flush_deferred(self, nid: int, epoch: int) -> None:
        sn = self.nodes[nid]
        if sn.epoch != epoch or sn.driver is None:
            return
        if sn.paused:
            self._at(sn.tick_us, self._flush_deferred, nid, epoch)
            return
        if sn.driver.flush_deferred():
            if self.p.runtime_order:
                sn.dirty = True
                self._wake_flusher(sn)
            else:
                self._drain(sn)

    def _process(self, sn: SimNode, fl: Flush, then: Callable[[], None] | None = None) -> None:
        epoch = sn.epoch
        if fl.arm_deferred:
            self._at(sn.tick_us, self._flush_deferred, sn.id, epoch)
        for e in fl.committed:
            self._check_learned(sn.id, e.slot, e.value)
        if fl.empty():
            if then is not None:
                then()
            return
        disk = sn.disk
        records = fl.records
        start = max(self.now, disk.busy_until)
        done = start + (self.p.fsync_us if records else 0)
        disk.busy_until = done
        if (
            records
            and self.p.enospc
            and self.now < self.p.fault_until_us
            and self.rng.random() < self.p.enospc
        ):
            self.count("enospc")
            if self.rng.random() < 0.5:
                # The runtime's answer (net/quota.py): the same records are
                # written again until they fit; meanwhile no peer input and
                # no ticks. A very slow fsync, to the rest of the cluster.
                stall = self.rng.randint(100 * MS, 3 * SEC)
                sn.stalled_until = start + stall
                done += stall
                disk.busy_until = done
                self.log(f"node {sn.id}: ENOSPC, retried for {stall // MS} ms")
            else:
                # An operator restarts the node once space is freed; nothing
                # of this batch is durable, and nothing that depends on it leaves.
                self.log(f"node {sn.id}: ENOSPC on a batch write; it stops")
                self._crash(sn)
                if sn.id < self.cfg.n_acceptors:
                    self._break_sessions(sn.id)
                self._at(self.rng.randint(100 * MS, 2 * SEC), self._restart, sn.id)
                return
        if records:
            disk.writing = (epoch, records)

        def fsynced() -> None:
            if sn.epoch != epoch:
                return  # crashed before the fsync finished: records and replies are lost
            if records:
                disk.commit(records)
                disk.writing = None
                if sn.driver is not None:
                    sn.driver.fsynced(records)
                for r in records:
                    if isinstance(r, AcceptRec):
                        self._count_vote(sn.id, r)
            self._send_all(sn, fl)
            if then is not None:
                then()

        if done == self.now:
            fsynced()
        else:
            self._at(done - self.now, fsynced)

    def _send_all(self, sn: SimNode, fl: Flush) -> None:
        if not self.p.sessions:
            for env in fl.messages:
                self._send(env)
        else:
            opened: set[tuple[int, Ballot]] = set()
            for env in fl.messages:
                if env.dst != sn.id and not self._session_ok(sn, env, opened):
                    self.count("no_session")
                    continue
                self._send(env)
            node = sn.node
            promised = node.status().promised if node is not None else None
            if promised is not None:
                # The seed: a higher promise breaks the sessions of lower ballots.
                for key in [k for k in sn.sessions_out if k[1] < promised]:
                    self._close_session(sn, key)
        for rep in fl.replies:
            self._send_reply(sn.id, rep)

    def _session_ok(self, sn: SimNode, env: Envelope, opened: set[tuple[int, Ballot]]) -> bool:
        ch = channel(env.msg)
        if ch == TO_PROPOSER:
            msg = env.msg
            assert isinstance(msg, SESSION_MSGS)
            key = (env.dst, msg.ballot)
            if key in sn.sessions_out:
                return True
            if not isinstance(msg, Promise):
                return False  # only a Promise opens a session
            for old in [k for k in sn.sessions_out if k[0] == env.dst and k[1] < msg.ballot]:
                self._close_session(sn, old)
            sn.sessions_out.add(key)
            return True
        if ch == TO_ACCEPTOR:
            msg = env.msg
            assert isinstance(msg, SESSION_MSGS)
            return (env.dst, msg.ballot) in sn.sessions_in
        return True

    # ------------------------------------------------------------ network

    def hold(self, pred: Callable[[Envelope], bool]) -> list[Envelope]:
        """Hold back every message matching ``pred`` (a scripted delay); returns the bin."""
        held: list[Envelope] = []
        self._holds.append((pred, held))
        return held

    def release(self, held: list[Envelope]) -> None:
        """Stop holding and deliver what was held, in order."""
        self._holds = [(p, h) for p, h in self._holds if h is not held]
        for env in held:
            self._at(self.p.min_delay_us, self._deliver, env, -1)
        held.clear()

    def drop(self, held: list[Envelope]) -> None:
        """Stop holding and lose what was held."""
        self._holds = [(p, h) for p, h in self._holds if h is not held]
        held.clear()

    def _wire_size(self, msg: PeerMessage) -> int:
        return len(wire.encode(msg))

    def _send(self, env: Envelope) -> None:
        name = type(env.msg).__name__
        self.sent[name] = self.sent.get(name, 0) + 1
        for pred, held in self._holds:
            if pred(env):
                held.append(env)
                return
        if env.src == env.dst:
            self._at(10 * US, self._deliver, env, self.nodes[env.dst].epoch)
            return
        src_node = self.nodes[env.src]
        self._release_stale(src_node, env)
        if isinstance(env.msg, Prepare):
            src_node.no_catchup_until = 0
            self._maybe_wipe_on_election(src_node, env.msg)
        elif isinstance(env.msg, CatchupRequest) and self.now < src_node.no_catchup_until:
            self.count("catchup_withheld")
            return
        if self.p.wire_sizes:
            size = self._wire_size(env.msg)
            self.stats["max_message_bytes"] = max(self.stats.get("max_message_bytes", 0), size)
            if channel(env.msg) == UDP and size > self.p.max_datagram:
                self.count("udp_to_link")  # the runtime sends it on the peer link instead
            if size > self.p.max_frame:
                # The receiver refuses the frame and drops the connection.
                self.count("oversized_frames")
                self.log(f"{name} {env.src}->{env.dst}: {size} bytes exceeds the frame limit")
                return
        if (env.src, env.dst) in self.blocked:
            return
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        src = self.nodes[env.src]
        for _ in range(copies):
            d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
            if self.p.long_hold and self.rng.random() < self.p.long_hold:
                d = self.rng.randint(*self.p.long_hold_us)
                self.count("long_holds")
            elif (
                self.p.stale_catchup
                and isinstance(env.msg, CatchupRequest)
                and self.rng.random() < self.p.stale_catchup
            ):
                d = self.rng.randint(50 * MS, 2 * SEC)
                self.count("stale_catchup")
            self._cell += 1
            cell: list[Any] = [self._cell, env, False]
            src.in_flight[self._cell] = cell
            self._at(d, self._deliver_cell, src, cell)

    def _deliver_cell(self, src: SimNode, cell: list[Any]) -> None:
        if cell[2]:
            return  # re-held (stale_on_crash): a later event delivers it
        src.in_flight.pop(cell[0], None)
        self._deliver(cell[1], -1)

    def _hold_in_flight(self, sn: SimNode) -> None:
        """BUGGIFY: what a crashed or wiped node still had in flight arrives
        late - 30-500 ms or 0.5-4 s - after it restarted, possibly with an
        empty disk, and possibly while it recovers or runs a new election."""
        cells = list(sn.in_flight.values())
        sn.in_flight.clear()
        if not cells:
            return
        forced = self._force_stale
        if not forced and (not self.p.stale_on_crash or self.rng.random() >= self.p.stale_on_crash):
            return
        lo, hi = self.rng.choice(((30 * MS, 500 * MS), (500 * MS, 4 * SEC)))
        targeted = forced or self.rng.random() < 0.5
        for cell in cells:
            cell[2] = True
            self.count("stale_held")
            fresh: list[Any] = [cell[0], cell[1], False]
            if targeted and isinstance(cell[1].msg, Prepare | RecoverPrepare):
                # BUGGIFY, targeted: the stale request arrives when the new
                # incarnation asks with the same ballot - the moment when a
                # late answer could pass for a fresh one (issue 11, S2, S3).
                sn.stale.append(fresh)
                if forced:
                    # Held past its new incarnation's election, unless that
                    # election asks first (then _release_stale delivers it).
                    self._at(self.rng.randint(1 * SEC, 5 * SEC), self._deliver_cell, sn, fresh)
                    continue
            self._at(self.rng.randint(lo, hi), self._deliver_cell, sn, fresh)

    def _release_stale(self, sn: SimNode, env: Envelope) -> None:
        """A node sends a Prepare or RecoverPrepare: deliver any stale request
        of its earlier incarnations at the same ballot, to the same peer, just
        before or just after this one."""
        msg = env.msg
        if not sn.stale or not isinstance(msg, Prepare | RecoverPrepare):
            return
        for cell in list(sn.stale):
            old = cell[1]
            if cell[2] or old.dst != env.dst or old.msg.ballot != msg.ballot:
                continue
            sn.stale.remove(cell)
            cell[2] = True  # its timer no longer delivers it
            self.count("stale_targeted")
            self.log(f"BUGGIFY: stale {old.msg} of node {sn.id} released to {old.dst}")
            fresh: list[Any] = [cell[0], old, False]
            if self.rng.random() < 0.5:
                d = self.rng.randint(0, max(0, self.p.min_delay_us - 1))  # strictly first
            else:
                d = self.rng.randint(0, 2 * self.p.max_delay_us)
            self._at(d, self._deliver_cell, sn, fresh)

    def _send_reply(self, nid: int, rep: ClientReply) -> None:
        if self.rng.random() < self.loss:
            return
        d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
        self._at(d, self._client_reply, rep.client_id, rep, nid)

    # ------------------------------------------------------------ clients

    def _client_tick(self, cid: int) -> None:
        c = self.clients.get(cid)
        if c is None:
            return  # churned away
        self._at(self.p.tick_us, self._client_tick, cid)
        rec = self.client_ops[cid]
        if (
            rec is not None
            and self.p.churn
            and self.now < self.p.fault_until_us
            and self.now - rec.invoke > 200 * MS
            and self.rng.random() < self.p.churn
        ):
            # The session gives up and a new one takes over: the request may
            # still be chosen later (so a write stays "unknown" in the history).
            rec.outcome = Outcome.UNKNOWN
            self.log(f"client {cid} gives up on seq={rec.seq} and goes away")
            del self.clients[cid]
            del self.client_ops[cid]
            self.count("client_churn")
            self._new_client(self.next_client_id)
            self.next_client_id += 1
            return
        c.tick()
        self._client_flush(cid)
        if (
            self.p.workload
            and not c.busy
            and (self.stop_clients_at is None or self.now < self.stop_clients_at)
        ) and self.rng.random() < 0.5:
            self._client_submit(cid)
        self._client_flush(cid)

    def _client_submit(self, cid: int) -> None:
        c = self.clients[cid]
        key = self.rng.choice(self.p.keys)
        r = self.rng.random()
        value = f"{cid}.{c.seq + 1}"
        if self.p.large_values and self.rng.random() < self.p.large_values:
            if self.rng.random() < 0.05:
                # The largest value a CAS can still swap for another of its
                # size: half the maximum payload.
                size = MAX_PAYLOAD_BYTES // 2 - 256
            else:
                size = self.rng.randint(*self.p.large_value_bytes)
            value += "." + "v" * size
        arg: tuple[str | None, ...]
        if r < 0.35:
            op, arg = "get", ()
            if self.p.stale_reads and self.rng.random() < self.p.stale_reads:
                target = self.rng.choice(self.cfg.node_ids)
                self.submit(cid, op, key, target=target, stale=True)
                return
        elif r < 0.65:
            op, arg = "put", (value,)
        elif r < 0.75:
            op, arg = "delete", ()
        else:
            exp = self.rng.choice([None, *self._recent_values(key)])
            op, arg = "cas", (exp, value)
        self.submit(cid, op, key, *arg)

    def submit(
        self,
        cid: int,
        op: str,
        key: str,
        *arg: str | None,
        target: int | None = None,
        stale: bool = False,
    ) -> OpRecord:
        """Start one client operation now (the client must be idle)."""
        c = self.clients[cid]
        kind = Kind.WRITE if op != "get" else (Kind.STALE_READ if stale else Kind.READ)
        payload = encode_op(op, key, *arg)
        seq = c.submit(kind, payload, target)
        if kind == Kind.WRITE:
            self.submitted.add((cid, seq, payload))
        rec = OpRecord(cid, seq, op, key, tuple(arg), kind, self.now)
        self.client_ops[cid] = rec
        self.history.append(rec)
        self._client_flush(cid)
        return rec

    def call(
        self,
        cid: int,
        op: str,
        key: str,
        *arg: str | None,
        target: int | None = None,
        stale: bool = False,
        timeout_us: int = 10 * SEC,
    ) -> OpRecord:
        """Run one client operation to completion (or to ``timeout_us``)."""
        rec = self.submit(cid, op, key, *arg, target=target, stale=stale)
        deadline = self.now + timeout_us
        while rec.outcome is None and self.now < deadline:
            self.run_until(min(deadline, self.now + self.p.tick_us))
        return rec

    def run_for(self, us: int) -> None:
        self.run_until(self.now + us)

    def wait_for_leader(self, timeout_us: int = 10 * SEC, exclude: int | None = None) -> int:
        deadline = self.now + timeout_us
        while self.now < deadline:
            lead = self.leader()
            if lead is not None and lead != exclude:
                return lead
            self.run_until(self.now + self.p.tick_us)
        self.fail("no leader elected")
        raise AssertionError("unreachable")

    def _recent_values(self, key: str) -> list[str]:
        vals = [
            str(o.arg[-1])
            for o in self.history[-30:]
            if o.key == key and o.kind in ("put", "cas") and o.arg[-1] is not None
        ]
        return vals[-3:]

    def _client_reply(self, cid: int, rep: ClientReply, src: int) -> None:
        c = self.clients.get(cid)
        if c is None:
            return  # a client that went away
        self.log(
            f"client {cid} seq={rep.seq} <- node {src} {rep.status.name} hint={rep.leader_hint}"
        )
        c.on_reply(rep, src)
        self._client_flush(cid)

    def _client_flush(self, cid: int) -> None:
        out, done = self.clients[cid].take()
        for nid, req in out:
            self.log(f"client {cid} seq={req.seq} -> node {nid}")
            if self.rng.random() < self.loss:
                continue
            d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
            if self.p.long_hold and self.rng.random() < self.p.long_hold:
                d = self.rng.randint(*self.p.long_hold_us)
            self._at(d, self._deliver_client, nid, req)
        for comp in done:
            self._complete(cid, comp)

    def _complete(self, cid: int, comp: Completion) -> None:
        rec = self.client_ops[cid]
        assert rec is not None and rec.seq == comp.seq
        self.client_ops[cid] = None
        rec.outcome = comp.outcome
        self.log(f"client {cid} {rec.kind} {rec.key} seq={rec.seq} -> {comp.outcome.value}")
        if comp.outcome == Outcome.OK:
            rec.complete = self.now
            body = json.loads(comp.result)
            if not body.get("ok"):
                self.fail(f"client {cid} op {rec.kind} got an error result {body}")
            rec.result = body.get("value")

    # ------------------------------------------------------------ oracle

    def _count_vote(self, acceptor: int, r: AcceptRec) -> None:
        key = (r.slot, r.ballot)
        value, voters = self.votes.setdefault(key, (r.value, set()))
        if value != r.value:
            self.fail(f"two values accepted in slot {r.slot} at ballot {r.ballot}")
        voters.add(acceptor)
        if len(voters) >= self.cfg.quorum:
            prev = self.chosen.get(r.slot)
            if prev is None:
                self.chosen[r.slot] = r.value
            elif prev != r.value:
                self.fail(
                    f"SAFETY: two values chosen in slot {r.slot}: {prev!r} and {r.value!r} "
                    f"(second at ballot {r.ballot})"
                )

    def _check_learned(self, nid: int, slot: int, value: Value) -> None:
        chosen = self.chosen.get(slot)
        if chosen is None:
            self.fail(f"node {nid} applied slot {slot} but no value was chosen there")
        if chosen != value:
            self.fail(f"node {nid} applied {value!r} in slot {slot}, but {chosen!r} was chosen")
        prev = self.learned.setdefault(slot, value)
        if prev != value:
            self.fail(f"replicas disagree on slot {slot}")
        for c in value:
            if (c.client_id, c.seq, c.payload) not in self.submitted:
                self.fail(f"slot {slot} holds a command no client proposed: {c!r}")

    # ------------------------------------------------------------ faults

    def _nemesis(self) -> None:
        if self.now >= self.p.fault_until_us:
            return
        self._at(self.rng.randint(200 * MS, 1500 * MS), self._nemesis)
        kind = self.rng.choice(self.p.fault_kinds)
        ids = list(self.cfg.node_ids)
        self.faults_injected += 1
        if kind == "partition" and len(ids) > 1:
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            a, b = ids[:cut], ids[cut:]
            self.blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            self.log(f"partition {sorted(a)} | {sorted(b)}")
            self._at(self.rng.randint(300 * MS, 3 * SEC), self._heal_net)
        elif kind == "oneway" and len(ids) > 1:
            x, y = self.rng.sample(ids, 2)
            self.blocked.add((x, y))
            self.log(f"one-way block {x} -> {y}")
            self._at(self.rng.randint(300 * MS, 3 * SEC), self._heal_net)
        elif kind == "mute_leader" and len(ids) > 1:
            # An asymmetric partition: the leader's outbound links fail, and
            # some of its inbound ones; it may still hear some peers (and
            # their catch-up answers, which carry no ballot) while the rest
            # elect a new leader (the setting of issue 11's S1).
            lead = self.leader()
            x = lead if lead is not None else self.rng.choice(ids)
            others = [y for y in ids if y != x]
            deaf = [y for y in others if self.rng.random() < 0.5]
            self.blocked |= {(x, y) for y in others} | {(y, x) for y in deaf}
            self.log(f"mute {x} (it still hears {sorted(set(others) - set(deaf))})")
            self._at(self.rng.randint(300 * MS, 3 * SEC), self._heal_net)
        elif kind in ("isolate", "isolate_leader") and len(ids) > 1:
            lead = self.leader()
            x = lead if kind == "isolate_leader" and lead is not None else self.rng.choice(ids)
            self.blocked |= {(x, y) for y in ids if y != x} | {(y, x) for y in ids if y != x}
            self.log(f"isolate {x}")
            self._at(self.rng.randint(300 * MS, 3 * SEC), self._heal_net)
        elif kind == "crash":
            sn = self.nodes[self.rng.choice(ids)]
            if sn.node is not None:
                self._crash(sn)
                if sn.id < self.cfg.n_acceptors:
                    self._break_sessions(sn.id)
                self._at(self.rng.randint(100 * MS, 3 * SEC), self._restart, sn.id)
        elif kind == "wipe":
            wt = self._wipe_target()
            if wt.node is not None and self._may_wipe(wt.id):
                self.wipe(wt.id)
                self.log(f"wipe disk of node {wt.id}")
                self._at(self.rng.randint(100 * MS, 3 * SEC), self._restart, wt.id)
        elif kind == "corrupt":
            sn = self.nodes[self.rng.choice(ids)]
            if sn.disk.frames and self._may_wipe(sn.id):
                if sn.node is not None:
                    self._crash(sn)
                    if sn.id < self.cfg.n_acceptors:
                        self._break_sessions(sn.id)
                i = self.rng.randrange(len(sn.disk.frames))
                crc, body = sn.disk.frames[i]
                pos = self.rng.randrange(len(body))
                flipped = body[:pos] + bytes([body[pos] ^ (1 << self.rng.randrange(8))])
                sn.disk.frames[i] = (crc, flipped + body[pos + 1 :])
                self.count("corruptions")
                sn.wiped = True  # it will refuse this disk and rejoin with an empty one
                self.log(f"corrupt byte {pos} of batch {i} on node {sn.id}'s disk")
                self._at(self.rng.randint(100 * MS, 3 * SEC), self._restart, sn.id)
        elif kind == "pause":
            sn = self.nodes[self.rng.choice(ids)]
            if not sn.paused and sn.node is not None:
                sn.paused = True
                self.log(f"pause node {sn.id}")
                self._at(self.rng.randint(100 * MS, 3 * SEC), self._resume, sn.id)
        elif kind == "session_break":
            lead = self.leader()
            if lead is not None:
                victim = self.rng.choice(list(self.cfg.acceptor_ids))
                self._break_sessions(victim, only_leader=lead)
        elif kind == "lossy":
            self.loss = self.rng.choice((0.0, 0.05, 0.2))
            self.dup = self.rng.choice((0.0, 0.05, 0.2))
            self.log(f"loss={self.loss} dup={self.dup}")

    def _wipe_target(self) -> SimNode:
        acc = [
            i for i in self.cfg.node_ids if i in self.cfg.acceptor_ids or i in self.cfg.proposer_ids
        ]
        # Biased toward a node in the middle of an election (a recovery racing
        # an election, the setting of issue 11's S2 and S3).
        cands = [
            i for i in acc
            if (n := self.nodes[i].node) is not None and n.status().proposer_state == "candidate"
        ]  # fmt: skip
        if cands and self.rng.random() < 0.5:
            return self.nodes[self.rng.choice(cands)]
        return self.nodes[self.rng.choice(acc)]

    def _may_wipe(self, nid: int) -> bool:
        """At most f acceptors may have lost their disks and not recovered:
        with more, the data is gone (no quorum of copies) - no protocol can
        survive that, so the nemesis does not ask it to."""
        if Role.LEARNER in self.cfg.role_of(nid) and any(
            Role.LEARNER not in self.cfg.role_of(a) for a in self.cfg.acceptor_ids
        ):
            # Where acceptor-only nodes trim their votes on the leader's
            # durable snapshot, a learner's disk may hold the only copy of
            # decided slots: losing it loses them (a documented limitation,
            # docs/design.md section 10). Only acceptor-only disks are lost.
            return False
        if nid >= self.cfg.n_acceptors:
            return True
        if self.cfg.n_acceptors == 1 or self.amnesiac(nid):
            return False
        amnesiac = sum(1 for i in self.cfg.acceptor_ids if self.amnesiac(i))
        return amnesiac < self.cfg.quorum - 1

    def _break_sessions(self, acceptor: int, only_leader: int | None = None) -> None:
        """The TCP promise sessions of ``acceptor`` broke (the runtime's
        session_lost input): each proposer that had one goes back to preparing."""
        if self.p.sessions and only_leader is None:
            return  # the session model closed them (see _crash)
        if self.p.sessions:
            asn = self.nodes[acceptor]
            for key in [k for k in asn.sessions_out if k[0] == only_leader]:
                self.log(f"session {acceptor}->{only_leader} at {key[1]} broke")
                self._close_session(asn, key)
            return
        for sn in self.nodes.values():
            node = sn.node
            if node is None or sn.paused:
                continue
            if only_leader is not None and sn.id != only_leader:
                continue
            b = node.status().ballot
            if b is not None and acceptor != sn.id and sn.driver is not None:
                self.log(f"session {acceptor}->{sn.id} at {b} broke")
                sn.driver.session_lost(acceptor, b)
                self._drain(sn)

    def _heal_net(self) -> None:
        self.blocked = set()
        self.log("network healed")

    def _crash(self, sn: SimNode) -> None:
        self.log(f"crash node {sn.id}")
        disk = sn.disk
        if disk.writing is not None and disk.writing[0] == sn.epoch and self.p.torn_writes:
            body = pickle.dumps(disk.writing[1])
            disk.torn = body[: self.rng.randrange(len(body))]  # a torn final batch
            self.count("torn_writes")
        disk.writing = None
        sn.node = None
        sn.driver = None
        sn.epoch += 1
        sn.paused = False
        sn.dirty = sn.flushing = False
        sn.buffered.clear()
        disk.busy_until = self.now
        self._hold_in_flight(sn)
        if self.p.sessions:
            for key in list(sn.sessions_out):
                self._close_session(sn, key)  # the process died: its TCP sessions reset
            sn.sessions_in.clear()
            for other in self.nodes.values():
                for key in [k for k in other.sessions_out if k[0] == sn.id]:
                    other.sessions_out.discard(key)

    def crash(self, nid: int) -> None:
        self._crash(self.nodes[nid])

    def wipe(self, nid: int) -> None:
        """Crash the node and lose its whole disk (same id, empty data directory)."""
        sn = self.nodes[nid]
        if sn.node is not None:
            self._crash(sn)
        sn.disk.frames = []
        sn.disk.recovered = False
        sn.disk.torn = None
        sn.wiped = True

    def amnesiac(self, nid: int) -> bool:
        """Wiped and not yet recovered (restarted or not)."""
        sn = self.nodes[nid]
        if not sn.wiped:
            return False
        # Recovered in memory is not enough: a crash before the fsync brings
        # it back amnesiac (simulator seed 519 lost a quorum that way).
        if sn.node is not None and not sn.node.recovering and sn.disk.recovered:
            if self.p.recovery:
                sn.wiped = False  # recovered: it votes again
            return not self.p.recovery
        return True

    def _restart(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.node is not None:
            return
        self.log(f"restart node {nid}")
        if not self._boot(sn):
            # The operator's remedy for a corrupt disk (README: storage quarantine):
            # move the data aside and rejoin with an empty one, which recovers.
            sn.disk.frames = []
            sn.disk.recovered = False
            sn.disk.torn = None
            sn.wiped = True
            self.log(f"node {nid}: disk replaced after corruption; it rejoins and recovers")
            booted = self._boot(sn)
            assert booted
        self._at(self.rng.randrange(sn.tick_us), self._node_tick, nid, sn.epoch)
        if sn.jump_on_restart:
            sn.jump_on_restart = False
            self._at(self.rng.randint(1 * MS, 5 * MS), self._clock_jump, nid, sn.epoch)

    def _clock_jump(self, nid: int, epoch: int) -> None:
        """BUGGIFY, clock: the node's clock jumps forward by two election
        timeouts - that many ticks at once."""
        sn = self.nodes[nid]
        node, drv = sn.node, sn.driver
        if sn.epoch != epoch or node is None or drv is None or sn.paused:
            return
        self.count("clock_jumps")
        for _ in range(2 * self.p.cfg.election_ticks):
            was_leader = node.is_leader
            self.count("invites", drv.tick(self._has_session(sn)))
            node.check_invariants()
            if node.is_leader and not was_leader:
                self.elections += 1
        self._drain(sn)

    def restart(self, nid: int) -> None:
        self._restart(nid)

    def _resume(self, nid: int) -> None:
        sn = self.nodes[nid]
        if not sn.paused:
            return
        sn.paused = False
        self.log(f"resume node {nid}")
        buffered, sn.buffered = sn.buffered, []
        for fn in buffered:
            fn()
        self._wake_flusher(sn)

    def pause(self, nid: int) -> None:
        self.nodes[nid].paused = True

    def resume(self, nid: int) -> None:
        self._resume(nid)

    def partition(self, *groups: list[int]) -> None:
        self.blocked = {(x, y) for g in groups for h in groups if g is not h for x in g for y in h}

    def block(self, src: int, dst: int) -> None:
        self.blocked.add((src, dst))

    def heal_all(self) -> None:
        self.healed_at = self.now
        self.blocked = set()
        self.loss = 0.0
        self.dup = 0.0
        for nid, sn in self.nodes.items():
            if sn.node is None:
                self._restart(nid)
            elif sn.paused:
                self._resume(nid)

    # ------------------------------------------------------------ the whole run

    def leader(self) -> int | None:
        """The live leader with the highest ballot (a deposed one may not know yet)."""
        best: tuple[Ballot, int] | None = None
        for n, sn in self.nodes.items():
            node = sn.node
            if node is None or not node.is_leader:
                continue
            b = node.status().ballot
            if b is not None and (best is None or b > best[0]):
                best = (b, n)
        return best[1] if best else None

    def run(self) -> SimResult:
        p = self.p
        if p.faults:
            self._at(self.rng.randint(300 * MS, 1 * SEC), self._nemesis)
        self.run_until(p.fault_until_us)
        self.heal_all()
        self.log("--- all faults healed ---")
        heal = self.now
        # Liveness: after healing, clients keep working; every request must finish
        # (ok, or for one invoked before the heal, possibly unknown) within the bound.
        self.stop_clients_at = heal + p.liveness_us // 2
        self.run_until(heal + p.liveness_us)
        for cid, rec in self.client_ops.items():
            if rec is not None:
                self.fail(
                    f"liveness: client {cid} request seq={rec.seq} ({rec.kind}) still pending "
                    f"{(self.now - heal) / SEC:.1f}s after all faults healed"
                )
        for rec in self.history:
            if rec.invoke >= heal and rec.outcome != Outcome.OK:
                self.fail(
                    f"liveness: client {rec.client} {rec.kind} seq={rec.seq} invoked after the "
                    f"heal ended {rec.outcome}"
                )
        self._final_checks()
        return self._result()

    def _final_checks(self) -> None:
        # No acknowledged write is lost: it sits in a chosen slot.
        chosen_cmds = {(c.client_id, c.seq) for v in self.chosen.values() for c in v}
        for rec in self.history:
            acked = rec.read_kind == Kind.WRITE and rec.outcome == Outcome.OK
            if acked and (rec.client, rec.seq) not in chosen_cmds:
                self.fail(f"acknowledged write lost: client {rec.client} seq {rec.seq}")
        # All replicas converge: after the quiet period every live learner has
        # applied the same prefix and holds the same state.
        states: dict[int, tuple[int, bytes]] = {}
        for nid, sn in self.nodes.items():
            digest = sn.node.state_digest() if sn.node is not None else None
            if digest is not None:
                states[nid] = digest
        tops = {a for a, _ in states.values()}
        if len(tops) > 1:
            self.fail(f"replicas did not converge on one applied slot: {states_summary(states)}")
        if len({s for _, s in states.values()}) > 1:
            self.fail(f"replicas at the same slot hold different states: {states_summary(states)}")
        result = check_history(self._lin_ops())
        if not result.ok:
            self.fail(f"linearizability: {result.explanation}")
        self._lin_result = result

    def _lin_ops(self) -> list[Op]:
        ops: list[Op] = []
        for rec in self.history:
            if rec.read_kind == Kind.STALE_READ:
                continue
            if rec.outcome == Outcome.OK:
                ops.append(
                    Op(rec.client, rec.kind, rec.key, rec.arg, rec.invoke, rec.complete, rec.result)
                )
            elif rec.outcome == Outcome.UNKNOWN and rec.kind != "get":
                ops.append(Op(rec.client, rec.kind, rec.key, rec.arg, rec.invoke, None, None))
        return ops

    def _result(self) -> SimResult:
        return SimResult(
            seed=self.seed,
            params=self.p,
            ops=len(self.history),
            ok_ops=sum(1 for r in self.history if r.outcome == Outcome.OK),
            unknown_ops=sum(1 for r in self.history if r.outcome == Outcome.UNKNOWN),
            max_slot=max(self.chosen, default=-1),
            elections=self.elections,
            faults=self.faults_injected,
            linearizability=getattr(self, "_lin_result", None),
            end_us=self.now,
            stats=dict(self.stats),
        )


def states_summary(states: dict[int, tuple[int, bytes]]) -> str:
    return ", ".join(f"node {n}: applied={a} state={s[:60]!r}" for n, (a, s) in states.items())


def run_seed(seed: int, *, verbose: bool = False, wipe: bool = True) -> SimResult:
    rng = random.Random(seed)
    params = SimParams.random(rng, wipe=wipe)
    sim = Simulator(seed, params, verbose=verbose)
    return sim.run()


__all__ = ["SimParams", "SimResult", "SimulationFailure", "Simulator", "run_seed"]
