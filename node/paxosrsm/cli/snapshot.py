"""``paxosctl snapshot save | status | restore``: backups of a running cluster
and new clusters made from them (the file format: storage/backup.py).

    paxosctl snapshot save FILE [--endpoints http://h:p,...] [--token T]
    paxosctl snapshot save --dir DIR --prefix NAME [--keep N] [--report FILE]
    paxosctl snapshot status FILE [-w json]
    paxosctl snapshot restore FILE --data-dir DIR [--replicas 3 --learners 0]
    paxosctl snapshot restore FILE --member-dir DIR --cluster-id ID --node-id I --acceptors N

``save`` asks a member's HTTP API (``GET /v1/snapshot``, an admin token) for
a backup holding every write acknowledged before it, writes it to
``FILE.part``, checks both digests, fsyncs and renames it. The endpoints
default to the cluster file's ``http_peers``; each is tried in turn.

With ``--dir`` and ``--prefix`` the file is ``DIR/NAME-YYYYmmdd-HHMMSS.pxb``
(UTC); ``--keep N`` then deletes all but the N newest such files, and
``--report FILE`` writes what was saved and kept as JSON (the operator's
backup Jobs write it to /dev/termination-log). ``--local`` asks a member for
its own state without a read index: the only backup a cluster that lost its
quorum can give; it may miss writes that other members decided.

``restore`` never touches an existing member: it seeds NEW, empty data
directories under a new cluster id, either a whole local cluster (that
``paxosctl local up --data-dir DIR`` then starts) or one member (what a
Kubernetes init container runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ..net.identity import write_node_keys
from ..storage import Identity
from ..storage.backup import (
    MAX_BACKUP_BYTES,
    BackupError,
    BackupInfo,
    read_backup,
    seed_member,
)
from . import s3


class SnapshotError(Exception):
    pass


def add_parser(sub: Any) -> None:
    snap = sub.add_parser("snapshot", help="save a backup, check one, or restore a new cluster")
    ssub = snap.add_subparsers(dest="snap_cmd", required=True)
    x = ssub.add_parser("save", help="save a consistent backup of the running cluster")
    x.add_argument("file", nargs="?")
    x.add_argument("--dir", help="with --prefix: save as DIR/PREFIX-<UTC time>.pxb")
    x.add_argument("--prefix", help="the file name's prefix (with --dir)")
    x.add_argument("--keep", type=int, default=0, help="keep only the N newest PREFIX files")
    x.add_argument("--report", help="write a JSON report of what was saved and kept here")
    x.add_argument(
        "--local",
        action="store_true",
        help="the member's own state, no read index (after a quorum loss)",
    )
    x.add_argument(
        "--s3-endpoint",
        help="S3-compatible store for s3:// targets "
        "(default $PAXOS_S3_ENDPOINT; keys from $AWS_ACCESS_KEY_ID/SECRET)",
    )
    x.add_argument("--endpoints", help="HTTP API URLs (default: the cluster file's http_peers)")
    x.add_argument("--token", help="an admin token (default $PAXOS_TOKEN; none on loopback demos)")
    x.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole transfer")
    x.add_argument("-w", "--write-out", choices=("simple", "json"), default="simple")
    x = ssub.add_parser("status", help="check a backup file's digests and print what it holds")
    x.add_argument("file")
    x.add_argument("--s3-endpoint", help="for an s3:// FILE (default $PAXOS_S3_ENDPOINT)")
    x.add_argument("-w", "--write-out", choices=("simple", "json", "table"), default="simple")
    x = ssub.add_parser("restore", help="seed the data directories of a NEW cluster from a backup")
    x.add_argument("file")
    x.add_argument("--s3-endpoint", help="for an s3:// FILE (default $PAXOS_S3_ENDPOINT)")
    x.add_argument("--data-dir", help="a new local cluster (paxosctl local up --data-dir DIR)")
    x.add_argument("--replicas", type=int, default=3)
    x.add_argument("--learners", type=int, default=0)
    x.add_argument("--base-port", type=int, default=7100)
    x.add_argument("--http-base", type=int, default=8100)
    x.add_argument("--grpc-base", type=int, default=2479)
    x.add_argument("--member-dir", help="one member's data directory (with the three below)")
    x.add_argument("--cluster-id", help="the new cluster's id (must differ from the backup's)")
    x.add_argument("--node-id", type=int)
    x.add_argument("--acceptors", type=int)


def _describe(info: BackupInfo) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created))
    return (
        f"cluster {info.cluster_id}, slot {info.slot}, revision {info.revision}, taken {when} "
        f"by member {info.node}, {info.size} bytes, sha256 {info.file_sha256}"
    )


def _endpoints(ns: argparse.Namespace, cluster: dict[str, Any] | None) -> list[str]:
    if ns.endpoints:
        return [e if "://" in e else f"http://{e}" for e in ns.endpoints.split(",") if e]
    peers = (cluster or {}).get("http_peers") or []
    if not peers:
        raise SnapshotError("no --endpoints and the cluster file lists no http_peers")
    return [f"http://{p}" for p in peers]


_STAMPED = re.compile(r"^(?P<prefix>.+)-(?P<stamp>\d{8}-\d{6})\.pxb$")


def _target(ns: argparse.Namespace) -> tuple[str, str]:
    """(where: a directory or s3://bucket/path, the file's name)."""
    if ns.file and (ns.dir or ns.prefix):
        raise SnapshotError("give FILE, or --dir and --prefix, not both")
    if ns.file:
        if ns.keep:
            raise SnapshotError("--keep needs --dir and --prefix")
        if s3.is_s3(ns.file):
            where, _, name = ns.file.rpartition("/")
            if not name.endswith(".pxb") or where == "s3:/":
                raise SnapshotError("an S3 FILE is s3://BUCKET/PATH/NAME.pxb")
            return where, name
        f = Path(ns.file)
        return str(f.parent), f.name
    if not (ns.dir and ns.prefix):
        raise SnapshotError("give FILE, or --dir and --prefix")
    if not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,100}", ns.prefix):
        raise SnapshotError("--prefix: letters, digits, '-', '_' and '.', at most 101")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return str(ns.dir), f"{ns.prefix}-{stamp}.pxb"


