"""``paxosctl``: talk to a cluster, or run one locally.

    paxosctl local up [--replicas 3] [--learners 0] [--data-dir ./paxos-data]
    paxosctl put KEY VALUE|- [--lease ID] | get KEY [--stale] [--prefix] [--rev N] [--limit N]
             [-w simple|json|table] | delete KEY | cas KEY EXPECTED NEW
    paxosctl watch KEY [--prefix] [--rev N] [--prev-kv] [-w json]
    paxosctl txn < FILE           (etcdctl's form: compares, blank line, then-ops, blank, else-ops)
    paxosctl lease grant TTL | revoke ID | keepalive ID [--once] | timetolive ID
    paxosctl --version
    paxosctl status
    paxosctl bench [--outstanding 1,10,100,1000] [--seconds 5]
    paxosctl snapshot save FILE | status FILE | restore FILE --data-dir DIR   (backups)

A cluster is named by ``-c cluster.yaml`` (written by ``local up``; default
$PAXOS_CLUSTER, else ./paxos-data/cluster.yaml) or by ``--nodes`` and
``--key-file``. Exit codes: 0 ok; 1 the operation failed (a refused CAS, a
missing key, a KV error); 2 bad arguments; 3 a write's outcome is unknown;
4 the cluster is unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .. import mvcc
from ..client.aio import AsyncClient, ClientError, KVError, Unavailable, UnknownOutcome
from ..client.mvcc import MVCCClient
from ..net.auth import load_key
from ..net.identity import node_key_path, write_node_keys
from ..net.options import OptionsError, parse_addr
from . import snapshot

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
DEFAULT_DIR = "./paxos-data"


class UsageError(Exception):
    pass


# ------------------------------------------------------------------ cluster files


def _cluster_file(ns: argparse.Namespace) -> Path:
    if getattr(ns, "cluster", None):
        return Path(ns.cluster)
    env = os.environ.get("PAXOS_CLUSTER")
    return Path(env) if env else Path(DEFAULT_DIR) / "cluster.yaml"


def load_cluster(ns: argparse.Namespace) -> dict[str, Any]:
    if getattr(ns, "nodes", None):
        if not ns.key_file:
            raise UsageError("--nodes needs --key-file")
        return {
            "acceptors": [f"{h}:{p}" for h, p in (parse_addr(a) for a in ns.nodes.split(","))],
            "learners": [],
            "http_peers": [],
            "key_file": ns.key_file,
        }
    f = _cluster_file(ns)
    try:
        data = yaml.safe_load(f.read_text())
    except FileNotFoundError as e:
        raise UsageError(
            f"no cluster file {f}: start one with `paxosctl local up`, or pass -c FILE "
            "or --nodes host:port,... --key-file FILE"
        ) from e
    except yaml.YAMLError as e:
        raise UsageError(f"cluster file {f} is not YAML: {e}") from e
    if not isinstance(data, dict) or not data.get("acceptors"):
        raise UsageError(f"cluster file {f} lists no acceptors")
    if not Path(data.get("key_file", "")).is_absolute():
        data["key_file"] = str(f.parent / data.get("key_file", "cluster.key"))
    return data


def _ssl(ns: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS for the client's TCP path (requests too large for a datagram),
    when the nodes run with --tls-cert: --tls-ca checks their certificates
    (and host names), --tls-cert/--tls-key present ours (mutual TLS)."""
    ca, cert, key = (getattr(ns, k, None) for k in ("tls_ca", "tls_cert", "tls_key"))
    if not (ca or cert):
        return None
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    if not ca:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _client(c: dict[str, Any], timeout: float, ns: argparse.Namespace | None = None) -> AsyncClient:
    addrs = [parse_addr(a) for a in c["acceptors"]]
    tls = _ssl(ns) if ns is not None else None
    return AsyncClient(addrs, load_key(c["key_file"]), timeout=timeout, ssl=tls)


