"""The learner role and the replica: decided slots applied in order.

A learner records decisions (durably, so that a restart replays them instead of
asking peers), applies them in slot order to the ``StateMachine`` through the
client session table (exactly-once), snapshots and trims its log, and serves
catch-up to peers that fall behind.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import ClusterConfig
from .messages import CatchupReply, DecidedEntry, Session, Snapshot
from .outbox import Outbox, SafetyViolation
from .records import DecideRec, DurableState, SnapshotRec
from .statemachine import StateMachine
from .types import Command, Value

#: Callback into the node: (command, result or None if the command was a stale
#: duplicate that must not be answered with a result).
AppliedHook = Callable[[Command, bytes | None], None]
#: Callback into the node for every newly decided (slot, value).
DecidedHook = Callable[[int, Value], None]


class Replica:
    def __init__(
        self,
        node_id: int,
        cfg: ClusterConfig,
        state: DurableState,
        sm: StateMachine,
        out: Outbox,
        on_applied: AppliedHook,
        on_decided: DecidedHook | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = cfg
        self.sm = sm
        self.out = out
        self.on_applied = on_applied
        self.on_decided = on_decided
        self.sessions: dict[int, Session] = {}
        #: Highest slot applied; every slot <= applied is applied, in order.
        self.applied = -1
        self.snapshot: Snapshot | None = None
        #: The highest snapshot slot known to be on this node's disk (the
        #: runtime says so through Node.persisted; a loaded one is).
        self.durable_snapshot = -1
        #: Decided values, including a retained tail below ``applied`` for peers.
        self.log: dict[int, Value] = {}
        #: Highest slot some leader told us is decided.
        self.known_commit = -1
        #: Called with the slot of every snapshot installed from a peer, in
        #: the step that installs it (the node's proposer steps down there).
        self.on_installed: Callable[[int], None] | None = None
        if state.snapshot is not None:
            self._install(state.snapshot, persist=False)
            self.durable_snapshot = state.snapshot.slot
        self.log.update(state.decided)
        # Replay the durable log after the snapshot (restart path).
        self._apply_ready(replay=True)

    # ------------------------------------------------------------ decisions

    def decide(self, slot: int, value: Value) -> bool:
        """Record that ``value`` is chosen in ``slot``. Returns False if known."""
        have = self.log.get(slot)
        if have is not None:
            if have != value:
                # Safety (Paxos Made Simple, section 2.1): only one value is chosen.
                raise SafetyViolation(
                    f"learner {self.id}: slot {slot} decided twice: {have!r} then {value!r}"
                )
            return False
        if slot <= self.applied:
            return False  # below our snapshot; cannot compare, nothing to do
        self.log[slot] = value
        self.out.persist(DecideRec(slot, value))
        if slot > self.known_commit:
            self.known_commit = slot
        if self.on_decided is not None:
            self.on_decided(slot, value)
        self._apply_ready()
        return True

    def _apply_ready(self, replay: bool = False) -> None:
        nxt = self.applied + 1
        while nxt in self.log:
            value = self.log[nxt]
            for cmd in value:
                self._apply_command(cmd)
            self.applied = nxt
            if not replay:
                self.out.ready.committed.append(DecidedEntry(nxt, value))
            nxt += 1
            if (
                self.applied + 1
                >= (self.snapshot.slot + 1 if self.snapshot else 0) + self.cfg.snapshot_interval
            ):
                self.take_snapshot()
        if self.applied > self.known_commit:
            self.known_commit = self.applied

    def _apply_command(self, cmd: Command) -> None:
        sess = self.sessions.get(cmd.client_id)
        if sess is not None and cmd.seq <= sess.seq:
            # A duplicate (a client retry that was proposed twice): exactly-once
            # means it is not applied again; the first answer stands.
            self.on_applied(cmd, sess.result if cmd.seq == sess.seq else None)
            return
        result = self.sm.apply(cmd.payload)
        self.sessions[cmd.client_id] = Session(cmd.client_id, cmd.seq, result)
        self.on_applied(cmd, result)

    def precheck(self, payload: bytes) -> bytes | None:
        """The state machine's answer to a write it would refuse as things
        stand (its optional ``precheck``), or None: propose it."""
        check = getattr(self.sm, "precheck", None)
        return check(payload) if check is not None else None

    # ------------------------------------------------------------ snapshots

    def take_snapshot(self, retain: int | None = None) -> None:
        """Snapshot the applied state; keep ``retain`` decided slots below it
        for peers' catch-up (the configured ``log_retain`` by default; a
        compaction for space keeps none: a peer that far behind gets the
        snapshot)."""
        keep = self.cfg.log_retain if retain is None else retain
        snap = Snapshot(
            self.applied,
            self.sm.snapshot(),
            tuple(self.sessions[c] for c in sorted(self.sessions)),
        )
        self.snapshot = snap
        self.out.persist(SnapshotRec(snap, keep))
        cut = snap.slot - keep
        for s in [s for s in self.log if s <= cut]:
            del self.log[s]

    def _install(self, snap: Snapshot, persist: bool) -> None:
        self.sm.restore(snap.state)
        self.sessions = {s.client_id: s for s in snap.sessions}
        self.applied = snap.slot
        self.snapshot = snap
        for s in [s for s in self.log if s <= snap.slot]:
            del self.log[s]
        if snap.slot > self.known_commit:
            self.known_commit = snap.slot
        if persist:
            self.out.persist(SnapshotRec(snap, 0))
            if self.on_installed is not None:
                # In this same step, before anything else runs (issue 11, S1).
                self.on_installed(snap.slot)
            # Slots just past the snapshot may already be decided here.
            self._apply_ready()

    # ------------------------------------------------------------ catch-up

    def serve_catchup(self, from_slot: int, max_entries: int | None = None) -> CatchupReply | None:
        snap: Snapshot | None = None
        start = from_slot
        if start not in self.log and start <= self.applied:
            if self.snapshot is None or self.snapshot.slot < start:
                return None
            snap = self.snapshot
            start = snap.slot + 1
        entries: list[DecidedEntry] = []
        s = start
        size = len(snap.state) if snap is not None else 0
        cap = self.cfg.catchup_batch
        if max_entries is not None:
            cap = min(cap, max_entries)
        while s in self.log and len(entries) < cap:
            v = self.log[s]
            n = sum(len(c.payload) for c in v)
            if entries and size + n > self.cfg.catchup_bytes:
                break  # the rest in the next reply (the learner asks at once)
            entries.append(DecidedEntry(s, v))
            size += n
            s += 1
        if snap is None and not entries:
            return None
        return CatchupReply(snap, tuple(entries), self.applied)

    def on_catchup_reply(self, m: CatchupReply) -> None:
        if m.snapshot is not None and m.snapshot.slot > self.applied:
            # Everything we have up to the snapshot slot is decided and would
            # match; drop it and continue from the snapshot.
            self._install(m.snapshot, persist=True)
        for e in m.entries:
            self.decide(e.slot, e.value)
        if m.commit > self.known_commit:
            self.known_commit = m.commit

    def debug_state(self) -> tuple[object, ...]:
        return (
            self.applied,
            self.known_commit,
            tuple(sorted(self.log.items())),
            self.sm.snapshot(),
            tuple(sorted(self.sessions.items())),
        )
