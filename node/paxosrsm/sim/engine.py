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
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..check.linearizability import CheckResult, Op, check_history
from ..client import Client, Completion, Outcome
from ..config import ClusterConfig
from ..messages import ClientReply, ClientRequest, Envelope
from ..node import Node
from ..outbox import Ready, SafetyViolation
from ..records import AcceptRec, DurableState, Record
from ..statemachine import encode_op
from ..types import Ballot, Kind, Value

US = 1
MS = 1000 * US
SEC = 1000 * MS


class SimulationFailure(AssertionError):
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

    @staticmethod
    def random(rng: random.Random, *, wipe: bool = False) -> SimParams:
        n = rng.choice((1, 3, 3, 3, 5, 5, 7))
        cfg = ClusterConfig(
            n_acceptors=n,
            nack=rng.random() < 0.5,
            window=rng.choice((1, 4, 32)),
            max_batch=rng.choice((1, 8, 64)),
            snapshot_interval=rng.choice((5, 20, 1000)),
            log_retain=rng.choice((0, 3, 50)),
            retransmit_ticks=rng.choice((3, 4, 6)),
            eager_propose=rng.random() < 0.5,
            propose_slots_per_call=rng.choice((0, 0, 1, 2)),
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
        )
        if wipe and n > 1:
            kinds += ("wipe", "wipe")
        runtime_order = rng.random() < 0.5
        return SimParams(
            runtime_order=runtime_order,
            flusher_lag=rng.choice((0.0, 0.05, 0.3)) if runtime_order else 0.0,
            cfg=cfg,
            clients=rng.choice((1, 2, 3, 4)),
            loss=rng.choice((0.0, 0.01, 0.05)),
            dup=rng.choice((0.0, 0.01, 0.05)),
            max_delay_us=rng.choice((1 * MS, 3 * MS, 20 * MS)),
            fsync_us=rng.choice((100 * US, 1 * MS, 5 * MS)),
            fault_kinds=kinds,
        )


@dataclass
class SimDisk:
    durable: list[Record] = field(default_factory=list)
    busy_until: int = 0


