"""PySyncObj, measured as a peer of our Multi-Paxos KV store, in the same run and machine.

    python bench/peers/pysyncobj_peer.py [--quick]

Everything runs as real OS processes on 127.0.0.1: a 3-node PySyncObj cluster, one process
per node, each holding a replicated dict (a ``SyncObj`` subclass with a ``@replicated`` put).
A parent process (this module, imported or run as a script) starts the nodes, drives them over
their stdin/stdout with one JSON line per request, samples their CPU from /proc, and kills them
all at the end, whatever happens.

Where the load comes from.  PySyncObj has no client protocol: the application calls a
``@replicated`` method on its own member object (``callback=`` for the asynchronous form) and a
follower forwards the command to the leader.  PySyncObj's own benchmarks (``benchmarks/
testobj.py`` and ``testobj_delay.py``, driven by ``benchmarks.py``) do exactly that: every member
process calls ``obj.testMethod(value, callback=clbck)`` from its main thread while PySyncObj's
auto-tick thread runs Raft, open loop at a fixed rate.  We generate load the same way, inside
the node processes, but closed loop: k requests in flight, each success callback submits the
next request at once (callbacks run on the tick thread, right after the entry is applied).  By
default all k live in the leader's process (``load_from="leader"``), which skips the follower ->
leader forward and the extra append-entries period a follower waits to learn the commit index:
PySyncObj's best case.  ``load_from="all"`` splits k over the three members as its benchmark
does.  Only writes whose callback reports ``FAIL_REASON.SUCCESS`` are counted.

Configuration: PySyncObj's defaults (``appendEntriesUseBatch=True``, ``appendEntriesPeriod``
0.1 s, ``autoTickPeriod`` 0.05 s), except where a function says otherwise: the latency
benchmark defaults to ``appendEntriesUseBatch=False``, the setting PySyncObj's own delay
benchmark uses (with batching a commit waits for the next 0.1 s append-entries period).

Durability: see ``JOURNAL_FSYNC`` / ``JOURNAL_FSYNC_WHY``; the file journal is never fsynced.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import queue
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

Json = dict[str, Any]

SYSTEM = "pysyncobj"
JOURNAL_FSYNC = False
JOURNAL_FSYNC_WHY = (
    "pysyncobj FileJournal appends each entry into an mmap'd file and never calls "
    "fsync/fdatasync/msync while running (mmap.flush() only in _destroy(); the .meta file gets "
    "f.flush() without os.fsync), so an acknowledged write lives in the page cache only"
)
START_TIMEOUT = 30.0  # seconds for a fresh cluster to elect a leader
CALL_TIMEOUT = 15.0  # seconds for one request to a node process
_SELF = os.path.abspath(__file__)


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _log(msg: str) -> None:
    print(f"[pysyncobj-peer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    i = max(0, min(len(sorted_values) - 1, math.ceil(p * len(sorted_values)) - 1))
    return sorted_values[i]


def _summary_us(samples_us: Sequence[float]) -> Json:
    s = sorted(samples_us)
    if not s:
        return {"n": 0, "p50_us": None, "p99_us": None, "mean_us": None}
    return {
        "n": len(s),
        "p50_us": round(_pct(s, 0.50), 1),
        "p99_us": round(_pct(s, 0.99), 1),
        "mean_us": round(statistics.fmean(s), 1),
        "min_us": round(s[0], 1),
        "max_us": round(s[-1], 1),
    }


# --------------------------------------------------------------------------------------------
# Node side: runs inside each cluster member process (``--node``).
# --------------------------------------------------------------------------------------------


class _KV(SyncObj):  # type: ignore[misc]
    """A replicated dict: the state machine of every node."""

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self._data: dict[int, bytes] = {}

    @replicated
    def put(self, key: int, value: bytes) -> None:
        self._data[key] = value


def _leader_of(obj: SyncObj) -> str | None:
    leader = obj._getLeader()
    return None if leader is None else str(leader)


class _Load:
    """Closed-loop writer keeping k requests in flight, all on PySyncObj's tick thread.

    Each success callback (run by the tick thread right after the entry is applied) submits
    the next request at once; an on-tick callback fills the window, and refills it after
    errors, at most CHUNK requests per tick so that no tick is held long enough to delay
    heartbeats past the 0.4 s election timeout.  Submitting from another thread instead, as
    PySyncObj's benchmark does, halved the leader's throughput here: the tick thread then
    waits for the GIL (a 5 ms switch interval) after each of its many socket calls.
    """

    CHUNK = 5000

    def __init__(self, obj: _KV, k: int, value: bytes) -> None:
        self.obj, self.k, self.value = obj, k, value
        self.ok = 0
        self.errors = 0
        self.err_kinds: Counter[int] = Counter()
        self.outstanding = 0
        self.seq = 0
        self.running = True
        self.gen_s = 0.0  # time spent in the generator's own code (callbacks, submits)

    def _submit(self) -> None:
        self.outstanding += 1
        self.seq += 1
        self.obj.put(self.seq & 0xFFFF, self.value, callback=self.done)

    def done(self, _res: Any, err: int) -> None:
        t0 = time.perf_counter()
        self.outstanding -= 1
        if err == FAIL_REASON.SUCCESS:
            self.ok += 1
            if self.running:
                self._submit()
        else:  # not resubmitted here (a full queue fails synchronously): on_tick refills
            self.errors += 1
            self.err_kinds[err] += 1
        self.gen_s += time.perf_counter() - t0

    def on_tick(self) -> None:
        t0 = time.perf_counter()
        if self.running:
            for _ in range(min(self.k - self.outstanding, self.CHUNK)):
                self._submit()
        self.gen_s += time.perf_counter() - t0


class _Latency:
    """One write at a time; latency from submit to the success callback."""

    def __init__(self, obj: _KV, n: int, warmup: int, value: bytes) -> None:
        self.obj, self.value = obj, value
        self.left, self.warmup = n + warmup, warmup
        self.samples_us: list[float] = []
        self.errors = 0
        self.stop = False
        self.finished = threading.Event()
        self.t_submit = 0.0

    def submit(self) -> None:
        self.t_submit = time.perf_counter()
        self.obj.put(self.left & 0xFFFF, self.value, callback=self.done)

    def done(self, _res: Any, err: int) -> None:
        now = time.perf_counter()
        if err == FAIL_REASON.SUCCESS:
            self.left -= 1
            if self.warmup > 0:
                self.warmup -= 1
            else:
                self.samples_us.append((now - self.t_submit) * 1e6)
        else:
            self.errors += 1
        if self.left > 0 and not self.stop:
            self.submit()
        else:
            self.finished.set()


class _Writer:
    """Failover writer, open loop: `w` new writes on every tick (PySyncObj ticks at least every
    50 ms and only takes new commands on a tick), at most `cap` in flight, each given up after
    `timeout` seconds: writes stuck with a dead leader never stall it."""

    def __init__(self, obj: _KV, w: int, timeout: float, value: bytes, cap: int = 500) -> None:
        self.cap = cap
        self.obj, self.w, self.timeout, self.value = obj, w, timeout, value
        self.inflight: dict[int, float] = {}
        self.seq = 0
        self.running = True
        self.successes: list[tuple[float, str | None]] = []  # (monotonic time, leader then)
        self.leaders: list[tuple[float, str | None]] = []  # leader changes seen by this node
        self.last_leader: str | None = "?"

    def _submit(self) -> None:
        self.seq += 1
        self.inflight[self.seq] = time.monotonic()
        self.obj.put(self.seq & 0xFFFF, self.value, callback=functools.partial(self.done, self.seq))

    def done(self, seq: int, _res: Any, err: int) -> None:
        if self.inflight.pop(seq, None) is None:
            return  # given up on already
        if err == FAIL_REASON.SUCCESS:
            self.successes.append((time.monotonic(), _leader_of(self.obj)))

    def on_tick(self) -> None:
        now = time.monotonic()
        leader = _leader_of(self.obj)
        if leader != self.last_leader:
            self.leaders.append((now, leader))
            self.last_leader = leader
        for seq, t in list(self.inflight.items()):
            if now - t > self.timeout:
                del self.inflight[seq]
        if self.running:
            for _ in range(min(self.w, self.cap - len(self.inflight))):
                self._submit()

    def query(self, since: float, killed: str) -> Json:
        def first(events: list[tuple[float, str | None]]) -> float | None:
            for t, leader in list(events):
                if t > since and leader is not None and leader != killed:
                    return t
            return None

        return {
            "first_success": first(self.successes),
            "first_leader": first(self.leaders),
            "successes": sum(1 for t, _ in list(self.successes) if t > since),
        }


def _node_main(self_addr: str, partners: list[str], journal_file: str | None, batch: bool) -> None:
    conf = SyncObjConf(journalFile=journal_file, appendEntriesUseBatch=batch)
    obj = _KV(self_addr, partners, conf)
    load: _Load | None = None
    writer: _Writer | None = None

    def handle(op: str, req: Json) -> Json:
        nonlocal load, writer
        if op == "status":
            return {
                "self": self_addr,
                "leader": _leader_of(obj),
                "term": obj.raftCurrentTerm,
                "commit": obj.raftCommitIndex,
                "applied": obj.raftLastApplied,
                "quorum": bool(obj.hasQuorum),
            }
        if op == "load_start":
            load = _Load(obj, int(req["k"]), os.urandom(int(req["value_size"])))
            obj.addOnTickCallback(load.on_tick)
            return {}
        if op == "load_mark":
            assert load is not None
            return {
                "t": time.monotonic(),
                "ok": load.ok,
                "errors": load.errors,
                "err_kinds": {str(k): v for k, v in load.err_kinds.items()},
                "gen_s": load.gen_s,
                "outstanding": load.outstanding,
            }
        if op == "load_stop":
            assert load is not None
            load.running = False
            obj.removeOnTickCallback(load.on_tick)
            # Wait for the window to drain; give up after `drain` s, or 3 s without progress
            # (requests caught in a leader change may never be answered).
            now = time.monotonic()
            deadline, stall_at, seen = now + float(req["drain"]), now + 3.0, -1
            while load.outstanding > 0 and now < min(deadline, stall_at):
                if load.outstanding != seen:
                    seen, stall_at = load.outstanding, now + 3.0
                time.sleep(0.01)
                now = time.monotonic()
            left, load = load.outstanding, None
            return {"drained": left <= 0, "left": left}
        if op == "lat":
            lat = _Latency(
                obj, int(req["n"]), int(req["warmup"]), os.urandom(int(req["value_size"]))
            )
            lat.submit()
            if not lat.finished.wait(float(req["max_s"])):
                lat.stop = True
            return {"samples_us": list(lat.samples_us), "errors": lat.errors, "capped": lat.stop}
        if op == "fo_start":
            writer = _Writer(
                obj, int(req["w"]), float(req["op_timeout"]), os.urandom(int(req["value_size"]))
            )
            obj.addOnTickCallback(writer.on_tick)
            return {}
        if op == "fo_query":
            assert writer is not None
            return writer.query(float(req["since"]), str(req["killed"]))
        if op == "quit":
            return {}
        raise ValueError(f"unknown op {op!r}")

    for line in sys.stdin:  # EOF: the parent is gone, so are we
        req = json.loads(line)
        resp: Json = {"id": req.get("id")}
        try:
            resp.update(handle(str(req["op"]), req))
        except Exception as e:
            resp["error"] = repr(e)
        sys.stdout.write(json.dumps(resp) + "\n")
        sys.stdout.flush()
        if req["op"] == "quit":
            break
    os._exit(0)  # no graceful destroy: it could block on PySyncObj's threads


# --------------------------------------------------------------------------------------------
# Parent side: starts, drives and kills the node processes.
# --------------------------------------------------------------------------------------------


class PeerError(RuntimeError):
    pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: str, n: int = 800) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


class _Proc:
    """Parent-side handle on one node process."""

    _CLK_TCK = os.sysconf("SC_CLK_TCK")

    def __init__(self, addr: str, popen: subprocess.Popen[str], log_path: str) -> None:
        self.addr, self.p, self.log_path = addr, popen, log_path
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.p.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **kw: Any) -> Json:
        self._next_id += 1
        rid = self._next_id
        assert self.p.stdin is not None
        try:
            self.p.stdin.write(json.dumps({"op": op, "id": rid, **kw}) + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise PeerError(f"{self.addr}: node is gone: {_tail(self.log_path)}") from e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"{self.addr}: {op!r} got no answer in {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                raise PeerError(f"{self.addr}: node exited during {op!r}: {_tail(self.log_path)}")
            resp: Json = json.loads(line)
            if resp.get("id") != rid:
                continue  # a late answer to an earlier request that timed out
            if "error" in resp:
                raise PeerError(f"{self.addr}: {op!r} failed: {resp['error']}")
            return resp

    def alive(self) -> bool:
        return self.p.poll() is None

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (all threads), from /proc."""
        try:
            with open(f"/proc/{self.p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self._CLK_TCK
        except (OSError, IndexError, ValueError):
            return float("nan")

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.p.kill()  # SIGKILL
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=10)
        for pipe in (self.p.stdin, self.p.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    return total - idle, total


class _Cluster:
    def __init__(self, procs: list[_Proc], tmp: str) -> None:
        self.procs, self.tmp = procs, tmp

    def wait_leader(self, timeout: float = START_TIMEOUT) -> _Proc:
        """The leader, once every live node names the same live leader and it has a quorum."""
        deadline = time.monotonic() + timeout
        last: list[Json] = []
        while time.monotonic() < deadline:
            live = [p for p in self.procs if p.alive()]
            last = [p.call("status") for p in live]
            leaders = {s["leader"] for s in last}
            if len(leaders) == 1 and None not in leaders:
                (addr,) = leaders
                for p, s in zip(live, last, strict=True):
                    if p.addr == addr and s["quorum"]:
                        return p
            time.sleep(0.1)
        raise PeerError(f"no stable leader within {timeout:.0f}s: {last}")

    def cpu(self) -> dict[str, float]:
        return {p.addr: p.cpu_s() for p in self.procs}


@contextlib.contextmanager
def _cluster(journal: str, batch: bool = True, size: int = 3) -> Iterator[_Cluster]:
    """A fresh `size`-node cluster in a temp dir; all processes killed, dir removed on exit."""
    if journal not in ("memory", "file"):
        raise ValueError(f"journal must be 'memory' or 'file', not {journal!r}")
    # A SIGTERM must run the `finally` below too (only where the default would just die).
    old_handler: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = tempfile.mkdtemp(prefix="pysyncobj-peer-")
    procs: list[_Proc] = []
    try:
        addrs = [f"127.0.0.1:{port}" for port in _free_ports(size)]
        for i, addr in enumerate(addrs):
            cmd = [sys.executable, _SELF, "--node", "--self", addr]
            cmd += ["--partners", ",".join(a for a in addrs if a != addr)]
            if journal == "file":
                cmd += ["--journal-file", os.path.join(tmp, f"node{i}.journal")]
            if not batch:
                cmd.append("--no-batch")
            log_path = os.path.join(tmp, f"node{i}.log")
            with open(log_path, "wb") as log:
                popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    bufsize=1,
                    start_new_session=True,  # ^C reaches only us; we kill them in `finally`
                )
            procs.append(_Proc(addr, popen, log_path))
        yield _Cluster(procs, tmp)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


