"""``paxosctl`` as a user runs it: a subprocess, its output and its exit code.

Exit codes (see paxosrsm.cli.ctl): 0 ok, 1 the operation failed, 2 bad arguments,
3 a write's outcome is unknown, 4 the cluster is unavailable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from netcluster import ProcCluster, free_ports

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e.pop("PAXOS_CLUSTER", None)
    return e


Run = subprocess.CompletedProcess[str]


def ctl(*args: str | Path, cwd: Path | None = None, timeout: float = 30) -> Run:
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env(), cwd=cwd,
    )  # fmt: skip
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    return p


def ctl_many(argvs: list[list[str]], cwd: Path | None = None) -> list[Run]:
    """Independent paxosctl runs in parallel (an interpreter takes a while to start)."""
    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda a: ctl(*a, cwd=cwd), argvs))


def ok(p: Run) -> str:
    assert p.returncode == EXIT_OK, (p.args[3:], p.returncode, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path_factory.mktemp("ctl"), replicas=3)
    try:
        c.start_all()
        c.wait_ready()
        yield c
    finally:
        c.close()


@pytest.fixture
def cf(cluster: ProcCluster) -> list[str]:
    return ["-c", str(cluster.root / "cluster.yaml")]


# ------------------------------------------------------------------ KV commands


def test_put_get_delete(cf: list[str]) -> None:
    assert ok(ctl(*cf, "put", "greeting", "hello world ✓")) == "OK\n"
    assert ok(ctl(*cf, "get", "greeting")) == "hello world ✓\n"
    assert ok(ctl(*cf, "put", "greeting", "bye")) == "OK\n"
    assert ok(ctl(*cf, "get", "greeting")) == "bye\n"
    deadline = time.monotonic() + 5
    while (p := ctl(*cf, "get", "greeting", "--stale")).returncode != EXIT_OK:
        assert p.returncode == EXIT_FAIL and time.monotonic() < deadline, p
        time.sleep(0.1)
    assert p.stdout == "bye\n"
    assert ok(ctl(*cf, "delete", "greeting")) == "deleted\n"
    assert ok(ctl(*cf, "delete", "greeting")) == "(no such key)\n"
    p = ctl(*cf, "get", "greeting")
    assert p.returncode == EXIT_FAIL and p.stdout == "", p
    assert "no such key" in p.stderr


def test_cas(cf: list[str]) -> None:
    assert ok(ctl(*cf, "cas", "lock", "-", "alice", "--expected-absent")) == "OK\n"
    p = ctl(*cf, "cas", "lock", "-", "bob", "--expected-absent")
    assert p.returncode == EXIT_FAIL and "CAS failed" in p.stderr, p
    p = ctl(*cf, "cas", "lock", "carol", "bob")
    assert p.returncode == EXIT_FAIL and "CAS failed" in p.stderr, p
    assert ok(ctl(*cf, "get", "lock")) == "alice\n", "a refused CAS changes nothing"
    assert ok(ctl(*cf, "cas", "lock", "alice", "bob")) == "OK\n"
    assert ok(ctl(*cf, "get", "lock")) == "bob\n"


def test_cluster_from_env_and_from_nodes(cluster: ProcCluster, tmp_path: Path) -> None:
    cfile = cluster.root / "cluster.yaml"
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", "put", "envkey", "v"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env=dict(env(), PAXOS_CLUSTER=str(cfile)),
    )  # fmt: skip
    assert p.returncode == EXIT_OK, p
    nodes = ",".join(cluster.layout["acceptors"])
    key = cluster.root / "cluster.key"
    assert ok(ctl("--nodes", nodes, "--key-file", key, "get", "envkey")) == "v\n"


# ------------------------------------------------------------------ status


def test_status_table(cluster: ProcCluster, cf: list[str]) -> None:
    ok(ctl(*cf, "put", "status-probe", "x"))
    out = ok(ctl(*cf, "status"))
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "ADDRESS", "ROLES", "STATE", "LEADER", "BALLOT",
                                "DECIDED", "APPLIED", "LAG"], out  # fmt: skip
    rows = [ln.split() for ln in lines[1:]]
    assert [r[0] for r in rows] == [str(n) for n in range(cluster.n)], out
    assert [r[1] for r in rows] == cluster.layout["acceptors"], out
    states = [r[3] for r in rows]
    assert states.count("LEADER") == 1 and states.count("follower") == cluster.n - 1, out
    leader = states.index("LEADER")
    assert all(r[4] == str(leader) for r in rows), out
    assert all(int(r[6]) >= 0 and int(r[7]) >= 0 for r in rows), out


def test_status_with_a_node_down_exits_4(cluster: ProcCluster, tmp_path: Path) -> None:
    layout = dict(cluster.layout, key_file=str(cluster.root / "cluster.key"))
    dead = free_ports(1)[0]
    layout["http_peers"] = [*cluster.layout["http_peers"][:2], f"127.0.0.1:{dead}"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(layout))
    p = ctl("-c", tmp_path / "c.yaml", "status")
    assert p.returncode == EXIT_UNAVAILABLE, p
    rows = [ln.split() for ln in p.stdout.splitlines()[1:]]
    assert len(rows) == 3 and "unreachable" in " ".join(rows[2]), p.stdout
    assert {r[3] for r in rows[:2]} <= {"LEADER", "follower"}, p.stdout


# ------------------------------------------------------------------ errors


def test_unavailable_cluster_exit_codes(cluster: ProcCluster) -> None:
    dead = ",".join(f"127.0.0.1:{p}" for p in free_ports(3))
    base = ["--nodes", dead, "--key-file", str(cluster.root / "cluster.key"), "--timeout", "0.5"]
    get, put, cas = ctl_many([[*base, "get", "k"], [*base, "put", "k", "v"],
                              [*base, "cas", "k", "a", "b"]])  # fmt: skip
    assert get.returncode == EXIT_UNAVAILABLE and "unavailable" in get.stderr, get
    assert put.returncode == EXIT_UNKNOWN and "outcome unknown" in put.stderr, put
    assert cas.returncode == EXIT_UNKNOWN and "outcome unknown" in cas.stderr, cas


BAD_ARGS = [
    ([], "required"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["put", "k"], "the following arguments are required: value"),
    (["local"], "required"),
    (["--timeout", "soon", "get", "k"], "invalid float value: 'soon'"),
    (["-c", "{tmp}/no/such/cluster.yaml", "get", "k"], "no cluster file {tmp}/no/such"),
    (["get", "k"], "no cluster file paxos-data/cluster.yaml"),
    (["-c", "{tmp}/bad.yaml", "get", "k"], "is not YAML"),
    (["-c", "{tmp}/empty.yaml", "status"], "lists no acceptors"),
    (["--nodes", "127.0.0.1:1", "get", "k"], "--nodes needs --key-file"),
    (["--nodes", "nonsense", "--key-file", "{tmp}/k", "get", "k"], "nonsense"),
    (["local", "up", "--replicas", "4", "--data-dir", "{tmp}/d"], "--replicas must be 1, 3, 5"),
    (["local", "up", "--learners", "9", "--data-dir", "{tmp}/d"], "--learners must be in 0..8"),
    (["local", "up", "--replicas", "x"], "invalid int value: 'x'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Run]]:
    """Every bad command line of BAD_ARGS, run at once (each is a fresh interpreter)."""
    tmp = tmp_path_factory.mktemp("bad-args")
    (tmp / "bad.yaml").write_text("acceptors: [unclosed\n")
    (tmp / "empty.yaml").write_text("{}\n")
    (tmp / "k").write_text("secret\n")
    argvs = [[a.replace("{tmp}", str(tmp)) for a in args] for args, _ in BAD_ARGS]
    return tmp, ctl_many(argvs, cwd=tmp)


@pytest.mark.parametrize("i", range(len(BAD_ARGS)), ids=[" ".join(a) or "-" for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2(bad_runs: tuple[Path, list[Run]], i: int) -> None:
    tmp, runs = bad_runs
    p = runs[i]
    needle = BAD_ARGS[i][1].replace("{tmp}", str(tmp))
    assert p.returncode == EXIT_USAGE, (p.args[3:], p.returncode, p.stdout, p.stderr)
    assert needle in p.stderr, p.stderr
    assert p.stderr.startswith(("usage: paxosctl", "paxosctl")), p.stderr
    assert re.search(r"^paxosctl( \w+)*: ", p.stderr, re.M), p.stderr  # "paxosctl local up: error"
    assert not (tmp / "d").exists(), "a refused `local up` creates nothing"


@pytest.mark.parametrize("content", ["", "acceptors: [127.0.0.1:1]\n"], ids=["empty", "partial"])
def test_local_up_on_a_broken_cluster_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "cluster.yaml").write_text(content)
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", "local", "up", "--replicas", "1",
         "--data-dir", str(tmp_path), "--base-port", "1", "--http-base", "1"],
        capture_output=True, text=True, timeout=30, env=env(),
    )  # fmt: skip
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == EXIT_USAGE and "cluster.yaml" in p.stderr, p


def test_local_up_refuses_another_cluster_size(cluster: ProcCluster) -> None:
    p = ctl("local", "up", "--replicas", "1", "--data-dir", cluster.root)
    assert p.returncode == EXIT_USAGE and "holds a cluster of 3 acceptors" in p.stderr, p


def test_help_exits_0() -> None:
    top, up = ctl_many([["--help"], ["local", "up", "--help"]])
    assert top.returncode == EXIT_OK and "local up" in top.stdout and "Exit codes" in top.stdout
    assert up.returncode == EXIT_OK and "--replicas" in up.stdout, up


# ------------------------------------------------------------------ local up


class LocalUp:
    """``paxosctl local up`` in the background, in its own session like a terminal job."""

    def __init__(self, data: Path, port: int, http: int, log: Path) -> None:
        self.http = http
        self.log = log
        (grpc,) = free_ports(1)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paxosrsm.cli", "local", "up", "--replicas", "1",
                 "--data-dir", str(data), "--base-port", str(port), "--http-base", str(http),
                 "--grpc-base", str(grpc)],
                stdout=f, stderr=subprocess.STDOUT, env=env(), start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def node_pids(self) -> list[int]:
        return [int(x) for x in re.findall(r"pid (\d+)", self.output())]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"local up exited early:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=1) as r:
                    if json.loads(r.read()).get("ok"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"local cluster not ready:\n{self.output()}"
            time.sleep(0.1)

    def interrupt(self, group: bool) -> int:
        """Ctrl-C: to the whole process group as a terminal does, or to paxosctl alone."""
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """Clean up after a failure: paxosctl and its nodes share its process group."""
        group = self.proc.pid
        alive = self.proc.poll() is None or any(pgrp(p) == group for p in self.node_pids())
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout=10)


def pgrp(pid: int) -> int | None:
    """The process group of a running process (None if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[2])