def cmd_keys(ns: argparse.Namespace) -> int:
    """``keys new``: a fresh master key line (for a rotation: add it second,
    then first, then drop the old one). ``keys client FILE``: the client
    credentials of a key file, for users who must not speak the peer protocol.
    ``keys nodes``: each node's own key file (its identity) again, after
    ``cluster.key`` changed, in a local cluster's data directory."""
    if ns.keys_cmd == "new":
        print(f"{ns.id} {secrets.token_hex(32)}")
        return EXIT_OK
    if ns.keys_cmd == "nodes":
        # After an edit of cluster.key (a rotation step) without Kubernetes:
        # every node's own file again; the nodes reload theirs within 2 s.
        root = Path(ns.data_dir)
        try:
            layout = yaml.safe_load((root / "cluster.yaml").read_text())
            n = len(layout["acceptors"]) + len(layout["learners"])
            paths = write_node_keys(root, range(n))
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
            raise UsageError(f"cannot make the node key files in {root}: {e}") from e
        print(f"wrote {len(paths)} node key files in {root / 'keys'}")
        return EXIT_OK
    ring = load_key(ns.file)
    print(ring.client_lines(), end="")
    return EXIT_OK


# ------------------------------------------------------------------ KV commands


async def _kv(ns: argparse.Namespace) -> int:
    c = load_cluster(ns)
    async with _client(c, ns.timeout, ns) as cl:
        if ns.cmd == "put" and (ns.value == "-" or ns.lease != "0" or ns.write_out != "simple"):
            value = sys.stdin.buffer.read(MAX_STDIN + 1) if ns.value == "-" else ns.value.encode()
            if len(value) > MAX_STDIN:
                raise UsageError(f"a value from stdin is at most {MAX_STDIN} bytes")
            rev = await MVCCClient(cl).put(ns.key, value, lease=_lease_id(ns.lease))
            print(json.dumps({"revision": rev}) if ns.write_out == "json" else "OK")
        elif ns.cmd == "put":
            await cl.put(ns.key, ns.value)
            print("OK")
        elif ns.cmd == "get" and (ns.prefix or ns.rev or ns.limit or ns.write_out != "simple"):
            out = await MVCCClient(cl).range(
                ns.key, prefix=ns.prefix, revision=ns.rev, limit=ns.limit, serializable=ns.stale
            )
            _print_range(out, ns.write_out, single=not ns.prefix)
            return EXIT_OK if out["kvs"] or ns.prefix else EXIT_FAIL
        elif ns.cmd == "get":
            v = await cl.get(ns.key, stale=ns.stale)
            if v is None:
                print(f"(no such key: {ns.key})", file=sys.stderr)
                return EXIT_FAIL
            print(v)
        elif ns.cmd == "delete":
            print("deleted" if await cl.delete(ns.key) else "(no such key)")
        elif ns.cmd == "cas":
            exp = None if ns.expected_absent else ns.expected
            if not await cl.cas(ns.key, exp, ns.new):
                print("CAS failed: the key did not hold the expected value", file=sys.stderr)
                return EXIT_FAIL
            print("OK")
    return EXIT_OK


MAX_STDIN = 1 << 20


def _version() -> str:
    from ..net.main import version

    return version()


def _lease_id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise UsageError(f"a lease id is hex (as `lease grant` prints it), got {text!r}") from None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _kv_json(kv: dict[str, Any]) -> dict[str, Any]:
    return {**kv, "key": _text(kv["key"]), "value": _text(kv["value"])}


def _print_range(out: dict[str, Any], how: str, single: bool) -> None:
    if how == "json":
        doc = {"revision": out["revision"], "count": out["count"], "more": out["more"],
               "kvs": [_kv_json(kv) for kv in out["kvs"]]}  # fmt: skip
        print(json.dumps(doc))
    elif how == "table":
        rows = [("KEY", "VALUE", "CREATE", "MOD", "VERSION", "LEASE")]
        rows += [(_text(k["key"]), _text(k["value"]), str(k["create_revision"]),
                  str(k["mod_revision"]), str(k["version"]), f"{k['lease']:x}")
                 for k in out["kvs"]]  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    elif single:
        for kv in out["kvs"]:
            print(_text(kv["value"]))
    else:
        for kv in out["kvs"]:
            print(_text(kv["key"]))
            print(_text(kv["value"]))