def _split(k: int, parts: int) -> list[int]:
    return [k // parts + (1 if i < k % parts else 0) for i in range(parts)]


def _fsync_fields(journal: str) -> Json:
    return {
        "journal_fsync": JOURNAL_FSYNC if journal == "file" else False,
        "journal_fsync_why": JOURNAL_FSYNC_WHY if journal == "file" else "in-memory journal",
    }


def _measure_point(
    c: _Cluster,
    journal: str,
    k: int,
    duration: float,
    value_size: int,
    warmup: float,
    load_from: str,
    drain_timeout: float,
) -> Json:
    leader = c.wait_leader()
    term0 = leader.call("status")["term"]
    gens = [leader] if load_from == "leader" else c.procs
    pairs = [(p, s) for p, s in zip(gens, _split(k, len(gens)), strict=True) if s > 0]
    for p, share in pairs:
        p.call("load_start", k=share, value_size=value_size)
    # The window is filled a chunk per tick (see _Load.on_tick); wait for it, then warm up.
    t_fill, deadline = time.monotonic(), time.monotonic() + 60.0
    filled = False
    while not filled and time.monotonic() < deadline:
        filled = all(p.call("load_mark")["outstanding"] >= share for p, share in pairs)
        time.sleep(0.02)
    fill_s = time.monotonic() - t_fill
    time.sleep(warmup)
    mach0, cpu0, w0 = _machine_jiffies(), c.cpu(), time.monotonic()
    m0 = [p.call("load_mark") for p, _ in pairs]
    time.sleep(duration)
    m1 = [p.call("load_mark") for p, _ in pairs]
    mach1, cpu1, w1 = _machine_jiffies(), c.cpu(), time.monotonic()
    st = {p.addr: p.call("status") for p in c.procs}
    stops = [p.call("load_stop", drain_timeout + 15, drain=drain_timeout) for p, _ in pairs]
    ab = list(zip(m0, m1, strict=True))
    ops = sum((b["ok"] - a["ok"]) / (b["t"] - a["t"]) for a, b in ab)
    kinds: Counter[str] = Counter()
    for b in m1:
        kinds.update(b["err_kinds"])
    wall = w1 - w0
    cpu = {a: round(100 * (cpu1[a] - cpu0[a]) / wall, 1) for a in cpu0}
    followers = [p for p in c.procs if p is not leader]
    busy = (mach1[0] - mach0[0]) / max(1, mach1[1] - mach0[1]) * 100 * (os.cpu_count() or 1)
    return {
        "system": SYSTEM,
        "journal": journal,
        "outstanding": k,
        "ops_per_s": round(ops, 1),
        "errors": sum(b["errors"] - a["errors"] for a, b in ab),
        "error_kinds_total": dict(kinds),
        "window_s": round(wall, 3),
        "fill_s": round(fill_s, 2),
        "filled": filled,
        "load_from": load_from,
        "cpu_pct_leader": cpu[leader.addr],
        "cpu_pct_followers": [cpu[p.addr] for p in followers],
        "cpu_pct_other_processes": round(busy - sum(cpu.values()), 1),
        "generator_pct_of_leader_core": round(
            100 * sum(b["gen_s"] - a["gen_s"] for a, b in ab) / wall, 1
        ),
        "follower_apply_lag_entries": [
            st[leader.addr]["commit"] - st[p.addr]["applied"] for p in followers
        ],
        "drained": all(x["drained"] for x in stops),
        "leader_changed": any(x["term"] != term0 for x in st.values()),
        **_fsync_fields(journal),
    }


def run_throughput(
    journal: str,
    outstanding: list[int],
    duration: float = 5.0,
    value_size: int = 64,
    *,
    warmup: float = 1.0,
    load_from: str = "leader",
    drain_timeout: float = 30.0,
    retries: int = 2,
) -> list[Json]:
    """Committed writes per second with k requests in flight, for each k in `outstanding`.

    One 3-process cluster, PySyncObj's default configuration.  The closed-loop load generator
    runs inside the node processes, as PySyncObj's own benchmarks do (module docstring): with
    ``load_from="leader"`` all k requests live in the leader's process, with ``"all"`` they
    are split over the three members (see ``_Load`` for how).  Once the window is full,
    ``warmup`` seconds pass, then the successful callbacks are counted for ``duration``
    seconds; then the generator stops and its requests drain before the next k.  A point
    during which the Raft term changed, or whose requests did not drain, is measured again on
    a fresh cluster, up to ``retries`` times (``attempts`` lists every try; the last one is
    reported, flags and all).  Each row also gives, over the window, every node's
    CPU use (100 = one core), that of all other processes on the machine (work competing for
    the cores skews the figures), the share of a core the generator's own code took on the
    leader (the rest of its CPU is PySyncObj's), and how many committed entries each follower
    had yet to apply.
    """
    if load_from not in ("leader", "all"):
        raise ValueError("load_from must be 'leader' or 'all'")
    rows: list[Json] = []
    pending = list(outstanding)
    attempts: list[Json] = []
    while pending:
        with _cluster(journal) as c:
            while pending:
                k = pending[0]
                row = _measure_point(
                    c, journal, k, duration, value_size, warmup, load_from, drain_timeout
                )
                bad = row["leader_changed"] or not row["drained"]
                attempts.append({x: row[x] for x in ("ops_per_s", "leader_changed", "drained")})
                row["attempts"] = attempts
                _log(
                    f"throughput {journal} k={k}: {row['ops_per_s']} ops/s, cpu leader "
                    f"{row['cpu_pct_leader']} followers {row['cpu_pct_followers']}"
                    + (" (term changed or not drained)" if bad else "")
                )
                if bad and len(attempts) <= retries:
                    break  # the same k again, on a fresh cluster
                rows.append(row)
                pending.pop(0)
                attempts = []
    return rows


def run_latency(
    journal: str,
    n: int = 2000,
    *,
    append_entries_use_batch: bool = False,
    warmup: int = 50,
    max_seconds: float = 60.0,
    value_size: int = 64,
    via_follower: bool = True,
) -> Json:
    """Latency of one write at a time (submit -> success callback), p50/p99 in microseconds.

    The client is in-process on the leader (PySyncObj's model, see module docstring).  By default
    the cluster runs with ``appendEntriesUseBatch=False``, as PySyncObj's own delay benchmark;
    with the default (batched) configuration every commit waits for the next 0.1 s
    append-entries period, so a run stops after ``max_seconds`` with fewer than ``n`` samples.
    ``via_follower`` also measures a client in a follower's process, whose write is forwarded
    to the leader and acknowledged once the follower has applied it (a network hop each way,
    like an external client's).
    """
    with _cluster(journal, batch=append_entries_use_batch) as c:
        leader = c.wait_leader()
        args = {"n": n, "warmup": warmup, "max_s": max_seconds, "value_size": value_size}
        r = leader.call("lat", max_seconds + 15, **args)
        out: Json = {
            "system": SYSTEM,
            "journal": journal,
            "conf": f"appendEntriesUseBatch={append_entries_use_batch}",
            "client": "one write at a time, in-process on the leader",
            **_summary_us(r["samples_us"]),
            "errors": r["errors"],
            "capped_by_max_seconds": r["capped"],
        }
        if via_follower:
            f = next(p for p in c.procs if p is not leader)
            rf = f.call("lat", max_seconds + 15, **args)
            out["via_follower"] = {
                **_summary_us(rf["samples_us"]),
                "errors": rf["errors"],
                "capped_by_max_seconds": rf["capped"],
            }
        out.update(_fsync_fields(journal))
        _log(f"latency {journal} {out['conf']}: p50 {out['p50_us']} us, p99 {out['p99_us']} us")
        return out


def _failover_trial(journal: str, writers_per_node: int, op_timeout: float, give_up: float) -> Json:
    with _cluster(journal) as c:
        leader = c.wait_leader()
        t_start = time.monotonic()
        for p in c.procs:
            p.call("fo_start", w=writers_per_node, op_timeout=op_timeout, value_size=64)
        deadline = time.monotonic() + give_up
        while not all(p.call("fo_query", since=t_start, killed="")["successes"] for p in c.procs):
            if time.monotonic() > deadline:
                raise PeerError("writers did not get going")
            time.sleep(0.05)
        time.sleep(0.5)
        if c.wait_leader() is not leader:
            raise PeerError("leader changed before the kill")
        survivors = [p for p in c.procs if p is not leader]
        t_kill = time.monotonic()
        os.kill(leader.p.pid, signal.SIGKILL)
        leader.p.wait(timeout=10)
        deadline = t_kill + give_up
        found = False
        while True:
            answers = [p.call("fo_query", since=t_kill, killed=leader.addr) for p in survivors]
            if found:  # one more round after the first success, so the earliest one is seen
                break
            found = any(a["first_success"] is not None for a in answers)
            if not found and time.monotonic() > deadline:
                return {"failover_ms": None, "error": f"no write succeeded within {give_up}s"}
            time.sleep(0.02)
        first = min(a["first_success"] for a in answers if a["first_success"] is not None)
        elected = [a["first_leader"] for a in answers if a["first_leader"] is not None]
        return {
            "failover_ms": round(1000 * (first - t_kill), 1),
            "elected_ms": round(1000 * (min(elected) - t_kill), 1) if elected else None,
        }


def run_failover(
    journal: str,
    trials: int = 5,
    *,
    writers_per_node: int = 1,
    op_timeout: float = 5.0,
    give_up: float = 20.0,
) -> Json:
    """Time from SIGKILL of the leader until a write succeeds again on a surviving node.

    Each trial uses a fresh cluster (default configuration).  Every node runs an open-loop
    writer that submits ``writers_per_node`` writes on each PySyncObj tick (>= 20 ticks/s),
    so writes lost with the leader (forgotten after ``op_timeout`` s) never stall it and a
    fresh write is always queued.  After the kill, the first
    success callback on a survivor that fires while that survivor knows a leader other than
    the killed one ends the trial; ``elected_ms`` is when a survivor first learned of the new
    leader.  Clock: CLOCK_MONOTONIC, shared by all processes of the machine.
    """
    rows: list[Json] = []
    for i in range(trials):
        try:
            row = _failover_trial(journal, writers_per_node, op_timeout, give_up)
        except PeerError as e:
            row = {"failover_ms": None, "error": str(e)[:300]}
        rows.append(row)
        _log(f"failover {journal} trial {i}: {row}")
    ok = [r["failover_ms"] for r in rows if r["failover_ms"] is not None]
    return {
        "system": SYSTEM,
        "journal": journal,
        "median_ms": round(statistics.median(ok), 1) if ok else None,
        "trials_ms": [r["failover_ms"] for r in rows],
        "elected_ms": [r.get("elected_ms") for r in rows],
        "errors": [r["error"] for r in rows if "error" in r],
        "raft_timeouts_s": [SyncObjConf().raftMinTimeout, SyncObjConf().raftMaxTimeout],
        **_fsync_fields(journal),
    }


# --------------------------------------------------------------------------------------------
# Baselines: one fdatasync, one loopback UDP round trip.
# --------------------------------------------------------------------------------------------


def _filesystem_of(path: str) -> Json:
    real = os.path.realpath(path)
    best = {"mount": "", "fstype": "unknown", "source": "unknown"}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                mount = pre.split()[4].replace("\\040", " ")
                fstype, source = [*post.split(), "?", "?"][:2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best["mount"]):
                    best = {"mount": mount, "fstype": fstype, "source": source}
    except OSError:
        pass
    return best


def _fdatasync_baseline(n: int, warmup: int = 20) -> Json:
    tmp = tempfile.mkdtemp(prefix="pysyncobj-peer-fsync-")
    try:
        path = os.path.join(tmp, "wal")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            rec, samples = b"r" * 64, []
            for i in range(warmup + n):
                t0 = time.perf_counter()
                os.write(fd, rec)
                os.fdatasync(fd)
                if i >= warmup:
                    samples.append((time.perf_counter() - t0) * 1e6)
        finally:
            os.close(fd)
        return {
            "what": "os.write(64 B append) + os.fdatasync, one at a time",
            "dir": os.path.dirname(tmp),
            **_filesystem_of(tmp),
            **_summary_us(samples),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_UDP_ECHO = """
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1.0)
print(s.getsockname()[1], flush=True)
parent = os.getppid()
while os.getppid() == parent:
    try:
        data, addr = s.recvfrom(2048)
    except TimeoutError:
        continue
    s.sendto(data, addr)
"""


def _udp_rtt_baseline(n: int, warmup: int = 200, size: int = 32) -> Json:
    echo = subprocess.Popen(
        [sys.executable, "-c", _UDP_ECHO],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert echo.stdout is not None
        ready, _, _ = select.select([echo.stdout], [], [], 10.0)
        if not ready:
            raise PeerError("UDP echo server did not start")
        port = int(echo.stdout.readline())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", port))
            s.settimeout(1.0)
            msg, samples, lost = b"p" * size, [], 0
            for i in range(warmup + n):
                t0 = time.perf_counter()
                s.send(msg)
                try:
                    s.recv(2048)
                except TimeoutError:
                    lost += 1
                    continue
                if i >= warmup:
                    samples.append((time.perf_counter() - t0) * 1e6)
        return {
            "what": f"{size} B datagram to a Python echo process and back, 127.0.0.1",
            **_summary_us(samples),
            "lost": lost,
        }
    finally:
        echo.kill()
        echo.wait(timeout=10)
        if echo.stdout is not None:
            echo.stdout.close()


def measure_baselines(n: int = 2000) -> Json:
    """Reference for the latency target "p50 within 2x of one fdatasync + one loopback RTT"."""
    fsync = _fdatasync_baseline(n)
    udp = _udp_rtt_baseline(n)
    both = fsync["p50_us"] + udp["p50_us"]
    out = {
        "fdatasync": fsync,
        "udp_rtt": udp,
        "fdatasync_plus_rtt_p50_us": round(both, 1),
        "target_p50_us": round(2 * both, 1),
    }
    _log(
        f"baselines: fdatasync p50 {fsync['p50_us']} us on {fsync['fstype']}, "
        f"udp rtt p50 {udp['p50_us']} us"
    )
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer points")
    ap.add_argument("--journals", default="memory,file", help="comma-separated: memory,file")
    ap.add_argument(
        "--only",
        default="baselines,throughput,latency,failover",
        help="comma-separated subset of: baselines,throughput,latency,failover",
    )
    ap.add_argument("--load-from", default="leader", choices=["leader", "all"])
    # internal: run as one cluster member
    ap.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--self", dest="self_addr", help=argparse.SUPPRESS)
    ap.add_argument("--partners", help=argparse.SUPPRESS)
    ap.add_argument("--journal-file", help=argparse.SUPPRESS)
    ap.add_argument("--no-batch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.node:
        _node_main(args.self_addr, args.partners.split(","), args.journal_file, not args.no_batch)
        return 0

    signal.signal(signal.SIGTERM, _on_sigterm)
    journals = [j for j in args.journals.split(",") if j]
    only = set(args.only.split(","))
    if args.quick:
        outstanding, duration, lat_n, lat_batched_n, trials, base_n = (
            [1, 100, 50000],
            2.0,
            500,
            20,
            3,
            500,
        )
    else:
        outstanding = [1, 10, 100, 1000, 10000, 50000]
        duration, lat_n, lat_batched_n, trials, base_n = 5.0, 2000, 100, 5, 2000

    t0 = time.monotonic()
    report: Json = {
        "system": SYSTEM,
        "pysyncobj_version": PYSYNCOBJ_VERSION,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "journal_fsync": JOURNAL_FSYNC,
        "journal_fsync_why": JOURNAL_FSYNC_WHY,
    }
    try:
        if "baselines" in only:
            report["baselines"] = measure_baselines(base_n)
        if "throughput" in only:
            report["throughput"] = [
                row
                for j in journals
                for row in run_throughput(j, outstanding, duration, load_from=args.load_from)
            ]
        if "latency" in only:
            report["latency"] = [run_latency(j, lat_n) for j in journals]
            report["latency_batched_default_conf"] = [
                run_latency(
                    j, lat_batched_n, append_entries_use_batch=True, warmup=3, via_follower=False
                )
                for j in journals
            ]
        if "failover" in only:
            report["failover"] = [run_failover(j, trials) for j in journals]
    except KeyboardInterrupt:
        _log("interrupted; all node processes were killed")
        return 130
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