def gone(pid: int, group: int, timeout: float = 5) -> bool:
    """The process has exited (or its pid now names a process of another group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pgrp(pid) != group:
            return True
        time.sleep(0.05)
    return False


def test_local_up_serves_stops_on_ctrl_c_and_restarts_on_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port, http = free_ports(2)
    cfile = data / "cluster.yaml"
    for run, group in ((1, False), (2, True)):
        up = LocalUp(data, port, http, tmp_path / f"up{run}.log")
        try:
            up.wait_ready()
            out = up.output()
            assert ("starting" if run == 1 else "restarting") + f" a local cluster in {data}" in out
            pids = up.node_pids()
            assert len(pids) == 1 and pgrp(pids[0]) == up.proc.pid, out
            layout = yaml.safe_load(cfile.read_text())
            assert layout["acceptors"] == [f"127.0.0.1:{port}"]
            assert layout["http_peers"] == [f"127.0.0.1:{http}"]
            if run == 1:
                assert ok(ctl("-c", cfile, "put", "persist", "survives restarts")) == "OK\n"
            assert ok(ctl("-c", cfile, "get", "persist")) == "survives restarts\n"
            status = ok(ctl("-c", cfile, "status")).splitlines()
            assert len(status) == 2 and status[1].split()[3] == "LEADER", status
            rc = up.interrupt(group)
            out = up.output()
            assert rc == EXIT_OK, out
            assert out.rstrip().endswith("stopped"), out
            assert all(gone(p, up.proc.pid) for p in pids), f"nodes left running: {pids}"
            assert "Traceback" not in out, out
        finally:
            up.kill()
    assert (data / "node-0" / "IDENTITY").exists()


def test_keys_nodes_remakes_each_nodes_own_key_file(tmp_path: Path) -> None:
    """Without Kubernetes, a rotation edits cluster.key, then ``paxosctl keys
    nodes`` remakes every node's own file (issue 12: node identities)."""
    from paxosrsm.cli.ctl import local_layout
    from paxosrsm.net import auth

    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(local_layout(tmp_path, 3, 1, 1, 2)))
    (tmp_path / "cluster.key").write_text("0 " + "a" * 32 + "\n")
    assert "wrote 4 node key files" in ok(ctl("keys", "nodes", "--data-dir", tmp_path))
    files = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert files == [f"node-{i}.key" for i in range(4)]
    assert (tmp_path / "keys" / "node-0.key").stat().st_mode & 0o777 == 0o600
    before = auth.load_key(tmp_path / "keys" / "node-2.key")
    assert before.identity and sorted(before.pairs[0]) == [0, 1, 3]
    (tmp_path / "cluster.key").write_text("0 " + "a" * 32 + "\n5 " + "b" * 32 + "\n")
    ok(ctl("keys", "nodes", "--data-dir", tmp_path))
    after = auth.load_key(tmp_path / "keys" / "node-2.key")
    assert sorted(after.pairs) == [0, 5] and after.pairs[0] == before.pairs[0]
    bad = ctl("keys", "nodes", "--data-dir", tmp_path / "nowhere")
    assert bad.returncode == 2 and "cannot make the node key files" in bad.stderr


