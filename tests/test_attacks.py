"""Issue 12's probes, as tests on real processes: each states the figure that
shows it holds, and that no acknowledged write is lost.

- large values and one restart: 150 writes of 512 KiB while a node is down,
  then restart it: it catches up, and the healthy nodes' peak memory stays
  bounded (it grew from 0.2 GB to 12.5 GB, and the restarted node never
  caught up, when catch-up frames of 78-315 MB exceeded the frame limit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paxosrsm.net.options import NodeOptions, OptionsError, add_arguments, from_sources
from paxosrsm.net.proccluster import ProcCluster


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _put(c: ProcCluster, nid: int, key: str, value: bytes) -> int:
    req = urllib.request.Request(c.http(nid) + f"/v1/kv/{key}", data=value, method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(r.status)


def test_large_values_while_a_node_is_down_then_its_restart(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path / "c", 3)
    try:
        c.start_all()
        c.wait_ready()
        c.kill(2)
        value = b"v" * (512 * 1024 - 64)
        with ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(lambda i: _put(c, i % 2, f"k{i}", value), range(150)))
        assert codes == [200] * 150
        c.start(2)
        deadline = time.monotonic() + 90
        lag = None
        while time.monotonic() < deadline:
            sts = [c.status(n) for n in range(3)]
            if all(sts):
                lag = max(s["applied"] for s in sts if s) - sts[2]["applied"]  # type: ignore[index]
                if lag == 0:
                    break
            time.sleep(0.5)
        assert lag == 0, f"node 2 did not catch up (lag {lag})\n{c.logs()}"
        # No acknowledged write lost: every key reads back whole, from the restarted node.
        for i in (0, 77, 149):
            with urllib.request.urlopen(c.http(2) + f"/v1/kv/k{i}?stale=true", timeout=15) as r:
                assert len(r.read()) > len(value)
        peaks = [_peak_rss_mb(c.procs[n].pid) for n in range(3)]
        print(f"peak RSS (MB) of nodes 0-2 after 75 MB of writes and a catch-up: {peaks}")
        assert max(peaks) < 1024, peaks
    finally:
        c.close()


def _call(url: str, method: str = "GET", data: bytes | None = None, token: str = "") -> int:
    import urllib.error

    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_http_tokens_roles_and_prefixes(tmp_path: Path) -> None:
    """Issue 12: with --http-auth-file, no token is 401, a token outside its
    role or prefix is 403 (default deny), and every write is in the access
    log under its token's name. Status and health stay open."""
    rw, ro, adm = "rw-" + "a" * 20, "ro-" + "b" * 20, "adm-" + "c" * 20
    auth = tmp_path / "tokens"
    auth.write_text(
        "# name role prefix token\n"
        f"app readwrite app/ {rw}\nviewer read * {ro}\nops admin * {adm}\n"
    )
    c = ProcCluster(tmp_path / "c", 3, 0, ["--http-auth-file", str(auth)])
    try:
        c.start_all()
        c.wait_ready()
        u = c.http(0)
        assert _call(u + "/v1/status") == 200
        assert _call(u + "/v1/kv/app%2Fx", "PUT", b"1") == 401
        assert _call(u + "/v1/kv/app%2Fx", "PUT", b"1", "not-a-token-at-all") == 401
        assert _call(u + "/v1/kv/app%2Fx", "PUT", b"1", rw) == 200
        assert _call(u + "/v1/kv/other", "PUT", b"1", rw) == 403
        assert _call(u + "/v1/kv/app%2Fx", "GET", token=ro) == 200
        assert _call(u + "/v1/kv/app%2Fx", "PUT", b"2", ro) == 403
        assert _call(u + "/v1/kv/app%2Fx", "DELETE", token=ro) == 403
        assert _call(u + "/v1/kv/other", "PUT", b"3", adm) == 200
        assert _call(u + "/v1/kv/app%2Fx", "GET") == 401
        # Bytes that are not UTF-8 in the token (decoded with surrogates)
        # are a wrong token: 401, not a 500.
        assert _call(u + "/v1/kv/app%2Fx", "PUT", b"1", "\xff\xfe" + "x" * 20) == 401
        log = (c.root / "node-0" / "node.log").read_text()
        assert "app 127.0.0.1 PUT key='app/x' -> 200" in log, log[-2000:]
        assert "ops 127.0.0.1 PUT key='other' -> 200" in log
        # The client port's writes are in the access log too (values never).
        import asyncio

        from paxosrsm.client import AsyncClient

        async def by_client_port() -> None:
            async with AsyncClient(c.addrs, c.key, timeout=5) as cl:
                await cl.put("by-udp", "secret-value-1")
                await cl.cas("by-udp", "secret-value-1", "secret-value-2")
                await cl.get("by-udp")

        asyncio.run(by_client_port())
        deadline = time.monotonic() + 5
        pat = re.compile(
            r"node(\d) INFO node \1: udp 127\.0\.0\.1:\d+ client=\d+ seq=\d+ put key='by-udp'"
        )

        def logs() -> str:
            return "".join((c.root / f"node-{i}" / "node.log").read_text() for i in range(3))

        # Each line is written at the receiving node's next tick.
        while not (pat.search(log := logs()) and "cas key='by-udp'" in log):
            assert time.monotonic() < deadline, log[-2000:]
            time.sleep(0.2)
        assert "secret-value" not in log
        assert "get key='by-udp'" not in log  # reads are not logged
        st = c.status(0)
        assert st is not None and st["counters"].get("dropped_http_forbidden", 0) >= 3
        # Tokens change without a restart (as a Secret volume is updated):
        # the viewer is revoked, a new writer added; a broken file keeps them.
        new = "new-" + "d" * 20
        auth.write_text(f"app readwrite app/ {rw}\nops admin * {adm}\nci readwrite ci/ {new}\n")
        deadline = time.monotonic() + 10
        while _call(u + "/v1/kv/ci%2Fa", "PUT", b"1", new) != 200:
            assert time.monotonic() < deadline, "the new token never took effect"
            time.sleep(0.3)
        assert _call(u + "/v1/kv/app%2Fx", "GET", token=ro) == 401
        auth.write_text("ops admin * short\n")
        time.sleep(2.5)
        assert _call(u + "/v1/kv/ci%2Fa", "PUT", b"2", new) == 200
        st = c.status(0)
        assert st is not None and st["counters"].get("dropped_http_auth_file_bad", 0) >= 1
    finally:
        c.close()
    bad = tmp_path / "bad"
    bad.write_text("app writer * short\n")
    c2 = ProcCluster(tmp_path / "c2", 1, 0, ["--http-auth-file", str(bad)])
    try:
        c2.start_all()
        assert c2.procs[0].wait(timeout=20) == 2  # a configuration error, said plainly
        assert "role must be one of" in (c2.root / "node-0" / "node.log").read_text()
    finally:
        c2.close()