def select(names: list[str], prefix: str, keep: int) -> tuple[list[str], list[str]]:
    """(kept, to delete): of the ``PREFIX-<stamp>.pxb`` names, the ``keep``
    newest by the time in their names, and the rest. Other names are left."""
    mine = sorted(
        (n for n in names if (m := _STAMPED.match(n)) and m["prefix"] == prefix),
        key=lambda n: n[len(prefix) + 1 :], reverse=True,
    )  # fmt: skip
    return mine[:keep], mine[keep:]


def prune(directory: Path, prefix: str, keep: int) -> tuple[list[str], list[str]]:
    """Delete all but the ``keep`` newest ``PREFIX-<stamp>.pxb`` files of
    ``directory`` (by the time in their names). Returns (kept, deleted)."""
    kept, gone = select([p.name for p in directory.iterdir()], prefix, keep)
    for name in gone:
        (directory / name).unlink(missing_ok=True)
    return kept, gone


def save(ns: argparse.Namespace, cluster: dict[str, Any] | None) -> int:
    where, name = _target(ns)
    if ns.keep < 0:
        raise SnapshotError("--keep must be >= 0")
    remote: s3.Location | None = None
    cli: Any = None
    if s3.is_s3(where):
        try:
            remote = s3.parse(where)
            cli = s3.client(ns.s3_endpoint)
        except s3.S3Error as e:
            raise SnapshotError(str(e)) from e
        tmp = tempfile.TemporaryDirectory(prefix="paxosctl-")
        out = Path(tmp.name) / name
    else:
        out = Path(where) / name
    try:
        return _save(ns, cluster, out, remote, cli)
    finally:
        if remote is not None:
            tmp.cleanup()