_CMP = re.compile(
    r'^(value|version|create|mod|lease)\("((?:[^"\\]|\\.)*)"\)\s*(=|!=|<|>)\s*"((?:[^"\\]|\\.)*)"$'
)
_TARGETS = {"version": mvcc.T_VERSION, "create": mvcc.T_CREATE, "mod": mvcc.T_MOD,
            "value": mvcc.T_VALUE, "lease": mvcc.T_LEASE}  # fmt: skip
_RESULTS = {"=": mvcc.EQUAL, "!=": mvcc.NOT_EQUAL, "<": mvcc.LESS, ">": mvcc.GREATER}
_INT_FIELD = {"version": "version", "create": "create_revision", "mod": "mod_revision",
              "lease": "lease"}  # fmt: skip


def parse_txn(text: str) -> dict[str, Any]:
    """etcdctl's interactive txn form: compare lines (``mod("k") > "3"``), a
    blank line, the success ops (``put k v``, ``get k``, ``del k``), a blank
    line, the failure ops."""
    parts: list[list[str]] = [[], [], []]
    i = 0
    for line in text.splitlines():
        if not line.strip():
            i += 1
            if i > 2:
                break
            continue
        parts[i].append(line.strip())
    compare = []
    for line in parts[0]:
        m = _CMP.match(line)
        if m is None:
            raise UsageError(f'not a compare: {line!r} (want e.g. value("k") = "v")')
        target, key, rel, want = m.groups()
        cmp: dict[str, Any] = {"key": key.encode(), "target": _TARGETS[target],
                               "result": _RESULTS[rel]}  # fmt: skip
        if target == "value":
            cmp["value"] = want.encode()
        else:
            try:
                cmp[_INT_FIELD[target]] = int(want, 16) if target == "lease" else int(want)
            except ValueError:
                raise UsageError(f"{target} compares with a number: {line!r}") from None
        compare.append(cmp)

    def op(line: str) -> dict[str, Any]:
        w = line.split(None, 2)
        if w[0] == "put" and len(w) == 3:
            return {"op": "put", "key": w[1].encode(), "value": w[2].encode()}
        if w[0] == "get" and len(w) == 2:
            return {"op": "range", "key": w[1].encode()}
        if w[0] == "del" and len(w) == 2:
            return {"op": "delete_range", "key": w[1].encode()}
        raise UsageError(f"not an op: {line!r} (put KEY VALUE, get KEY, del KEY)")

    return {"compare": compare, "success": [op(x) for x in parts[1]],
            "failure": [op(x) for x in parts[2]]}  # fmt: skip


def print_txn(out: dict[str, Any]) -> None:
    """As etcdctl prints a txn's answer."""
    print("SUCCESS" if out["succeeded"] else "FAILURE")
    for r in out["responses"]:
        print()
        if r["op"] == "put":
            print("OK")
        elif r["op"] == "delete_range":
            print(r["deleted"])
        elif r["op"] == "range":
            for kv in r["kvs"]:
                print(_text(kv["key"]))
                print(_text(kv["value"]))


async def _mvcc(ns: argparse.Namespace) -> int:
    c = load_cluster(ns)
    async with _client(c, ns.timeout, ns) as cl:
        kv = MVCCClient(cl)
        if ns.cmd == "txn":
            t = parse_txn(sys.stdin.read(MAX_STDIN))
            print_txn(await kv.txn(t["compare"], t["success"], t["failure"]))
            return EXIT_OK
        if ns.cmd == "watch":
            async for ev in kv.watch(ns.key, prefix=ns.prefix, start=ns.rev, prev_kv=ns.prev_kv):
                if ns.write_out == "json":
                    doc = {"type": "PUT" if ev["type"] == 0 else "DELETE", "kv": _kv_json(ev["kv"])}
                    if "prev_kv" in ev:
                        doc["prev_kv"] = _kv_json(ev["prev_kv"])
                    print(json.dumps(doc), flush=True)
                    continue
                print("PUT" if ev["type"] == 0 else "DELETE")
                if "prev_kv" in ev:
                    print(_text(ev["prev_kv"]["key"]))
                    print(_text(ev["prev_kv"]["value"]))
                print(_text(ev["kv"]["key"]))
                print(_text(ev["kv"]["value"]), flush=True)
            return EXIT_OK
        if ns.lease_cmd == "grant":
            lid = await kv.lease_grant(ns.ttl)
            print(f"lease {lid:x} granted with TTL({ns.ttl}s)")
        elif ns.lease_cmd == "revoke":
            await kv.lease_revoke(_lease_id(ns.id))
            print(f"lease {ns.id} revoked")
        elif ns.lease_cmd == "timetolive":
            out = await kv.lease_ttl(_lease_id(ns.id))
            keys = ", ".join(_text(k) for k in out["keys"])
            print(f"lease {ns.id} granted with TTL({out['ttl']}s), remaining({out['remaining']}s)"
                  + (f", attached keys([{keys}])" if keys else ""))  # fmt: skip
        else:
            lid = _lease_id(ns.id)
            while True:
                ttl = await kv.lease_keepalive(lid)
                print(f"lease {ns.id} keepalived with TTL({ttl})", flush=True)
                if ns.once:
                    break
                await asyncio.sleep(max(0.5, ttl / 3))
    return EXIT_OK