# ------------------------------------------------------------------ the MVCC store (issue 13)


def test_prefixes_revisions_stdin_and_json(cf: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", *cf, "put", "cli/a", "-", "-w", "json"],
        input="from stdin\n", capture_output=True, text=True, timeout=30, env=env(),
    )  # fmt: skip
    assert p.returncode == EXIT_OK, p.stderr
    rev = json.loads(p.stdout)["revision"]
    ok(ctl(*cf, "put", "cli/b", "2"))
    ok(ctl(*cf, "put", "cli/a", "changed"))
    assert ok(ctl(*cf, "get", "cli/", "--prefix")) == "cli/a\nchanged\ncli/b\n2\n"
    assert ok(ctl(*cf, "get", "cli/a", "--rev", str(rev))) == "from stdin\n\n"
    doc = json.loads(ok(ctl(*cf, "get", "cli/", "--prefix", "--limit", "1", "-w", "json")))
    assert doc["count"] == 2 and doc["more"] and doc["kvs"][0]["key"] == "cli/a"
    assert doc["kvs"][0]["version"] == 2 and doc["kvs"][0]["create_revision"] == rev
    table = ok(ctl(*cf, "get", "cli/", "--prefix", "-w", "table")).splitlines()
    assert table[0].split() == ["KEY", "VALUE", "CREATE", "MOD", "VERSION", "LEASE"]
    assert ctl(*cf, "get", "cli/missing", "-w", "json").returncode == 1
    assert ok(ctl("--version")).startswith("paxosctl ")


