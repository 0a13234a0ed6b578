"""A cluster of real nodes inside one process, each on its own durable storage.

Messages are delivered in-process (no sockets: the networked node is issue 4),
but everything else is real: SQLite files, fsync, snapshots on disk, restarts
from disk. The Ready contract is honoured: a node's records are appended (one
fsync) before any of its messages or replies are released.

Used by the restart and crash tests (in real processes that are killed with
SIGKILL) and by the recovery benchmarks.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .config import ClusterConfig
from .messages import ClientReply, ClientRequest, Envelope, Status
from .node import Node
from .storage import DEFAULT_ENGINE, Identity, Storage, open_storage
from .storage.sqlite import CrashHook
from .types import Kind


class LocalCluster:
    def __init__(
        self,
        root: str | Path,
        cfg: ClusterConfig,
        *,
        cluster_id: str = "local",
        seed: int = 0,
        crash_hook: Callable[[int], CrashHook | None] | None = None,
        initial_state: str = "new",
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        self.root = Path(root)
        self.engine = engine
        self.cfg = cfg
        self.cluster_id = cluster_id
        self.rng = random.Random(seed)
        self.crash_hook = crash_hook
        self.nodes: dict[int, Node] = {}
        self.stores: dict[int, Storage] = {}
        self.queue: deque[Envelope] = deque()
        self.replies: dict[tuple[int, int], ClientReply] = {}
        self.partitioned: set[int] = set()
        for nid in cfg.node_ids:
            self.start(nid, initial_state)

    # ------------------------------------------------------------ lifecycle

    def data_dir(self, nid: int) -> Path:
        return self.root / f"node-{nid}"

    def start(self, nid: int, initial_state: str = "new") -> Node:
        hook = self.crash_hook(nid) if self.crash_hook else None
        store = open_storage(
            self.data_dir(nid),
            Identity(self.cluster_id, nid, self.cfg.n_acceptors),
            self.engine,
            hook,
        )
        state = store.load()
        node = Node(
            self.cfg, nid, state, seed=self.rng.getrandbits(64), initial_state=initial_state
        )
        self.stores[nid] = store
        self.nodes[nid] = node
        self._flush(nid)
        return node

    def stop(self, nid: int) -> None:
        """A clean stop (or a crash: nothing unflushed exists between steps)."""
        self.nodes.pop(nid, None)
        store = self.stores.pop(nid, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        for nid in list(self.nodes):
            self.stop(nid)

    # ------------------------------------------------------------ driving

    def _flush(self, nid: int) -> None:
        node = self.nodes[nid]
        rd = node.ready()
        self.stores[nid].append(rd.records)  # durable before anything leaves
        for env in rd.messages:
            if env.dst not in self.nodes:
                continue  # down: lost, as on a network
            if env.src != env.dst and {env.src, env.dst} & self.partitioned:
                continue
            self.queue.append(env)
        for rep in rd.replies:
            self.replies[(rep.client_id, rep.seq)] = rep

    def deliver(self, limit: int = 1_000_000) -> int:
        n = 0
        while self.queue and n < limit:
            env = self.queue.popleft()
            node = self.nodes.get(env.dst)
            if node is None:
                continue
            node.step(env.src, env.msg, revalidate=False)
            self._flush(env.dst)
            n += 1
        return n

    def tick(self) -> None:
        for nid in list(self.nodes):
            self.nodes[nid].tick()
            self._flush(nid)
        self.deliver()

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def leader(self) -> int | None:
        ls = [n for n, node in self.nodes.items() if node.is_leader and n not in self.partitioned]
        return ls[0] if len(ls) == 1 else None

    def wait_leader(self, max_ticks: int = 2000) -> int:
        for _ in range(max_ticks):
            lead = self.leader()
            if lead is not None:
                return lead
            self.tick()
        raise TimeoutError("no leader elected")

    def request(
        self, cid: int, seq: int, kind: Kind, payload: bytes, max_ticks: int = 500
    ) -> ClientReply:
        """Send to the leader (retrying across leader changes) until answered OK."""
        req = ClientRequest(cid, seq, kind, payload)
        last: ClientReply | None = None
        for _ in range(max_ticks):
            lead = self.wait_leader()
            self.nodes[lead].client_request(req)
            self._flush(lead)
            self.deliver()
            for _ in range(20):
                rep = self.replies.pop((cid, seq), None)
                if rep is not None:
                    if rep.status == Status.OK:
                        return rep
                    last = rep
                    break
                self.tick()
        raise TimeoutError(f"request {cid}/{seq} not answered (last: {last})")