@dataclass
class SimNode:
    id: int
    node: Node | None
    disk: SimDisk
    epoch: int = 0
    paused: bool = False
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

    def summary(self) -> str:
        c = self.params.cfg
        return (
            f"seed={self.seed} n={c.n_acceptors} nack={c.nack} ops={self.ops} "
            f"ok={self.ok_ops} unknown={self.unknown_ops} slots={self.max_slot + 1} "
            f"faults={self.faults} sim_time={self.end_us / SEC:.1f}s"
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
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self.nodes: dict[int, SimNode] = {}
        for nid in self.cfg.node_ids:
            sn = SimNode(nid, None, SimDisk())
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
        # oracle
        self.votes: dict[tuple[int, Ballot], tuple[Value, set[int]]] = {}
        self.chosen: dict[int, Value] = {}
        self.learned: dict[int, Value] = {}
        self.submitted: set[tuple[int, int, bytes]] = set()
        self.faults_injected = 0
        self.elections = 0
        self.healed_at: int | None = None
        for i in range(self.p.clients):
            cid = 100 + i
            self.clients[cid] = Client(
                cid,
                tuple(self.cfg.proposer_ids),
                random.Random(self.rng.getrandbits(64)),
                retry_ticks=self.p.client_retry_ticks,
                give_up_ticks=self.p.client_give_up_ticks,
            )
            self.client_ops[cid] = None
            self._at(self.rng.randrange(self.p.tick_us), self._client_tick, cid)
        for sn in self.nodes.values():
            self._at(self.rng.randrange(self.p.tick_us), self._node_tick, sn.id, sn.epoch)

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
                raise SimulationFailure(self.seed, f"runtime invariant: {e}") from e
        self.now = max(self.now, t)

    def fail(self, what: str) -> None:
        raise SimulationFailure(self.seed, what)

    # ------------------------------------------------------------ nodes

    def _boot(self, sn: SimNode) -> None:
        state = DurableState.fold(sn.disk.durable)
        sn.incarnation += 1
        initial = "existing" if sn.wiped and self.p.recovery else "new"
        sn.node = Node(self.cfg, sn.id, state, seed=self.rng.getrandbits(64), initial_state=initial)

    def _node_tick(self, nid: int, epoch: int) -> None:
        sn = self.nodes[nid]
        if sn.epoch != epoch:
            return  # this timer belongs to an earlier incarnation
        self._at(self.p.tick_us, self._node_tick, nid, epoch)
        if sn.node is None or sn.paused:
            return
        was_leader = sn.node.is_leader
        sn.node.tick()
        sn.node.check_invariants(full=sn.node.ticks % 16 == 0)
        if sn.node.is_leader and not was_leader:
            self.elections += 1
            self.log(f"node {nid} leads")
        self._drain(sn)

    def _deliver(self, env: Envelope, epoch: int) -> None:
        sn = self.nodes[env.dst]
        if sn.node is None or (epoch >= 0 and epoch != sn.epoch):
            return  # dead, or a self-message of an earlier incarnation
        if sn.paused:
            sn.buffered.append(lambda: self._deliver(env, epoch))
            return
        was_leader = sn.node.is_leader
        sn.node.step(env.src, env.msg, revalidate=False)
        sn.node.check_invariants()
        if sn.node.is_leader and not was_leader:
            self.elections += 1
            self.log(f"node {sn.id} leads")
        self._drain(sn)

    def _deliver_client(self, nid: int, req: ClientRequest) -> None:
        sn = self.nodes[nid]
        if sn.node is None:
            return
        if sn.paused:
            sn.buffered.append(lambda: self._deliver_client(nid, req))
            return
        sn.node.client_request(req)
        sn.node.check_invariants()
        self._drain(sn)

    def _drain(self, sn: SimNode) -> None:
        if self.p.runtime_order:
            sn.dirty = True
            self._wake_flusher(sn)
            return
        node = sn.node
        assert node is not None
        node.propose()  # (for configs with eager_propose=False)
        node.check_invariants()
        self._process_ready(sn, node.ready())

    def _wake_flusher(self, sn: SimNode) -> None:
        if sn.flushing or not sn.dirty:
            return
        sn.flushing = True
        delay = 0
        if self.p.flusher_lag and self.rng.random() < self.p.flusher_lag:
            delay = self.rng.randint(1, self.p.flusher_lag_ticks * self.p.tick_us)
        self._at(delay, self._flusher_cycle, sn.id, sn.epoch)

    def _flusher_cycle(self, nid: int, epoch: int) -> None:
        """One cycle of the runtime's flusher: propose, ready, fsync, send."""
        sn = self.nodes[nid]
        if sn.epoch != epoch or sn.node is None:
            return  # crashed: the new incarnation has its own flusher
        if sn.paused:
            sn.flushing = False  # a paused process does nothing; an input wakes it
            return
        sn.dirty = False
        node = sn.node
        if node.propose():
            sn.dirty = True  # the next wave goes out in the next cycle
        node.check_invariants()
        self._process_ready(sn, node.ready(), then=lambda: self._flusher_done(sn, epoch))

    def _flusher_done(self, sn: SimNode, epoch: int) -> None:
        if sn.epoch != epoch:
            return
        sn.flushing = False
        self._wake_flusher(sn)

    def _process_ready(
        self, sn: SimNode, rd: Ready, then: Callable[[], None] | None = None
    ) -> None:
        if rd.empty():
            if then is not None:
                then()
            return
        for e in rd.committed:
            self._check_learned(sn.id, e.slot, e.value)
        epoch = sn.epoch
        disk = sn.disk
        start = max(self.now, disk.busy_until)
        done = start + (self.p.fsync_us if rd.records else 0)
        disk.busy_until = done
        records = rd.records

        def fsynced() -> None:
            if sn.epoch != epoch:
                return  # crashed before the fsync finished: records and replies are lost
            disk.durable.extend(records)
            for r in records:
                if isinstance(r, AcceptRec):
                    self._count_vote(sn.id, r)
            for env in rd.messages:
                self._send(env)
            for rep in rd.replies:
                self._send_reply(sn.id, rep)
            if then is not None:
                then()

        if done == self.now:
            fsynced()
        else:
            self._at(done - self.now, fsynced)

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
        if (env.src, env.dst) in self.blocked:
            return
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
            self._at(d, self._deliver, env, -1)

    def _send_reply(self, nid: int, rep: ClientReply) -> None:
        if self.rng.random() < self.loss:
            return
        d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
        self._at(d, self._client_reply, rep.client_id, rep, nid)

    # ------------------------------------------------------------ clients

    def _client_tick(self, cid: int) -> None:
        self._at(self.p.tick_us, self._client_tick, cid)
        c = self.clients[cid]
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
        arg: tuple[str | None, ...]
        if r < 0.35:
            op, arg = "get", ()
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
        self.log(
            f"client {cid} seq={rep.seq} <- node {src} {rep.status.name} hint={rep.leader_hint}"
        )
        self.clients[cid].on_reply(rep, src)
        self._client_flush(cid)

    def _client_flush(self, cid: int) -> None:
        out, done = self.clients[cid].take()
        for nid, req in out:
            self.log(f"client {cid} seq={req.seq} -> node {nid}")
            if self.rng.random() < self.loss:
                continue
            d = self.rng.randint(self.p.min_delay_us, self.p.max_delay_us)
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
            acc = [i for i in ids if i < self.cfg.n_acceptors]
            sn = self.nodes[self.rng.choice(acc)]
            # At most f acceptors may have lost their disks and not recovered:
            # with more, the data is gone (no quorum of copies) - no protocol
            # can survive that, so the nemesis does not ask it to.
            amnesiac = sum(1 for i in acc if self.amnesiac(i))
            if sn.node is not None and not self.amnesiac(sn.id) and amnesiac < self.cfg.quorum - 1:
                self.wipe(sn.id)
                self.log(f"wipe disk of node {sn.id}")
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

    def _break_sessions(self, acceptor: int, only_leader: int | None = None) -> None:
        """The TCP promise sessions of ``acceptor`` broke (the runtime's
        session_lost input): each proposer that had one goes back to preparing."""
        for sn in self.nodes.values():
            node = sn.node
            if node is None or sn.paused or node.proposer is None:
                continue
            if only_leader is not None and sn.id != only_leader:
                continue
            b = node.proposer.ballot
            if b is not None and acceptor != sn.id:
                self.log(f"session {acceptor}->{sn.id} at {b} broke")
                node.session_lost(acceptor, b)
                self._drain(sn)

    def _heal_net(self) -> None:
        self.blocked = set()
        self.log("network healed")

    def _crash(self, sn: SimNode) -> None:
        self.log(f"crash node {sn.id}")
        sn.node = None
        sn.epoch += 1
        sn.paused = False
        sn.dirty = sn.flushing = False
        sn.buffered.clear()
        sn.disk.busy_until = self.now

    def crash(self, nid: int) -> None:
        self._crash(self.nodes[nid])

    def wipe(self, nid: int) -> None:
        """Crash the node and lose its whole disk (same id, empty data directory)."""
        sn = self.nodes[nid]
        if sn.node is not None:
            self._crash(sn)
        sn.disk.durable = []
        sn.wiped = True

    def amnesiac(self, nid: int) -> bool:
        """Wiped and not yet recovered (restarted or not)."""
        sn = self.nodes[nid]
        if not sn.wiped:
            return False
        if sn.node is not None and not sn.node.recovering:
            if self.p.recovery:
                sn.wiped = False  # recovered: it votes again
            return not self.p.recovery
        return True

    def _restart(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.node is not None:
            return
        self.log(f"restart node {nid}")
        self._boot(sn)
        self._at(self.rng.randrange(self.p.tick_us), self._node_tick, nid, sn.epoch)

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
            if node is None or node.proposer is None or not node.is_leader:
                continue
            b = node.proposer.ballot
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
            if sn.node is not None and sn.node.replica is not None:
                states[nid] = (sn.node.replica.applied, sn.node.replica.sm.snapshot())
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
        )


def states_summary(states: dict[int, tuple[int, bytes]]) -> str:
    return ", ".join(f"node {n}: applied={a} state={s[:60]!r}" for n, (a, s) in states.items())


def run_seed(seed: int, *, verbose: bool = False, wipe: bool = True) -> SimResult:
    rng = random.Random(seed)
    params = SimParams.random(rng, wipe=wipe)
    sim = Simulator(seed, params, verbose=verbose)
    return sim.run()


__all__ = ["SimParams", "SimResult", "SimulationFailure", "Simulator", "run_seed"]