def test_leases_and_watch(cf: list[str]) -> None:
    out = ok(ctl(*cf, "lease", "grant", "60"))
    assert out.startswith("lease ") and "granted with TTL(60s)" in out
    lid = out.split()[1]
    ok(ctl(*cf, "put", "cl/leased", "v", "--lease", lid))
    ttl = ok(ctl(*cf, "lease", "timetolive", lid))
    assert f"lease {lid} granted with TTL(60s)" in ttl and "attached keys([cl/leased])" in ttl
    assert "keepalived with TTL(60)" in ok(ctl(*cf, "lease", "keepalive", lid, "--once"))
    w = subprocess.Popen(
        [sys.executable, "-m", "paxosrsm.cli", *cf, "watch", "cl/", "--prefix", "--prev-kv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        time.sleep(2.0)  # the watch starts from now
        ok(ctl(*cf, "put", "cl/w", "1"))
        ok(ctl(*cf, "put", "cl/w", "2"))
        assert ok(ctl(*cf, "lease", "revoke", lid)) == f"lease {lid} revoked\n"
        time.sleep(1.0)
    finally:
        w.terminate()
        text, _err = w.communicate(timeout=10)
    assert text.splitlines() == [
        "PUT", "cl/w", "1",
        "PUT", "cl/w", "1", "cl/w", "2",
        "DELETE", "cl/leased", "v", "cl/leased", "",
    ], text  # fmt: skip
    assert ctl(*cf, "get", "cl/leased").returncode == 1
    assert ctl(*cf, "lease", "timetolive", "zz").returncode == 2
