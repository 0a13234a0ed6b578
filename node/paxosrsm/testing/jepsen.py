"""A Jepsen-style test on real node processes in network namespaces (issue 11).

Each node is ``python -m paxosrsm.net.main`` in its own network namespace
(``ip netns``), joined to the others by veth pairs on one bridge, so that
partitions are real packet drops (iptables in the receiving namespace) and not
a simulation. Clients run in the root namespace and reach every node over the
bridge (Jepsen's usual choice: the nemesis cuts the nodes from each other, not
from their clients). Needs root.

Nemeses (5 nodes by default):

* ``none``: fault-free, the reference throughput;
* ``halves``: a random 2 | 3 split;
* ``bridge``: two halves and one node that sees both;
* ``ring``: every node sees only its two neighbours;
* ``isolate-leader``: the leader is cut off from every peer;
* ``kill``: kill -9 the leader, restart it 3 s later;
* ``pause``: SIGSTOP the leader for 3 s;
* ``wipe``: kill -9 a follower, delete its data directory, restart it empty
  (it recovers before it votes, docs/design.md section 8a).

For each run: a concurrent workload of puts, gets and compare-and-sets over a
few keys, a history checked for linearizability, and the liveness figures
(elections per minute during the fault, the longest time with no completed
operation, throughput during the fault against the fault-free run, and
whether the leader changed after the heal).

    python -m paxosrsm.testing.jepsen                       # every nemesis
    python -m paxosrsm.testing.jepsen --nemesis bridge ring --fault-seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import mvcc
from ..check.linearizability import Op, check_history
from ..client.aio import AsyncClient, ClientError, KVError, Unavailable, UnknownOutcome
from ..client.mvcc import MVCCClient, prefix_end
from ..net.auth import load_key
from ..net.identity import node_key_path, write_node_keys
from ..types import Kind

NEMESES = ("none", "halves", "bridge", "ring", "isolate-leader", "kill", "pause", "wipe")
PEER_PORT = 7000
HTTP_PORT = 8000


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Namespaces:
    """n network namespaces on one bridge: node i is 10.77.<k>.<i+1>."""

    def __init__(self, n: int, prefix: str = "pxj", subnet: str = "10.77.0") -> None:
        self.n = n
        self.prefix = prefix
        self.subnet = subnet
        self.bridge = f"{prefix}br0"
        self.blocked: set[tuple[int, int]] = set()

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    def ns(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def up(self) -> None:
        self.down()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # Bridged frames may cross the root namespace's FORWARD chain
        # (br_netfilter), whose policy is often DROP (Docker, Kubernetes).
        _run("iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        for i in range(self.n):
            ns, veth = self.ns(i), f"{self.prefix}v{i}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for i in range(self.n):
            subprocess.run(["ip", "netns", "del", self.ns(i)], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", self.bridge], stderr=subprocess.DEVNULL)
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        while subprocess.run(["iptables", "-D", *rule], stderr=subprocess.DEVNULL).returncode == 0:
            pass

    def block(self, src: int, dst: int) -> None:
        """Drop every packet from ``src`` at ``dst`` (one direction)."""
        if (src, dst) in self.blocked:
            return
        self.blocked.add((src, dst))
        _run("ip", "netns", "exec", self.ns(dst), "iptables", "-A", "INPUT",
             "-s", self.ip(src), "-j", "DROP")  # fmt: skip

    def cut(self, a: set[int], b: set[int]) -> None:
        for x in a:
            for y in b:
                self.block(x, y)
                self.block(y, x)

    def heal(self) -> None:
        for i in range(self.n):
            _run("ip", "netns", "exec", self.ns(i), "iptables", "-F", "INPUT")
        self.blocked.clear()


class Cluster:
    """The node processes, one per namespace."""

    def __init__(self, nets: Namespaces, root: Path) -> None:
        self.nets = nets
        self.root = root
        self.n = nets.n
        self.acceptors = [f"{nets.ip(i)}:{PEER_PORT}" for i in range(self.n)]
        self.http = [f"{nets.ip(i)}:{HTTP_PORT}" for i in range(self.n)]
        (root / "cluster.key").write_text(os.urandom(24).hex())
        write_node_keys(root, range(self.n))  # each node its own identity
        self.key = load_key(root / "cluster.key")
        self.cluster_id = f"jepsen-{os.urandom(3).hex()}"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def data(self, i: int) -> Path:
        return self.root / f"node-{i}"

    def start(self, i: int, initial: str = "new") -> None:
        self.data(i).mkdir(exist_ok=True)
        cmd = [
            "ip", "netns", "exec", self.nets.ns(i),
            sys.executable, "-m", "paxosrsm.net.main",
            "--node-id", str(i), "--cluster-id", self.cluster_id,
            "--acceptors", ",".join(self.acceptors), "--learners", "",
            "--http-peers", ",".join(self.http),
            "--listen", "0.0.0.0", "--port", str(PEER_PORT),
            "--http-listen", "0.0.0.0", "--http-port", str(HTTP_PORT),
            "--http-anonymous", "true",  # a test network of namespaces
            "--data-dir", str(self.data(i)), "--key-file", str(node_key_path(self.root, i)),
            "--initial-cluster-state", initial,
        ]  # fmt: skip
        with open(self.root / f"node-{i}.log", "ab") as logf:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.procs[i] = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def kill(self, i: int) -> None:
        p = self.procs.pop(i, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)

    def signal(self, i: int, sig: int) -> None:
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            p.send_signal(sig)

    def wipe(self, i: int) -> None:
        self.kill(i)
        shutil.rmtree(self.data(i), ignore_errors=True)

    def close(self) -> None:
        for i in list(self.procs):
            self.kill(i)

    def status(self, i: int, timeout: float = 0.4) -> dict[str, Any] | None:
        try:
            url = f"http://{self.http[i]}/v1/status"
            with urllib.request.urlopen(url, timeout=timeout) as r:
                out: dict[str, Any] = json.loads(r.read())
                return out
        except (OSError, ValueError):
            return None

    def leader(self) -> int | None:
        for i in range(self.n):
            st = self.status(i)
            if st is not None and st.get("is_leader"):
                return i
        return None

    def _rc(self, i: int) -> int | None:
        p = self.procs.get(i)
        return None if p is None else p.poll()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = [self.status(i) for i in range(self.n)]
            if all(s is not None and s.get("ready") for s in sts):
                return
            time.sleep(0.1)
        hung = [i for i in range(self.n) if self.status(i) is None]
        for i in hung:
            self.signal(i, signal.SIGUSR1)  # the node prints its stacks to its log
        time.sleep(1.0)
        logs = "\n".join(
            f"--- node {i} (exit code {self._rc(i)}): {self.status(i)}\n"
            + "\n".join(
                (self.root / f"node-{i}.log")
                .read_text(errors="replace")
                .splitlines()[-(80 if i in hung else 8) :]
            )
            for i in range(self.n)
            if (self.root / f"node-{i}.log").exists()
        )
        raise TimeoutError(f"cluster not ready:\n{logs}")


@dataclass
class RunResult:
    nemesis: str
    seconds: float
    ops_ok: int
    ops_unknown: int
    ops_failed: int
    throughput: float  # completed ops/s during the fault window
    throughput_ratio: float | None  # against the fault-free run
    longest_gap_s: float  # no operation completed for this long (whole run)
    elections: int  # new leader ballots seen during the fault window
    elections_per_min: float
    leader_changed_after_heal: bool | None
    linearizable: bool
    explanation: str = ""
    events: list[str] = field(default_factory=list)
    #: The etcd-API workload (``api="etcd"``): the watch saw every change of
    #: the store's log, in order, once, and nothing else (None: not run).
    watch_ok: bool | None = None
    watch_events: int = 0


def _us(t: float) -> int:
    return int(t * 1_000_000)


class Workload:
    """Concurrent clients; every operation recorded for the checker."""

    def __init__(
        self, c: Cluster, workers: int, keys: int, seed: int, prefix: str, api: str = "kv"
    ) -> None:
        self.c = c
        #: "kv": the KV store's get/put/cas; "etcd": the MVCC store's
        #: linearizable Range, Put, and a Txn compare-and-set (issue 13).
        self.api = api
        self.prefix = prefix
        self.watched: list[tuple[int, str, str]] = []  # (revision, key, value) by the watch
        self.workers = workers
        self.keys = [f"{prefix}-k{i}" for i in range(keys)]
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        self.done_at: list[float] = []
        self.failed = 0
        self.unknown = 0
        self.t0 = time.monotonic()
        self.stop = False
        self._n = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def worker(self, w: int, client: AsyncClient) -> None:
        while not self.stop:
            key = self.rng.choice(self.keys)
            r = self.rng.random()
            self._n += 1
            value = f"{w}.{self._n}"
            inv = self.now()
            kind: str
            arg: tuple[str | None, ...]
            try:
                if r < 0.4:
                    kind, arg = "get", ()
                    res: Any = await self._get(client, key)
                elif r < 0.8:
                    kind, arg = "put", (value,)
                    await self._put(client, key, value)
                    res = None
                else:
                    recent = [o.arg[-1] for o in self.ops[-20:] if o.key == key and o.arg]
                    exp = self.rng.choice([None, *recent[-3:]])
                    kind, arg = "cas", (exp, value)
                    res = await self._cas(client, key, exp, value)
            except UnknownOutcome:
                self.unknown += 1
                self.ops.append(Op(w, kind, key, arg, _us(inv), None, None))
                continue
            except Unavailable:
                self.failed += 1
                continue
            except KVError:
                self.failed += 1
                continue
            except ClientError:
                self.failed += 1
                continue
            t = self.now()
            self.ops.append(Op(w, kind, key, arg, _us(inv), _us(t), res))
            self.done_at.append(t)

    async def _get(self, client: AsyncClient, key: str) -> str | None:
        if self.api == "kv":
            return await client.get(key)
        out = await MVCCClient(client).range(key)
        return out["kvs"][0]["value"].decode() if out["kvs"] else None

    async def _put(self, client: AsyncClient, key: str, value: str) -> None:
        if self.api == "kv":
            await client.put(key, value)
        else:
            await MVCCClient(client).put(key, value)

    async def _cas(self, client: AsyncClient, key: str, exp: str | None, value: str) -> bool:
        if self.api == "kv":
            return await client.cas(key, exp, value)
        k = key.encode()
        if exp is None:  # absent: version 0
            cmp = {"key": k, "target": mvcc.T_VERSION, "result": mvcc.EQUAL, "version": 0}
        else:
            cmp = {"key": k, "target": mvcc.T_VALUE, "result": mvcc.EQUAL, "value": exp.encode()}
        put = {"op": "put", "key": k, "value": value.encode()}
        out = await MVCCClient(client).txn([cmp], [put])
        return bool(out["succeeded"])

    async def watcher(self, client: AsyncClient, start: int) -> None:
        """One watch on the workload's keys from ``start``, through the faults
        (it polls the leader, resuming from the last revision seen)."""
        kv = MVCCClient(client)
        while not self.stop:
            try:
                async for ev in kv.watch(self.prefix, prefix=True, start=start):
                    rev = int(ev["kv"]["mod_revision"])
                    value = ev["kv"]["value"].decode() if ev["type"] == 0 else ""
                    self.watched.append((rev, ev["kv"]["key"].decode(), value))
                    start = rev  # a revision's events come together; resume at it
                    if self.stop:
                        return
            except ClientError:
                await asyncio.sleep(0.1)
                if self.watched:
                    # Resume after the last whole revision seen.
                    last = self.watched[-1][0]
                    while self.watched and self.watched[-1][0] == last:
                        self.watched.pop()
                    start = last

    async def run(self, seconds: float, script: Any) -> None:
        clients = [
            await AsyncClient(
                [(self.c.nets.ip(i), PEER_PORT) for i in range(self.c.n)], self.c.key, timeout=3.0
            ).connect()
            for _ in range(self.workers)
        ]
        try:
            watch_task = None
            if self.api == "etcd":
                # The watch's start is read before any worker runs: every put
                # the workers make is then at or after it (the checker needs it).
                kv = MVCCClient(clients[0])
                self.watch_start = int(
                    (await kv._call({"op": "rev"}, Kind.READ))["revision"]
                ) + 1  # fmt: skip
                watch_task = asyncio.create_task(self.watcher(clients[0], self.watch_start))
            tasks = [
                asyncio.create_task(self.worker(w, cl)) for w, cl in enumerate(clients, start=1)
            ]
            if watch_task is not None:
                tasks.append(watch_task)
            await script()
            remaining = seconds - self.now()
            if remaining > 0:
                await asyncio.sleep(remaining)
            self.stop = True
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for cl in clients:
                await cl.close()


class Monitor:
    """Polls every node's status: which ballots led, and when."""

    def __init__(self, c: Cluster, t0: float) -> None:
        self.c = c
        self.t0 = t0
        self.seen: dict[str, float] = {}  # leader ballot -> first seen (s)
        #: (time, the highest ballot any node leads at then)
        self.leader_at: list[tuple[float, tuple[int, int]]] = []
        self.stop = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop:
            t = time.monotonic() - self.t0
            sts = await asyncio.gather(
                *(loop.run_in_executor(None, self.c.status, i, 0.3) for i in range(self.c.n))
            )
            top: tuple[int, int] | None = None
            for st in sts:
                if st is not None and st.get("is_leader") and st.get("ballot"):
                    b = str(st["ballot"])
                    self.seen.setdefault(b, t)
                    r, _, nid = b.partition(".")
                    if top is None or (int(r), int(nid)) > top:
                        top = (int(r), int(nid))
            if top is not None:
                self.leader_at.append((t, top))
            await asyncio.sleep(0.1)

    def leader_near(self, t: float) -> tuple[int, int] | None:
        """The leading ballot last seen at or before ``t``."""
        best = None
        for ts, b in self.leader_at:
            if ts <= t:
                best = b
        return best


