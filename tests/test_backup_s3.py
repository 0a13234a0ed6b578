"""Backups in an S3-compatible store: a real S3 server on loopback (moto's,
from PyPI) and MinIO's client library, driven through paxosctl against a
running node: stamped objects, retention, status and restore from s3://,
a damaged object refused, missing keys refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netcluster import ProcCluster, free_ports

KEYS = {"AWS_ACCESS_KEY_ID": "paxos-test", "AWS_SECRET_ACCESS_KEY": "paxos-test-secret"}


@pytest.fixture
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def ctl(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", *map(str, args)],
        capture_output=True, text=True, timeout=90, env={**os.environ, **KEYS, **(env or {})},
    )  # fmt: skip


def test_backups_to_s3_rotate_and_restore(s3_server: str, tmp_path: Path) -> None:
    from minio import Minio

    os.environ.update(KEYS)
    cli = Minio(s3_server.split("//")[1], access_key=KEYS["AWS_ACCESS_KEY_ID"],
                secret_key=KEYS["AWS_SECRET_ACCESS_KEY"], secure=False)  # fmt: skip
    cli.make_bucket("paxos-backups")
    c = ProcCluster(tmp_path / "c", 1, 0).start_all()
    try:
        c.wait_ready()
        c.client().put("hello", "world")
        reports = []
        for i in range(3):
            if i:
                time.sleep(1.05)  # names carry the second
            r = ctl("snapshot", "save", "--dir", "s3://paxos-backups/team/nightly", "--prefix",
                    "nightly", "--keep", 2, "--s3-endpoint", s3_server, "--endpoints", c.http(0),
                    "-w", "json")  # fmt: skip
            assert r.returncode == 0, r.stderr
            reports.append(json.loads(r.stdout))
        objs = sorted(o.object_name for o in cli.list_objects("paxos-backups", recursive=True))
        assert objs == sorted(f"team/nightly/{r['file']}" for r in reports[1:])
        assert reports[-1]["deleted"] == [reports[0]["file"]]
        assert reports[-1]["url"] == f"s3://paxos-backups/team/nightly/{reports[-1]['file']}"
        # (moto's server does not check signatures: a wrong key would pass
        # there; a missing one is refused before any request.)
        nokey = ctl("snapshot", "save", "s3://paxos-backups/x.pxb", "--s3-endpoint", s3_server,
                    "--endpoints", c.http(0), env={"AWS_SECRET_ACCESS_KEY": ""})  # fmt: skip
        assert nokey.returncode == 1 and "AWS_SECRET_ACCESS_KEY" in nokey.stderr, nokey.stderr
        noep = ctl("snapshot", "save", "s3://paxos-backups/x.pxb", "--endpoints", c.http(0))
        assert noep.returncode == 1 and "no S3 endpoint" in noep.stderr
    finally:
        c.close()
    url = reports[-1]["url"]
    st = ctl("snapshot", "status", url, "--s3-endpoint", s3_server, "-w", "json")
    assert st.returncode == 0 and json.loads(st.stdout)["file_sha256"] == reports[-1]["file_sha256"]
    r = ctl("snapshot", "restore", url, "--data-dir", tmp_path / "new", "--replicas", 3,
            "--s3-endpoint", s3_server)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for nid in range(3):
        chk = subprocess.run(
            [sys.executable, "-m", "paxosrsm.storage", "check", tmp_path / "new" / f"node-{nid}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert chk.returncode == 0, chk.stderr
    # A damaged object is refused before anything uses it.
    body = bytearray(cli.get_object("paxos-backups", url.split("/", 3)[3]).read())
    body[100] ^= 1
    (tmp_path / "bad.pxb").write_bytes(bytes(body))
    cli.fput_object("paxos-backups", "team/bad.pxb", str(tmp_path / "bad.pxb"))
    bad = ctl("snapshot", "status", "s3://paxos-backups/team/bad.pxb", "--s3-endpoint", s3_server)
    assert bad.returncode == 1 and "DAMAGED" in bad.stderr and "checksum" in bad.stderr