def _save(
    ns: argparse.Namespace,
    cluster: dict[str, Any] | None,
    out: Path,
    remote: s3.Location | None,
    cli: Any,
) -> int:
    part = out.with_name(f".{out.name}.part")
    token = ns.token or os.environ.get("PAXOS_TOKEN", "")
    errors: list[str] = []
    for url in _endpoints(ns, cluster):
        query = "?local=true" if ns.local else ""
        req = urllib.request.Request(f"{url.rstrip('/')}/v1/snapshot{query}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=ns.timeout) as r:
                size = int(r.headers.get("Content-Length") or -1)
                if not 0 < size <= MAX_BACKUP_BYTES:
                    raise SnapshotError(f"{url}: bad Content-Length {size}")
                got = 0
                with open(part, "wb") as f:
                    while chunk := r.read(1 << 20):
                        got += len(chunk)
                        if got > size:
                            raise SnapshotError(f"{url}: more bytes than announced")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if got != size:
                    raise SnapshotError(f"{url}: transfer cut at {got} of {size} bytes")
        except urllib.error.HTTPError as e:
            body = e.read(2000).decode("utf-8", "replace").strip()
            part.unlink(missing_ok=True)
            if e.code == 401:  # the same token everywhere: no use asking the others
                raise SnapshotError(f"{url}: {e.code}: {body} (pass an admin --token)") from e
            errors.append(f"{url}: {e.code} {body}")
            continue
        except (OSError, SnapshotError) as e:
            errors.append(f"{url}: {e}")
            part.unlink(missing_ok=True)
            continue
        try:
            info, _ = read_backup(part)
        except BackupError as e:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: the file received is not a sound backup: {e}")
            continue
        os.replace(part, out)
        fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        report: dict[str, Any] = {"file": out.name, **info.to_json(), "endpoint": url}
        try:
            if remote is not None:
                report["url"] = s3.upload(cli, out, remote, out.name)
                if ns.keep:
                    kept, gone = select(s3.names(cli, remote), ns.prefix, ns.keep)
                    for old in gone:
                        s3.delete(cli, remote, old)
                    report["kept"], report["deleted"] = kept, gone
            elif ns.keep:
                kept, gone = prune(out.parent, ns.prefix, ns.keep)
                report["kept"], report["deleted"] = kept, gone
        except s3.S3Error as e:
            raise SnapshotError(str(e)) from e
        if ns.report:
            Path(ns.report).write_text(json.dumps(report, sort_keys=True))
        if ns.write_out == "json":
            print(json.dumps(report, sort_keys=True))
        else:
            print(f"saved {report.get('url', out)}: {_describe(info)}")
            for name in report.get("deleted", []):
                print(f"deleted {name} (--keep {ns.keep})")
        return 0
    hint = " (pass an admin --token)" if any(": 403 " in x for x in errors) else ""
    raise SnapshotError("no member gave a backup: " + "; ".join(errors) + hint)


def _read(ns: argparse.Namespace) -> tuple[BackupInfo, Any]:
    """The backup named by FILE: a path, or s3://... (downloaded, then
    checked as any file)."""
    if not s3.is_s3(ns.file):
        return read_backup(ns.file)
    with tempfile.TemporaryDirectory(prefix="paxosctl-") as tmp:
        f = Path(tmp) / "backup.pxb"
        try:
            s3.download(s3.client(ns.s3_endpoint), ns.file, f)
        except s3.S3Error as e:
            raise BackupError(str(e)) from e
        return read_backup(f)


def status(ns: argparse.Namespace) -> int:
    try:
        info, snap = _read(ns)
    except BackupError as e:
        print(f"paxosctl: DAMAGED: {e}", file=sys.stderr)
        return 1
    d = {**info.to_json(), "sessions": len(snap.sessions), "state_bytes": len(snap.state)}
    if ns.write_out == "json":
        print(json.dumps(d))
    elif ns.write_out == "table":
        w = max(len(k) for k in d)
        for k, v in d.items():
            print(f"{k:<{w}}  {v}")
    else:
        print(f"ok: {_describe(info)}")
    return 0


def restore(ns: argparse.Namespace) -> int:
    try:
        info, snap = _read(ns)
    except BackupError as e:
        raise SnapshotError(str(e)) from e
    if ns.member_dir:
        if not ns.cluster_id or ns.node_id is None or not ns.acceptors:
            raise SnapshotError("--member-dir needs --cluster-id, --node-id and --acceptors")
        if ns.cluster_id == info.cluster_id:
            raise SnapshotError(
                f"the backup is of cluster {info.cluster_id!r}: a restore makes a new cluster, "
                "give it a new --cluster-id"
            )
        try:
            seed_member(ns.member_dir, Identity(ns.cluster_id, ns.node_id, ns.acceptors), snap)
        except BackupError as e:
            raise SnapshotError(str(e)) from e
        print(f"seeded {ns.member_dir} as member {ns.node_id} of {ns.cluster_id} from "
              f"{_describe(info)}")  # fmt: skip
        return 0
    if not ns.data_dir:
        raise SnapshotError("give --data-dir (a new local cluster) or --member-dir")
    from .ctl import local_layout  # the same layout `local up` makes

    if ns.replicas not in (1, 3, 5, 7) or not 0 <= ns.learners <= 8:
        raise SnapshotError("--replicas must be 1, 3, 5 or 7 and --learners 0..8")
    data = Path(ns.data_dir).resolve()
    if data.exists() and any(data.iterdir()):
        raise SnapshotError(f"{data} is not empty: restore into a new directory")
    data.mkdir(parents=True, exist_ok=True)
    layout = local_layout(data, ns.replicas, ns.learners, ns.base_port, ns.http_base,
                          ns.grpc_base)  # fmt: skip
    src = ns.file if s3.is_s3(ns.file) else str(Path(ns.file).resolve())
    layout["restored_from"] = {"file": src, **info.to_json()}
    n = ns.replicas + ns.learners
    try:
        for nid in range(n):
            seed_member(data / f"node-{nid}", Identity(layout["cluster_id"], nid, ns.replicas),
                        snap)  # fmt: skip
    except BackupError as e:
        raise SnapshotError(str(e)) from e
    keyf = data / "cluster.key"
    keyf.write_text(secrets.token_urlsafe(32) + "\n")
    keyf.chmod(0o600)
    write_node_keys(data, range(n))
    (data / "cluster.yaml").write_text(yaml.safe_dump(layout, sort_keys=False))
    print(f"restored {n} members of the new cluster {layout['cluster_id']} into {data} from "
          f"{_describe(info)}")  # fmt: skip
    print(f"start it:  paxosctl local up --data-dir {data} --replicas {ns.replicas} "
          f"--learners {ns.learners}")  # fmt: skip
    return 0


def run(ns: argparse.Namespace, cluster: dict[str, Any] | None) -> int:
    try:
        if ns.snap_cmd == "save":
            return save(ns, cluster)
        if ns.snap_cmd == "status":
            return status(ns)
        return restore(ns)
    except SnapshotError as e:
        print(f"paxosctl: {e}", file=sys.stderr)
        return 1