def _groups(nemesis: str, n: int, leader: int, rng: random.Random) -> list[tuple[int, int]]:
    """The directed links a partition nemesis drops."""
    others = [i for i in range(n) if i != leader]
    rng.shuffle(others)
    if nemesis == "halves":
        a = {leader, others[0]} if rng.random() < 0.5 else {others[0], others[1]}
        b = set(range(n)) - a
        return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]
    if nemesis == "bridge":
        near, bridge = {leader, others[0]}, others[1]
        far = set(range(n)) - near - {bridge}
        return [(x, y) for x in near for y in far] + [(y, x) for x in near for y in far]
    if nemesis == "ring":
        order = [leader, *others]
        return [
            (order[i], order[j])
            for i in range(n)
            for j in range(n)
            if i != j and (i - j) % n not in (1, n - 1)
        ]
    if nemesis == "isolate-leader":
        return [(leader, y) for y in others] + [(y, leader) for y in others]
    raise ValueError(nemesis)


async def run_one(
    c: Cluster,
    nemesis: str,
    *,
    fault_s: float,
    warm_s: float = 2.0,
    after_s: float = 4.0,
    workers: int = 8,
    seed: int = 0,
    baseline: float | None = None,
    api: str = "kv",
) -> RunResult:
    rng = random.Random(seed)
    c.wait_ready()
    total = warm_s + fault_s + after_s
    wl = Workload(c, workers, keys=4, seed=seed, prefix=f"{nemesis}-{seed}-{api}", api=api)
    mon = Monitor(c, wl.t0)
    events: list[str] = []
    window = (warm_s, warm_s + fault_s)
    heal_t: list[float] = []

    def ev(msg: str) -> None:
        events.append(f"{wl.now():6.2f}s {msg}")

    async def script() -> None:
        await asyncio.sleep(warm_s)
        loop = asyncio.get_running_loop()
        leader = await loop.run_in_executor(None, c.leader)
        if leader is None:
            leader = 0
        if nemesis in ("halves", "bridge", "ring", "isolate-leader"):
            links = _groups(nemesis, c.n, leader, rng)
            for s, d in links:
                c.nets.block(s, d)
            ev(f"{nemesis}: leader {leader}, {len(links)} links dropped")
            await asyncio.sleep(fault_s)
            c.nets.heal()
            heal_t.append(wl.now())
            ev("healed")
        elif nemesis == "kill":
            c.kill(leader)
            ev(f"kill -9 leader {leader}")
            await asyncio.sleep(3.0)
            c.start(leader)
            ev(f"restart {leader}")
            await asyncio.sleep(max(0.0, fault_s - 3.0))
        elif nemesis == "pause":
            c.signal(leader, signal.SIGSTOP)
            ev(f"SIGSTOP leader {leader}")
            await asyncio.sleep(3.0)
            c.signal(leader, signal.SIGCONT)
            heal_t.append(wl.now())
            ev(f"SIGCONT {leader}")
            await asyncio.sleep(max(0.0, fault_s - 3.0))
        elif nemesis == "wipe":
            victim = rng.choice([i for i in range(c.n) if i != leader])
            c.wipe(victim)
            ev(f"wipe node {victim} (kill -9, data deleted)")
            await asyncio.sleep(0.5)
            c.start(victim, initial="existing")
            ev(f"restart {victim} empty")
            await asyncio.sleep(max(0.0, fault_s - 0.5))
        else:
            await asyncio.sleep(fault_s)

    mon_task = asyncio.create_task(mon.run())
    try:
        await wl.run(total, script)
    finally:
        mon.stop = True
        await mon_task
    lo, hi = window
    in_window = [t for t in wl.done_at if lo <= t <= hi]
    tput = len(in_window) / (hi - lo)
    marks = [0.0, *sorted(wl.done_at), wl.now()]
    gap = max(b - a for a, b in itertools.pairwise(marks))
    first = sorted(mon.seen.values())
    elections = sum(1 for t in first if lo < t <= hi + 0.5)
    changed: bool | None = None
    if heal_t:
        before = mon.leader_near(heal_t[0])
        after = mon.leader_near(wl.now())
        changed = before is not None and after is not None and before != after
    res = check_history(wl.ops)
    watch_ok: bool | None = None
    watch_expl = ""
    if api == "etcd":
        watch_ok, watch_expl = await check_watch(c, wl)
    return RunResult(
        nemesis=nemesis,
        seconds=round(total, 1),
        ops_ok=len(wl.done_at),
        ops_unknown=wl.unknown,
        ops_failed=wl.failed,
        throughput=round(tput, 1),
        throughput_ratio=round(tput / baseline, 2) if baseline else None,
        longest_gap_s=round(gap, 2),
        elections=elections,
        elections_per_min=round(elections * 60 / (hi - lo), 1),
        leader_changed_after_heal=changed,
        linearizable=res.ok,
        explanation=("" if res.ok else str(res.explanation)[:500]) + watch_expl,
        events=events,
        watch_ok=watch_ok,
        watch_events=len(wl.watched),
    )