def _http_get(url: str, timeout: float = 1.5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def cmd_status(ns: argparse.Namespace) -> int:
    c = load_cluster(ns)
    peers = c.get("http_peers") or []
    if not peers:
        raise UsageError("the cluster file lists no http_peers; status needs the HTTP API")
    rows = []
    for i, p in enumerate(peers):
        try:
            rows.append(_http_get(f"http://{p}/v1/status"))
        except (OSError, ValueError, urllib.error.URLError) as e:
            rows.append({"node_id": i, "error": f"unreachable ({type(e).__name__})"})
    top = max((r.get("decided", -1) for r in rows if "decided" in r), default=-1)
    hdr = ("NODE", "ADDRESS", "ROLES", "STATE", "LEADER", "BALLOT", "DECIDED", "APPLIED", "LAG")
    lines = [hdr]
    for r in rows:
        if "error" in r:
            lines.append(
                (str(r["node_id"]), peers[r["node_id"]], "-", r["error"], "", "", "", "", "")
            )
            continue
        state = "recovering" if r["recovering"] else ("LEADER" if r["is_leader"] else "follower")
        if not r["ready"] and not r["recovering"]:
            state += " (not ready)"
        lines.append((
            str(r["node_id"]), r["address"], ",".join(r["roles"]), state,
            "-" if r["leader"] is None else str(r["leader"]), str(r["ballot"] or "-"),
            str(r["decided"]), str(r["applied"]), str(max(0, top - r["applied"])),
        ))  # fmt: skip
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(hdr))]
    for ln in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(ln, widths, strict=True)).rstrip())
    return EXIT_OK if all("error" not in r for r in rows) else EXIT_UNAVAILABLE


# ------------------------------------------------------------------ bench


