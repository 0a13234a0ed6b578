"""Issue 12's probes, as tests on real processes: each states the figure that
shows it holds, and that no acknowledged write is lost.

- large values and one restart: 150 writes of 512 KiB while a node is down,
  then restart it: it catches up, and the healthy nodes' peak memory stays
  bounded (it grew from 0.2 GB to 12.5 GB, and the restarted node never
  caught up, when catch-up frames of 78-315 MB exceeded the frame limit).
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
        log = (c.root / "node-0" / "node.log").read_text()
        assert "app 127.0.0.1 PUT key='app/x' -> 200" in log, log[-2000:]
        assert "ops 127.0.0.1 PUT key='other' -> 200" in log
        st = c.status(0)
        assert st is not None and st["counters"].get("dropped_http_forbidden", 0) >= 3
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