async def check_watch(c: Cluster, wl: Workload) -> tuple[bool, str]:
    """The watch's events against the store's change log read at the end
    (a linearizable read of every event from the watch's start): the same
    sequence, so none was missed, repeated, reordered or invented; and every
    acknowledged put's value is among them."""
    client = await AsyncClient(
        [(c.nets.ip(i), PEER_PORT) for i in range(c.n)], c.key, timeout=5.0
    ).connect()
    try:
        kv = MVCCClient(client)
        log: list[tuple[int, str, str]] = []
        start = wl.watch_start
        pfx = wl.prefix.encode()
        while True:
            req = {"op": "events", "start": start, "key": pfx, "range_end": prefix_end(pfx),
                   "limit": 1000}  # fmt: skip
            out = await kv._call(req, Kind.READ)
            for ev in out["events"]:
                value = ev["kv"]["value"].decode() if ev["type"] == 0 else ""
                log.append((int(ev["kv"]["mod_revision"]), ev["kv"]["key"].decode(), value))
            if int(out["next"]) > int(out["revision"]):
                break
            start = int(out["next"])
    finally:
        await client.close()
    seen = wl.watched
    if seen != log[: len(seen)]:
        i = next(i for i, (a, b) in enumerate(zip(seen, log, strict=False)) if a != b)
        return False, f" watch differs from the log at event {i}: {seen[i]} vs {log[i]}"
    if len(log) - len(seen) > 2_000:
        return False, f" the watch fell behind by {len(log) - len(seen)} events"
    acked = {(o.key, o.arg[0]) for o in wl.ops if o.kind == "put" and o.complete is not None}
    missing = acked - {(k, v) for _r, k, v in log}
    if missing:
        return False, f" acknowledged puts not in the change log: {sorted(missing)[:5]}"
    revs = [r for r, _k, _v in seen]
    if revs != sorted(revs):
        return False, " the watch's revisions go backwards"
    return True, ""