async def bench_throughput(
    cl: AsyncClient, outstanding: int, seconds: float, value_size: int = 64
) -> dict[str, Any]:
    """Writes of ``value_size`` bytes with ``outstanding`` requests in flight."""
    value = "x" * value_size
    done = 0
    errors = 0
    stop = False
    lat: list[float] = []

    async def worker(w: int) -> None:
        nonlocal done, errors
        i = 0
        while not stop:
            t0 = time.perf_counter()
            try:
                await cl.put(f"b{w}-{i % 1000}", value)
                done += 1
                if len(lat) < 200_000:
                    lat.append(time.perf_counter() - t0)
            except ClientError:
                errors += 1
            i += 1

    tasks = [asyncio.create_task(worker(w)) for w in range(outstanding)]
    await asyncio.sleep(min(1.0, seconds / 4))  # warm-up
    start_done, t0 = done, time.perf_counter()
    lat.clear()
    await asyncio.sleep(seconds)
    n, dt = done - start_done, time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    lat.sort()
    return {
        "outstanding": outstanding,
        "ops_per_s": n / dt,
        "errors": errors,
        "p50_us": lat[len(lat) // 2] * 1e6 if lat else None,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6 if lat else None,
    }


async def _bench(ns: argparse.Namespace) -> int:
    from ..loadgen import LoadGen

    c = load_cluster(ns)
    levels = [int(x) for x in ns.outstanding.split(",")]
    async with _client(c, ns.timeout, ns) as cl:
        await cl.put("bench-warmup", "x")  # fails fast if the cluster is down
    addrs = [parse_addr(a) for a in c["acceptors"]]
    g = LoadGen(addrs, load_key(c["key_file"]), value_size=ns.value_size)
    await g.start()
    print(f"{ns.value_size} B writes, {ns.seconds:g} s per level (pipelined load generator)")
    print(f"{'outstanding':>12} {'ops/s':>10} {'p50 us':>10} {'p99 us':>10}")
    try:
        for k in levels:
            r = await g.run(k, ns.seconds)
            print(f"{k:>12} {r['ops_per_s']:>10.0f} {r['p50_us'] or 0:>10.0f} "
                  f"{r['p99_us'] or 0:>10.0f}")  # fmt: skip
    finally:
        g.close()
    return EXIT_OK


# ------------------------------------------------------------------ local up


def local_layout(data_dir: Path, replicas: int, learners: int, base_port: int,
                 http_base: int, grpc_base: int = 0) -> dict[str, Any]:  # fmt: skip
    n = replicas + learners
    grpc = {"grpc_peers": [f"127.0.0.1:{grpc_base + i}" for i in range(n)]} if grpc_base else {}
    return {
        **grpc,
        "cluster_id": f"local-{secrets.token_hex(4)}",
        "acceptors": [f"127.0.0.1:{base_port + i}" for i in range(replicas)],
        "learners": [f"127.0.0.1:{base_port + replicas + i}" for i in range(learners)],
        "http_peers": [f"127.0.0.1:{http_base + i}" for i in range(n)],
        "key_file": "cluster.key",
    }


def node_command(layout: dict[str, Any], data_dir: Path, nid: int, initial: str) -> list[str]:
    http = layout["http_peers"][nid]
    return [
        sys.executable, "-m", "paxosrsm.net.main",
        "--node-id", str(nid),
        "--cluster-id", layout["cluster_id"],
        "--acceptors", ",".join(layout["acceptors"]),
        "--learners", ",".join(layout["learners"]),
        "--http-peers", ",".join(layout["http_peers"]),
        "--listen", "127.0.0.1",
        "--http-listen", "127.0.0.1",
        "--http-port", http.rsplit(":", 1)[1],
        *(["--grpc-port", layout["grpc_peers"][nid].rsplit(":", 1)[1],
            "--grpc-peers", ",".join(layout["grpc_peers"])] if layout.get("grpc_peers") else []),
        "--data-dir", str(data_dir / f"node-{nid}"),
        "--key-file", str(node_key_path(data_dir, nid)),
        "--initial-cluster-state", initial,
    ]  # fmt: skip


def cmd_local_up(ns: argparse.Namespace) -> int:
    if ns.replicas not in (1, 3, 5, 7):
        raise UsageError("--replicas must be 1, 3, 5 or 7")
    if not 0 <= ns.learners <= 8:
        raise UsageError("--learners must be in 0..8")
    data = Path(ns.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    cfile = data / "cluster.yaml"
    existing = cfile.exists()
    if existing:
        try:
            layout = yaml.safe_load(cfile.read_text())
        except yaml.YAMLError as e:
            raise UsageError(f"{cfile} is not YAML: {e}") from e
        if (
            not isinstance(layout, dict)
            or not all(
                isinstance(layout.get(k), list) for k in ("acceptors", "learners", "http_peers")
            )
            or not isinstance(layout.get("cluster_id"), str)
        ):
            raise UsageError(
                f"{cfile} is damaged (it must hold cluster_id, acceptors, learners and "
                "http_peers); move the directory aside to start a new cluster"
            )
        if len(layout["acceptors"]) != ns.replicas:
            raise UsageError(
                f"{data} holds a cluster of {len(layout['acceptors'])} acceptors; their number is "
                "fixed for the life of a cluster (use another --data-dir for a new one)"
            )
        if len(layout["learners"]) != ns.learners:
            raise UsageError(f"{data} was created with --learners {len(layout['learners'])}")
    else:
        layout = local_layout(data, ns.replicas, ns.learners, ns.base_port, ns.http_base,
                              ns.grpc_base)  # fmt: skip
        keyf = data / "cluster.key"
        keyf.write_text(secrets.token_urlsafe(32) + "\n")
        keyf.chmod(0o600)
        cfile.write_text(yaml.safe_dump(layout, sort_keys=False))
    n = ns.replicas + ns.learners
    if not (data / "keys").exists():
        # Each node its own key file (issue 12: no node can speak as another).
        write_node_keys(data, range(n))
    procs: list[subprocess.Popen[bytes]] = []
    print(f"{'restarting' if existing else 'starting'} a local cluster in {data}")
    for nid in range(n):
        node_dir = data / f"node-{nid}"
        # A node whose data is gone rejoins an existing cluster safely (it
        # recovers before it votes); only the very first start bootstraps.
        initial = "existing" if existing and not (node_dir / "IDENTITY").exists() else "new"
        node_dir.mkdir(exist_ok=True)
        logf = open(node_dir / "node.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(subprocess.Popen(node_command(layout, data, nid, initial),
                                      stdout=logf, stderr=subprocess.STDOUT))  # fmt: skip
        role = "acceptor+proposer+learner" if nid < ns.replicas else "learner"
        print(f"  node {nid}: paxos {(layout['acceptors'] + layout['learners'])[nid]} "
              f"http://{layout['http_peers'][nid]}/  ({role}, pid {procs[-1].pid}, "
              f"log {node_dir / 'node.log'})")  # fmt: skip
    print(f"cluster file: {cfile}   (export PAXOS_CLUSTER={cfile})")
    print(f"try:  paxosctl -c {cfile} put hello world && paxosctl -c {cfile} get hello")
    print(f"      paxosctl -c {cfile} status     (or open http://{layout['http_peers'][0]}/)")
    if layout.get("grpc_peers"):
        print(f"      etcdctl --endpoints {','.join(layout['grpc_peers'])} get --prefix ''"
              "     (etcd's v3 API)")  # fmt: skip
    print("Ctrl-C stops the cluster; running this again restarts it on the same data.")
    stop = False

    def on_sig(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_sig)
    signal.signal(signal.SIGTERM, on_sig)
    reported: set[int] = set()
    try:
        while not stop:
            time.sleep(0.2)
            for nid, p in enumerate(procs):
                rc = p.poll()
                if rc is None or nid in reported:
                    continue
                reported.add(nid)
                if ns.exit_on_failure:
                    print(f"node {nid} exited with {rc}; stopping", file=sys.stderr)
                    stop = True
                else:
                    print(f"node {nid} (pid {p.pid}) exited with status {rc}; the others "
                          "carry on while a majority runs", file=sys.stderr)  # fmt: skip
    finally:
        print("stopping...")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        print("stopped")
    return EXIT_OK


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paxosctl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "-c", "--cluster", help="cluster file (default $PAXOS_CLUSTER or ./paxos-data/cluster.yaml)"
    )
    p.add_argument("--nodes", help="acceptor addresses host:port,... (instead of -c)")
    p.add_argument("--key-file", help="cluster key file (with --nodes)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per operation")
    p.add_argument("--tls-ca", help="CA that signed the nodes' certificates (TLS on the nodes)")
    p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", help="client certificate's key")
    sub = p.add_subparsers(dest="cmd", required=True)
    p.add_argument("--version", action="version", version=f"paxosctl {_version()}")
    x = sub.add_parser("put", help="set KEY to VALUE ('-': read it from stdin)")
    x.add_argument("key")
    x.add_argument("value")
    x.add_argument("--lease", default="0", help="attach to this lease (hex id, as printed)")
    x.add_argument("-w", "--write-out", choices=("simple", "json"), default="simple")
    x = sub.add_parser("get", help="read KEY (linearizable unless --stale)")
    x.add_argument("key")
    x.add_argument("--stale", action="store_true", help="read a replica's copy (may be stale)")
    x.add_argument("--prefix", action="store_true", help="every key that starts with KEY")
    x.add_argument("--rev", type=int, default=0, help="as of this revision")
    x.add_argument("--limit", type=int, default=0, help="at most this many keys")
    x.add_argument("-w", "--write-out", choices=("simple", "json", "table"), default="simple")
    sub.add_parser(
        "txn",
        help="a transaction read from stdin, in etcdctl's form: compares, a blank line, "
        "the ops if they hold, a blank line, the ops otherwise",
    )
    x = sub.add_parser("watch", help="print the changes to KEY (or a prefix) as they happen")
    x.add_argument("key")
    x.add_argument("--prefix", action="store_true")
    x.add_argument("--rev", type=int, default=0, help="from this revision (0: from now)")
    x.add_argument("--prev-kv", action="store_true", help="with each key's previous value")
    x.add_argument("-w", "--write-out", choices=("simple", "json"), default="simple")
    x = sub.add_parser("lease", help="grant, revoke, keep alive or look up a lease")
    lsub = x.add_subparsers(dest="lease_cmd", required=True)
    y = lsub.add_parser("grant", help="a lease of TTL seconds; prints its id")
    y.add_argument("ttl", type=int)
    for name in ("revoke", "keepalive", "timetolive"):
        y = lsub.add_parser(name)
        y.add_argument("id", help="the lease id (hex, as grant prints it)")
        if name == "keepalive":
            y.add_argument("--once", action="store_true")
    x = sub.add_parser("delete", help="delete KEY")
    x.add_argument("key")
    x = sub.add_parser("cas", help="set KEY to NEW if it holds EXPECTED")
    x.add_argument("key")
    x.add_argument("expected")
    x.add_argument("new")
    x.add_argument("--expected-absent", action="store_true", help="swap only if KEY is absent")
    sub.add_parser("status", help="table of nodes, roles, leader, ballot, slots and lag")
    x = sub.add_parser("bench", help="write throughput and latency against a running cluster")
    x.add_argument("--outstanding", default="1,10,100,1000")
    x.add_argument("--seconds", type=float, default=5.0)
    x.add_argument("--value-size", type=int, default=64)
    keys = sub.add_parser("keys", help="make a key for a rotation, or a client credential")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    x = ksub.add_parser("new", help="print a new master key line '<id> <key>'")
    x.add_argument("--id", type=int, default=1, choices=range(256), metavar="0-255")
    x = ksub.add_parser("client", help="print the client credentials of a key file")
    x.add_argument("file")
    x = ksub.add_parser(
        "nodes", help="remake each node's own key file from cluster.key (local clusters)"
    )
    x.add_argument("--data-dir", default=DEFAULT_DIR)
    loc = sub.add_parser("local", help="run a cluster as local processes")
    lsub = loc.add_subparsers(dest="local_cmd", required=True)
    up = lsub.add_parser("up", help="start (or restart) a local cluster; Ctrl-C stops it")
    up.add_argument("--replicas", type=int, default=3)
    up.add_argument("--learners", type=int, default=0)
    up.add_argument("--data-dir", default=DEFAULT_DIR)
    up.add_argument("--base-port", type=int, default=7100)
    up.add_argument("--http-base", type=int, default=8100)
    up.add_argument(
        "--grpc-base",
        type=int,
        default=2479,
        help="etcd v3 gRPC API ports from here (etcdctl --endpoints); 0: none",
    )
    up.add_argument("--exit-on-failure", action="store_true", help=argparse.SUPPRESS)
    snapshot.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    try:
        ns = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) and EXIT_USAGE
    try:
        if ns.cmd in ("put", "get", "delete", "cas"):
            return asyncio.run(_kv(ns))
        if ns.cmd in ("watch", "lease", "txn"):
            return asyncio.run(_mvcc(ns))
        if ns.cmd == "status":
            return cmd_status(ns)
        if ns.cmd == "bench":
            return asyncio.run(_bench(ns))
        if ns.cmd == "local":
            return cmd_local_up(ns)
        if ns.cmd == "keys":
            return cmd_keys(ns)
        if ns.cmd == "snapshot":
            need = ns.snap_cmd == "save" and not ns.endpoints
            return snapshot.run(ns, load_cluster(ns) if need else None)
    except (UsageError, OptionsError) as e:
        print(f"paxosctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownOutcome as e:
        print(f"paxosctl: outcome unknown: {e}", file=sys.stderr)
        return EXIT_UNKNOWN
    except Unavailable as e:
        print(f"paxosctl: cluster unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KVError as e:
        print(f"paxosctl: refused: {e}", file=sys.stderr)
        return EXIT_FAIL
    except (OSError, ValueError) as e:
        print(f"paxosctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
