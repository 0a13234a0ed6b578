"""A cluster of real node processes on loopback, for integration tests and benchmarks.

Each node is ``python -m paxosrsm.net.main`` in its own process, with its own
data directory, talking over real UDP/TCP sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from paxosrsm.cli.ctl import local_layout, node_command
from paxosrsm.client import AsyncClient, Client
from paxosrsm.net.auth import load_key
from paxosrsm.net.identity import write_node_keys
from paxosrsm.net.options import parse_addr


def free_ports(n: int) -> list[int]:
    """n distinct ports free for both UDP and TCP right now."""
    out: list[int] = []
    socks = []
    while len(out) < n:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            continue
        socks += [t, u]
        out.append(port)
    for s in socks:
        s.close()
    return out


class ProcCluster:
    def __init__(
        self,
        root: Path,
        replicas: int = 3,
        learners: int = 0,
        extra: list[str] | None = None,
        node_keys: bool = True,
        grpc: bool = True,
    ) -> None:
        """``node_keys``: each node its own key file (``net/identity.py``);
        without, every node runs the shared ``cluster.key``. ``grpc``: etcd's
        v3 API on every node (``grpc_peers``)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        n = replicas + learners
        ports = free_ports(3 * n)
        self.layout = local_layout(self.root, replicas, learners, 0, 0)
        self.layout["acceptors"] = [f"127.0.0.1:{ports[i]}" for i in range(replicas)]
        self.layout["learners"] = [f"127.0.0.1:{ports[replicas + i]}" for i in range(learners)]
        self.layout["http_peers"] = [f"127.0.0.1:{ports[n + i]}" for i in range(n)]
        # etcd's v3 API on every node (issue 13; not with a --state-machine of one's own)
        if grpc:
            self.layout["grpc_peers"] = [f"127.0.0.1:{ports[2 * n + i]}" for i in range(n)]
        (self.root / "cluster.key").write_text(os.urandom(24).hex())
        if node_keys:
            write_node_keys(self.root, range(n))  # each node its own identity
        (self.root / "cluster.yaml").write_text(yaml.safe_dump(self.layout))
        self.key = load_key(self.root / "cluster.key")
        self.replicas = replicas
        self.n = n
        self.extra = extra or []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def addrs(self) -> list[tuple[str, int]]:
        return [parse_addr(a) for a in self.layout["acceptors"]]

    def grpc(self, nid: int) -> str:
        return str(self.layout["grpc_peers"][nid])

    def http(self, nid: int) -> str:
        return "http://" + str(self.layout["http_peers"][nid])

    def start(self, nid: int, initial: str = "new") -> None:
        cmd = node_command(self.layout, self.root, nid, initial) + self.extra
        (self.root / f"node-{nid}").mkdir(exist_ok=True)
        logf = open(self.root / f"node-{nid}" / "node.log", "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[nid] = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        logf.close()

    def start_all(self) -> ProcCluster:
        for nid in range(self.n):
            self.start(nid)
        return self

    def signal(self, nid: int, sig: int) -> None:
        self.procs[nid].send_signal(sig)

    def kill(self, nid: int) -> None:
        p = self.procs.pop(nid)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self, nid: int) -> int:
        p = self.procs.pop(nid)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise

    def alive(self, nid: int) -> bool:
        p = self.procs.get(nid)
        return p is not None and p.poll() is None

    def close(self) -> None:
        for nid in list(self.procs):
            p = self.procs.pop(nid)
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)

    def status(self, nid: int, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.http(nid) + "/v1/status", timeout=timeout) as r:
                out: dict[str, Any] = json.loads(r.read())
                return out
        except (OSError, ValueError):
            return None

    def leader(self) -> int | None:
        for nid in list(self.procs):
            st = self.status(nid)
            if st and st["is_leader"]:
                return nid
        return None

    def wait_ready(self, nodes: list[int] | None = None, timeout: float = 30.0) -> None:
        nodes = list(self.procs) if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = [self.status(n) for n in nodes]
            if all(s is not None and s["ready"] for s in sts):
                return
            time.sleep(0.1)
        raise TimeoutError(f"nodes {nodes} not ready: {[self.status(n) for n in nodes]}\n"
                           + self.logs())  # fmt: skip

    def logs(self, tail: int = 15) -> str:
        out = []
        for nid in range(self.n):
            f = self.root / f"node-{nid}" / "node.log"
            if f.exists():
                lines = f.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- node {nid}\n" + "\n".join(lines))
        return "\n".join(out)

    def client(self, **kw: Any) -> Client:
        return Client(self.addrs, self.key, **kw)

    def aclient(self, **kw: Any) -> AsyncClient:
        return AsyncClient(self.addrs, self.key, **kw)


def python() -> str:
    return sys.executable