@contextlib.contextmanager
def environment(n: int, root: Path | None = None) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        raise PermissionError("the Jepsen-style test needs root (network namespaces, iptables)")
    nets = Namespaces(n)
    tmp = Path(tempfile.mkdtemp(prefix="paxos-jepsen-")) if root is None else root
    nets.up()
    c = Cluster(nets, tmp)
    try:
        for i in range(n):
            c.start(i)
        yield c
    finally:
        c.close()
        nets.down()
        if root is None and not os.environ.get("PAXOS_JEPSEN_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


async def campaign(
    nemeses: list[str], n: int = 5, fault_s: float = 8.0, seed: int = 0
) -> list[RunResult]:
    out: list[RunResult] = []
    with environment(n) as c:
        base = await run_one(c, "none", fault_s=fault_s, seed=seed)
        out.append(base)
        for i, nem in enumerate(nemeses):
            if nem == "none":
                continue
            r = await run_one(c, nem, fault_s=fault_s, seed=seed + i + 1, baseline=base.throughput)
            out.append(r)
    return out


def report(results: list[RunResult]) -> str:
    head = (
        f"{'nemesis':<15} {'ok':>6} {'unknown':>7} {'ops/s':>7} {'vs none':>7} "
        f"{'max gap':>8} {'elect/min':>9} {'leader moved':>12} {'linearizable':>12}"
    )
    lines = [head]
    for r in results:
        ratio = f"{r.throughput_ratio:.2f}" if r.throughput_ratio is not None else "-"
        moved = "-" if r.leader_changed_after_heal is None else str(r.leader_changed_after_heal)
        lines.append(
            f"{r.nemesis:<15} {r.ops_ok:>6} {r.ops_unknown:>7} {r.throughput:>7.1f} {ratio:>7} "
            f"{r.longest_gap_s:>7.2f}s {r.elections_per_min:>9.1f} {moved:>12} "
            f"{r.linearizable!s:>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paxosrsm.testing.jepsen", description=__doc__)
    ap.add_argument("--nemesis", nargs="*", default=list(NEMESES), choices=NEMESES)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--fault-seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    results = asyncio.run(campaign(a.nemesis, a.nodes, a.fault_seconds, a.seed))
    print(report(results))
    for r in results:
        for e in r.events:
            print(f"  [{r.nemesis}] {e}")
        if not r.linearizable:
            print(f"  [{r.nemesis}] NOT LINEARIZABLE: {r.explanation}")
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.linearizable for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