def test_anonymous_http_off_loopback_is_refused_unless_chosen() -> None:
    """No anonymous writes by default: a node that would serve the API without
    tokens on a non-loopback address does not start, unless the operator of
    the machine says --http-anonymous true."""
    base = ["--node-id", "0", "--acceptors", "127.0.0.1:7000", "--key-file", "k"]

    def parse(*argv: str) -> NodeOptions:
        p = argparse.ArgumentParser()
        add_arguments(p)
        return from_sources(p.parse_args([*base, *argv]), {})

    with pytest.raises(OptionsError, match="--http-auth-file"):
        parse("--http-listen", "0.0.0.0")
    parse("--http-listen", "127.0.0.1")
    parse("--http-listen", "0.0.0.0", "--http-anonymous", "true")
    parse("--http-listen", "0.0.0.0", "--http-auth-file", "t")
    parse("--http-listen", "0.0.0.0", "--http-port", "0")


@contextlib.contextmanager
def _small_volumes(root: Path, n: int, size_mib: int) -> Iterator[None]:
    """Each node's data directory on its own tmpfs of ``size_mib`` (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small volume needs root (CI runs as root)")
    mounted: list[Path] = []
    try:
        for i in range(n):
            d = root / f"node-{i}"
            d.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(d)],
                           check=True)  # fmt: skip
            mounted.append(d)
        yield
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", str(d)], check=False)


def _statuses(c: ProcCluster) -> list[dict[str, Any]]:
    out = []
    for n in range(c.n):
        st = c.status(n, timeout=3.0)
        assert st is not None, f"node {n} does not answer\n{c.logs()}"
        out.append(st)
    return out


def test_a_full_volume_turns_the_cluster_read_delete_only(tmp_path: Path) -> None:
    """Issue 12's probe: 50 MiB volumes, then 97 PUTs of 512 KiB (all three
    nodes stopped within a second with `disk I/O error`). Now the store is
    compacted from half its quota on, and at the quota (half the volume here)
    a NOSPACE alarm goes through the log: PUTs get 507, reads and deletes go
    on, no node stops; after deletes it takes writes again. No acknowledged
    write is lost."""
    root = tmp_path / "c"
    with _small_volumes(root, 3, 50):
        c = ProcCluster(root, 3)
        try:
            c.start_all()
            c.wait_ready()
            value = b"v" * (512 * 1024 - 64)
            acked, refused = [], []
            for i in range(97):
                code = _call(c.http(i % 3) + f"/v1/kv/k{i}", "PUT", value)
                assert code in (200, 507), f"PUT {i}: {code}\n{c.logs()}"
                (acked if code == 200 else refused).append(i)
            sts = _statuses(c)
            print(f"97 PUTs of 512 KiB on 50 MiB volumes: {len(acked)} acknowledged, "
                  f"{len(refused)} refused with 507; storage "
                  f"{[s['storage'] for s in sts]}")  # fmt: skip
            assert refused, "the quota never refused a write"
            assert all(c.procs[n].poll() is None for n in range(3)), c.logs()
            assert all(s["storage"]["alarms"] for s in sts)
            # Reads and deletes go on; no acknowledged write is lost.
            for i in acked:
                assert _call(c.http(1) + f"/v1/kv/k{i}") == 200, i
            keep = acked[:4]
            for i in acked[4:]:
                assert _call(c.http(2) + f"/v1/kv/k{i}", "DELETE") == 200, i
            deadline = time.monotonic() + 60
            while _call(c.http(0) + "/v1/kv/after", "PUT", b"x") != 200:
                assert time.monotonic() < deadline, (
                    f"no writes after the deletes; storage "
                    f"{[s['storage'] for s in _statuses(c)]}\n{c.logs()}"
                )
                time.sleep(0.5)
            sts = _statuses(c)
            print(f"after deleting {len(acked) - 4} keys: writes again in "
                  f"{60 - (deadline - time.monotonic()):.1f} s; storage "
                  f"{[s['storage'] for s in sts]}")  # fmt: skip
            for i in keep:
                assert _call(c.http(0) + f"/v1/kv/k{i}") == 200, i
            assert all(c.procs[n].poll() is None for n in range(3)), c.logs()
        finally:
            c.close()


def test_enospc_is_retried_not_fatal(tmp_path: Path) -> None:
    """A disk that fills anyway (here a file of someone else's, with the free
    space reserve off) must not stop or crash-loop the node: the write that
    failed with ENOSPC is retried every second, the node takes no peer
    traffic meanwhile (the other two go on), and once space is back it
    resumes and catches up. No acknowledged write is lost."""
    root = tmp_path / "c"
    with _small_volumes(root, 3, 50):
        c = ProcCluster(root, 3, 0, ["--quota-reserve-bytes", "0"])
        try:
            c.start_all()
            c.wait_ready()
            filler = root / "node-2" / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=50"],
                           check=False, capture_output=True)  # fmt: skip
            value = b"w" * (64 * 1024)
            for i in range(60):
                assert _call(c.http(i % 2) + f"/v1/kv/e{i}", "PUT", value) == 200, c.logs()
            st2 = c.status(2, timeout=3.0)
            assert st2 is not None and c.procs[2].poll() is None, c.logs()
            assert st2["storage"]["disk_full"], st2["storage"]
            retries = st2["counters"].get("disk_full_retries", 0)
            print(f"node 2 with a full disk: alive, {retries} retries, 60 writes acknowledged "
                  "by the other two")  # fmt: skip
            filler.unlink()
            deadline = time.monotonic() + 60
            while True:
                sts = _statuses(c)
                if not sts[2]["storage"]["disk_full"] and sts[2]["applied"] >= sts[0]["applied"]:
                    break
                assert time.monotonic() < deadline, f"node 2 did not resume\n{c.logs()}"
                time.sleep(0.5)
            for i in (0, 30, 59):
                assert _call(c.http(2) + f"/v1/kv/e{i}?stale=true") == 200, i
            assert all(c.procs[n].poll() is None for n in range(3)), c.logs()
        finally:
            c.close()


def _wait_counter(c: ProcCluster, nodes: list[int], name: str, at_least: int, secs: float) -> None:
    deadline = time.monotonic() + secs
    while True:
        sts = [c.status(n, timeout=2.0) for n in nodes]
        if all(s is not None and s["counters"].get(name, 0) >= at_least for s in sts):
            return
        assert time.monotonic() < deadline, f"{name} < {at_least} on {nodes}\n{c.logs()}"
        time.sleep(0.3)


def test_replays_forgeries_and_a_key_rotation(tmp_path: Path) -> None:
    """Issue 12's replay and identity probes, on real processes:
    - 5 datagrams captured before a node's restart: 5 refused after it (all
      5 were accepted), and none answered;
    - a client credential (``paxosctl keys client``) reads and writes, but a
      datagram it seals as a node is refused;
    - a key rotation without downtime: both keys, then the new one first,
      then the new one alone; writes go on throughout, and a client that
      still holds only the old key is refused at the end."""
    import asyncio
    import socket as so

    from paxosrsm.client import AsyncClient, ClientError
    from paxosrsm.messages import ClientRequest
    from paxosrsm.net import auth, codec
    from paxosrsm.net.identity import write_node_keys
    from paxosrsm.statemachine import encode_op
    from paxosrsm.types import Kind

    c = ProcCluster(tmp_path / "c", 3)
    try:
        c.start_all()
        c.wait_ready()
        sock = so.socket(so.AF_INET, so.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        me = int.from_bytes(os.urandom(7), "big")
        sealer = auth.Sealer(c.key, auth.ORIGIN_CLIENT, me, time.time_ns())
        captured = [
            sealer.seal(
                codec.encode_many(
                    [ClientRequest(me, i + 1, Kind.STALE_READ, encode_op("get", "k"))]
                ),
                auth.ORIGIN_NODE,
                1,
            )
            for i in range(5)
        ]

        opener = auth.Opener(c.key, auth.ORIGIN_CLIENT, me)

        def answers(datagrams: list[bytes]) -> int:
            """Replies received (several may share a datagram)."""
            for d in datagrams:
                sock.sendto(d, c.addrs[1])
            n = 0
            with contextlib.suppress(TimeoutError):
                while True:
                    n += len(codec.decode_many(opener.open(sock.recv(65536))[2]))
            return n

        assert answers(captured) == 5
        c.kill(1)
        c.start(1, "existing")
        c.wait_ready([1])
        before = c.status(1)
        assert before is not None
        assert answers(captured) == 0
        st = c.status(1)
        assert st is not None
        stale = st["counters"].get("dropped_stale", 0) - before["counters"].get("dropped_stale", 0)
        print(f"captured before the restart: 5 sent after it, {stale} refused as stale, 0 answered")
        assert stale == 5

        creds = tmp_path / "client.cred"
        creds.write_text(c.key.client_lines())
        cred = auth.load_key(creds)

        async def kv(ring: auth.KeyLike, key: str, value: str, timeout: float = 5.0) -> str | None:
            async with AsyncClient(c.addrs, ring, timeout=timeout) as cl:
                await cl.put(key, value)
                return await cl.get(key)

        assert asyncio.run(kv(cred, "by-client-credential", "1")) == "1"
        client_only = auth.Keyring({0: cred.key(0, auth.CLIENT) or b""}, {}, 0)
        forged = auth.Sealer(client_only, auth.ORIGIN_NODE, 0, time.time_ns())
        st0 = c.status(1)
        assert st0 is not None
        sock.sendto(forged.seal(b"\x90", auth.ORIGIN_NODE, 1), c.addrs[1])
        _wait_counter(c, [1], "dropped_unauthenticated",
                      st0["counters"].get("dropped_unauthenticated", 0) + 1, 10)  # fmt: skip

        # Nor open a node's TCP connection: a peer hello under the client key.
        import msgpack

        async def node_hello_with_client_key() -> bytes:
            r, w = await asyncio.open_connection(*c.addrs[1])
            body = msgpack.packb(["hello", 1, auth.ORIGIN_NODE, 0, "peer", None, os.urandom(16)])
            w.write(auth.frame_raw(body, auth.hello_mac(cred.key(0, auth.CLIENT) or b"", body)))
            got = await asyncio.wait_for(r.read(), 10)
            w.close()
            return got

        st0 = c.status(1)
        assert st0 is not None
        assert asyncio.run(node_hello_with_client_key()) == b""  # closed, no welcome
        _wait_counter(c, [1], "dropped_bad_handshake",
                      st0["counters"].get("dropped_bad_handshake", 0) + 1, 10)  # fmt: skip

        # Each node its own identity: node 1's key file cannot speak as node 2.
        for i in range(3):
            st = c.status(i)
            assert st is not None and st["identity"] is True
            assert st["pair_peers"] == [j for j in range(3) if j != i]
        ring1 = auth.load_key(c.root / "keys" / "node-1.key")

        def to_node0(ring: auth.Keyring, sender: int) -> int:
            """dropped_unauthenticated at node 0 after one datagram from ``sender``."""
            before = c.status(0)
            assert before is not None
            n0 = before["counters"].get("dropped_unauthenticated", 0)
            s = auth.Sealer(ring, auth.ORIGIN_NODE, sender, time.time_ns())
            sock.sendto(s.seal(b"\x90", auth.ORIGIN_NODE, 0), c.addrs[0])
            time.sleep(0.5)
            after = c.status(0)
            assert after is not None
            return int(after["counters"].get("dropped_unauthenticated", 0)) - int(n0)

        assert to_node0(ring1, 1) == 0  # as itself: authentic
        assert to_node0(ring1, 2) == 1  # as node 2: refused
        assert to_node0(c.key, 2) == 1  # the master key alone: refused

        async def hello_to_node0(sender: int) -> bytes:
            r, w = await asyncio.open_connection(*c.addrs[0])
            body = msgpack.packb(["hello", 1, auth.ORIGIN_NODE, sender, "peer", None,
                                  os.urandom(16)])  # fmt: skip
            w.write(auth.frame_raw(body, auth.hello_mac(ring1.key(0, auth.PEER, 0) or b"", body)))
            try:
                return await asyncio.wait_for(r.read(8), 3)
            finally:
                w.close()

        assert asyncio.run(hello_to_node0(1)) != b""  # welcomed
        assert asyncio.run(hello_to_node0(2)) == b""  # node 1 as node 2: closed
        print("identity: node 1's key file as node 2 -> datagram and hello refused; as itself -> "
              "taken; the master key alone -> refused")  # fmt: skip

        # The rotation: cluster.key changes, and each node's own file with it.
        keyf = c.root / "cluster.key"
        old = keyf.read_text().strip()
        new = os.urandom(24).hex()
        steps = [f"0 {old}\n1 {new}\n", f"1 {new}\n0 {old}\n", f"1 {new}\n"]
        for n_step, text in enumerate(steps, start=1):
            keyf.write_text(text)
            write_node_keys(c.root, range(3))
            _wait_counter(c, [0, 1, 2], "key_reloads", n_step, 15)
            ring = auth.Keyring.parse(text)
            assert asyncio.run(kv(ring, f"rot{n_step}", "v")) == "v", c.logs()
        with pytest.raises(ClientError):
            asyncio.run(kv(auth.Keyring.parse(old), "old-key", "x", timeout=2.0))
        assert asyncio.run(kv(auth.Keyring.parse(steps[-1]), "rot1", "w")) == "w"
    finally:
        c.close()


def _port_pairs(n: int, offset: int) -> list[int]:
    """n ports p, each with p and p + offset free for UDP and TCP."""
    import socket as so

    def grab(port: int, held: list[so.socket]) -> int:
        t = so.socket(so.AF_INET, so.SOCK_STREAM)
        held.append(t)
        t.bind(("127.0.0.1", port))
        u = so.socket(so.AF_INET, so.SOCK_DGRAM)
        held.append(u)
        u.bind(("127.0.0.1", t.getsockname()[1]))
        return int(t.getsockname()[1])

    out: list[int] = []
    while len(out) < n:
        held: list[so.socket] = []
        try:
            p = grab(0, held)
            grab(p + offset, held)
            if p not in out:
                out.append(p)
        except OSError:
            pass
        finally:
            for s in held:
                s.close()
    return out


def test_clients_and_peers_on_separate_ports(tmp_path: Path) -> None:
    """Issue 12: peer traffic on its own port, which a Service exposing the
    client port does not reach. With --client-port-offset each port takes
    its own traffic only: client datagrams and connections on the peer port,
    and node datagrams on the client port, are refused and counted."""
    import asyncio
    import socket as so

    import msgpack

    from paxosrsm.client import AsyncClient
    from paxosrsm.net import auth

    c = ProcCluster(tmp_path / "c", 3, 0, ["--client-port-offset", "1"])
    ports = _port_pairs(3, 1)
    c.layout["acceptors"] = [f"127.0.0.1:{p}" for p in ports]
    try:
        c.start_all()
        c.wait_ready()
        clients = [(h, p + 1) for h, p in c.addrs]

        async def kv(addrs: list[tuple[str, int]], timeout: float = 5.0) -> str | None:
            async with AsyncClient(addrs, c.key, timeout=timeout) as cl:
                await cl.put("sep", "1")
                return await cl.get("sep")

        assert asyncio.run(kv(clients)) == "1"
        assert _call(c.http(1) + "/v1/kv/sep") == 200  # the gateway uses the client ports
        before = c.status(0)
        assert before is not None
        with pytest.raises(Exception):  # noqa: B017 - a timeout of the client library
            # Node 0's peer port only: refused, and counted there (given every
            # peer port, the client may never pick node 0 in 1.5 s: a CI run
            # counted none there).
            asyncio.run(kv([c.addrs[0]], timeout=1.5))
        sock = so.socket(so.AF_INET, so.SOCK_DGRAM)
        # An authentic node datagram (node 1's own key file) on node 0's client port.
        node1 = auth.Sealer(auth.load_key(c.root / "keys" / "node-1.key"), auth.ORIGIN_NODE, 1,
                            time.time_ns())  # fmt: skip
        sock.sendto(node1.seal(b"\x90", auth.ORIGIN_NODE, 0), clients[0])

        async def client_hello_on_peer_port() -> bytes:
            r, w = await asyncio.open_connection(*c.addrs[0])
            body = msgpack.packb(
                ["hello", 1, auth.ORIGIN_CLIENT, 5, "client", None, os.urandom(16)]
            )
            key = c.key.key(0, auth.CLIENT) or b""
            w.write(auth.frame_raw(body, auth.hello_mac(key, body)))
            got = await asyncio.wait_for(r.read(), 10)
            w.close()
            return got

        assert asyncio.run(client_hello_on_peer_port()) == b""
        n0 = before["counters"].get("dropped_wrong_port", 0)
        _wait_counter(c, [0], "dropped_wrong_port", n0 + 3, 10)
        st = c.status(0)
        assert st is not None
        print(f"separate ports: {st['counters']['dropped_wrong_port'] - n0} refusals counted")
    finally:
        c.close()
