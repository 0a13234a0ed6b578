"""Backups of a running cluster of real processes, and a new cluster restored
from one: paxosctl snapshot save (HTTP), etcdctl snapshot save (gRPC), the
admin-only rule, and every write acknowledged before the backup present in
the restored cluster while writes ran during it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from netcluster import ProcCluster

from paxosrsm.storage.backup import read_backup

ADMIN = "a" * 24
RW = "b" * 24
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def ctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", *map(str, args)],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_backup_under_load_then_restore_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    auth = tmp_path / "tokens"
    auth.write_text(f"ops admin * {ADMIN}\napp readwrite * {RW}\n")
    c = ProcCluster(tmp_path / "old", 3, 0, ["--http-auth-file", str(auth)]).start_all()
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    try:
        c.wait_ready()
        cl = c.client()

        def load() -> None:
            i = 0
            while not stop.is_set():
                cl.put(f"k{i}", f"v{i}")
                acked.append((f"k{i}", f"v{i}"))
                i += 1

        t = threading.Thread(target=load)
        t.start()
        while len(acked) < 200:
            stop.wait(0.05)
        before = list(acked)  # acknowledged before the backup is asked for
        lead = c.leader()
        follower = next(i for i in range(3) if i != lead)
        # From a follower: it waits until it applied the leader's read index.
        r = ctl("snapshot", "save", tmp_path / "b.pxb", "--endpoints", c.http(follower),
                "--token", ADMIN)  # fmt: skip
        assert r.returncode == 0, r.stderr
        while len(acked) < len(before) + 100:
            stop.wait(0.05)  # and writes went on during and after it
        stop.set()
        t.join()
        # Not with a readwrite token: a backup holds every key.
        r = ctl("snapshot", "save", tmp_path / "no.pxb", "--endpoints", c.http(lead),
                "--token", RW)  # fmt: skip
        assert r.returncode == 1 and "403" in r.stderr and not (tmp_path / "no.pxb").exists()
        # etcdctl's snapshot save over gRPC takes the same file.
        e = subprocess.run(
            [ETCDCTL, "--endpoints", c.grpc(follower), "--user", f"ops:{ADMIN}", "snapshot",
             "save", str(tmp_path / "e.db")],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, ETCDCTL_API="3"),
        )  # fmt: skip
        assert e.returncode == 0, e.stderr
        assert ctl("snapshot", "status", tmp_path / "e.db").returncode == 0
        e = subprocess.run(
            [ETCDCTL, "--endpoints", c.grpc(lead), "--user", f"app:{RW}", "snapshot", "save",
             str(tmp_path / "e2.db")],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, ETCDCTL_API="3"),
        )  # fmt: skip
        assert e.returncode != 0 and "permission denied" in e.stderr
    finally:
        stop.set()
        c.close()

    info, _ = read_backup(tmp_path / "b.pxb")
    assert info.revision is not None and info.revision > len(before)
    new = ProcCluster(tmp_path / "new", 3, 0)
    cid = new.layout["cluster_id"]
    r = ctl("snapshot", "restore", tmp_path / "b.pxb", "--member-dir", tmp_path / "x",
            "--cluster-id", info.cluster_id, "--node-id", 0, "--acceptors", 3)  # fmt: skip
    assert r.returncode == 1 and "new --cluster-id" in r.stderr
    for nid in range(3):
        r = ctl("snapshot", "restore", tmp_path / "b.pxb", "--member-dir",
                tmp_path / "new" / f"node-{nid}", "--cluster-id", cid, "--node-id", nid,
                "--acceptors", 3)  # fmt: skip
        assert r.returncode == 0, r.stderr
    new.start_all()
    try:
        new.wait_ready()
        cl = new.client()
        missing = [(k, v) for k, v in before if cl.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        got = subprocess.run(
            [ETCDCTL, "--endpoints", new.grpc(0), "get", "k0", "-w", "json"],
            capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"),
        )  # fmt: skip
        assert got.returncode == 0 and f'"revision":{info.revision}' in got.stdout
        cl.put("after-restore", "yes")
        assert cl.get("after-restore") == "yes"
    finally:
        new.close()


def test_restore_makes_a_whole_local_cluster_and_never_overwrites(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path / "old", 1, 0).start_all()
    try:
        c.wait_ready()
        c.client().put("hello", "world")
        r = ctl("snapshot", "save", tmp_path / "b.pxb", "--endpoints", c.http(0))
        assert r.returncode == 0, r.stderr  # anonymous on a loopback demo
        # Scheduled backups' form: stamped names, the newest N kept, a report.
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "other-20200101-000000.pxb").write_bytes(b"not ours")
        reports = []
        for i in range(3):
            if i:
                time.sleep(1.05)  # the names carry the second
            r = ctl("snapshot", "save", "--dir", tmp_path / "dir", "--prefix", "nightly",
                    "--keep", 2, "--report", tmp_path / "report.json",
                    "--endpoints", c.http(0), *(["--local"] if i == 2 else []))  # fmt: skip
            assert r.returncode == 0, r.stderr
            reports.append(json.loads((tmp_path / "report.json").read_text()))
        names = sorted(p.name for p in (tmp_path / "dir").iterdir())
        assert len(names) == 3 and names[-1] == "other-20200101-000000.pxb"
        last = reports[-1]
        assert last["kept"] == [reports[2]["file"], reports[1]["file"]]
        assert last["deleted"] == [reports[0]["file"]]
        assert reports[1]["read_index"] is not None and last["read_index"] is None  # --local
    finally:
        c.close()
    r = ctl("snapshot", "restore", tmp_path / "b.pxb", "--data-dir", tmp_path / "new",
            "--replicas", 3, "--learners", 1)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "paxosctl local up --data-dir" in r.stdout
    for nid in range(4):
        chk = subprocess.run(
            [sys.executable, "-m", "paxosrsm.storage", "check", tmp_path / "new" / f"node-{nid}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert chk.returncode == 0 and "snapshot_slot=" in chk.stdout, chk.stderr
    again = ctl("snapshot", "restore", tmp_path / "b.pxb", "--data-dir", tmp_path / "new")
    assert again.returncode == 1 and "not empty" in again.stderr
    damaged = tmp_path / "d.pxb"
    damaged.write_bytes((tmp_path / "b.pxb").read_bytes()[:-1])
    st = ctl("snapshot", "status", damaged)
    assert st.returncode == 1 and "DAMAGED" in st.stderr
