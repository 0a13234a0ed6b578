"""etcd v3 API compatibility (issue 13): Debian's ``etcdctl`` against a
paxosrsm cluster and against a real etcd 3.4 (Debian's ``etcd-server``),
started here; every command's output must be the same on both, after
dropping what names the server (cluster and member ids, raft term).

The tools are installed by ``make test`` (``make etcd-tools``); without
them these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netcluster import ProcCluster, free_ports

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class Etcd:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        client, peer = free_ports(2)
        self.endpoint = f"127.0.0.1:{client}"
        self.log = open(root / "etcd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [ETCD, "--data-dir", str(root / "data"), "--name", "e0",
             "--listen-client-urls", f"http://{self.endpoint}",
             "--advertise-client-urls", f"http://{self.endpoint}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"e0=http://127.0.0.1:{peer}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while run(self.endpoint, "endpoint", "health").returncode != 0:
            assert self.proc.poll() is None, (root / "etcd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def run(endpoints: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        [ETCDCTL, "--endpoints", endpoints, "--dial-timeout", "5s", "--command-timeout", "10s",
         *args],
        capture_output=True, text=True, input=stdin, env=env, timeout=30,
    )  # fmt: skip


_SERVER_IDS = re.compile(r'"(cluster_id|member_id|raft_term)":\d+,?')


def normal(p: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """The output without what names the server; an error's last line only
    (etcdctl logs its retries with timestamps before it)."""
    out = _SERVER_IDS.sub("", p.stdout).replace(",}", "}")
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    return p.returncode, out, err


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("etcd-compat")
    etcd = Etcd(root / "etcd")
    cluster = ProcCluster(root / "paxos", 3).start_all()
    try:
        cluster.wait_ready()
        yield etcd.endpoint, ",".join(cluster.layout["grpc_peers"])
    finally:
        cluster.close()
        etcd.close()


#: Commands run in this order against both servers (revisions match: both
#: stores start at revision 1). ``stdin`` for txn.
SCRIPT: list[tuple[list[str], str | None]] = [
    (["put", "foo", "bar"], None),
    (["put", "foo1", "v1"], None),
    (["put", "foo2", "v2"], None),
    (["put", "fop", "x"], None),
    (["put", "foo", "bar2", "--prev-kv"], None),
    (["get", "foo"], None),
    (["get", "foo", "-w", "json"], None),
    (["get", "--prefix", "foo"], None),
    (["get", "--prefix", "foo", "-w", "json"], None),
    (["get", "--prefix", "foo", "--keys-only"], None),
    (["get", "--prefix", "foo", "--count-only", "-w", "json"], None),
    (["get", "--prefix", "foo", "--limit", "2", "-w", "json"], None),
    (["get", "--prefix", "f", "--sort-by", "MODIFY", "--order", "DESCEND"], None),
    (["get", "--from-key", "foo1"], None),
    (["get", "foo", "fop"], None),
    (["get", "foo", "--rev", "2"], None),
    (["get", "foo", "--rev", "99"], None),
    (["get", "nothing"], None),
    (["get", "foo", "--consistency", "s"], None),
    (["del", "foo1", "--prev-kv"], None),
    (["del", "--prefix", "foo"], None),
    (["del", "nothing"], None),
    (["put", "foo", "again"], None),
    (["get", "foo", "-w", "json"], None),
    (["txn"], 'value("foo") = "again"\n\nput foo ok\nget foo\n\nput foo no\n\n'),
    (["txn"], 'value("foo") = "again"\n\nput foo ok\n\nput foo no\ndel fop\n\n'),
    (["txn", "-w", "json"], 'mod("foo") > "1"\nversion("foo") = "3"\n\nget foo\n\n\n'),
    (["txn"], 'create("nope") = "0"\n\nput nope 1\n\n\n'),
    (["get", "--prefix", ""], None),
    (["compaction", "5"], None),
    (["get", "foo", "--rev", "4"], None),
    (["get", "foo", "--rev", "5"], None),
    (["compaction", "3"], None),
    (["put", "", "empty-key"], None),
]


#: The compatibility table's rows, filled by the tests that compare
#: (``make etcd-compat-table`` writes it to docs/etcd-compat.md).
ROWS: list[tuple[str, str, str]] = []


def _method(args: list[str]) -> str:
    return {
        "put": "KV.Put", "get": "KV.Range", "del": "KV.DeleteRange", "txn": "KV.Txn",
        "compaction": "KV.Compact", "watch": "Watch.Watch", "lease": "Lease",
    }.get(args[0], args[0])  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def compat_table() -> Iterator[None]:
    yield
    path = os.environ.get("ETCD_COMPAT_TABLE")
    if not path or not ROWS:
        return
    lines = [
        "# etcd v3 API compatibility",
        "",
        "Generated by `make etcd-compat-table` (tests/test_etcd_compat.py): each",
        "row is an etcdctl command run",
        "against paxosrsm and against a real etcd 3.4 (Debian's `etcd-server`) in",
        "the same test; ✔ means the same output, after dropping the server's",
        "ids and raft term. See docs/etcd-api.md for what is not served.",
        "",
        "| method | call (etcdctl 3.4 unless said) | result |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | `{c}` | {r} |" for m, c, r in ROWS]
    Path(path).write_text("\n".join(lines) + "\n")


def test_etcdctl_gives_the_same_answers_as_etcd(both: tuple[str, str]) -> None:
    etcd, ours = both
    diffs = []
    for args, stdin in SCRIPT:
        want, got = normal(run(etcd, *args, stdin=stdin)), normal(run(ours, *args, stdin=stdin))
        call = " ".join(args) + (
            " (input: " + " / ".join(stdin.split("\n")[:3]) + ")" if stdin else ""
        )
        same = want == got
        ROWS.append((_method(args), call.replace("|", "\\|"), "✔" if same else "differs"))
        if not same:
            diffs.append(f"etcdctl {' '.join(args)}\n  etcd: {want}\n  ours: {got}")
    assert not diffs, "\n".join(diffs)


def test_endpoint_status_and_member_list(both: tuple[str, str]) -> None:
    _etcd, ours = both
    eps = ours.split(",")
    st = run(ours, "endpoint", "status", "-w", "json")
    assert st.returncode == 0, st.stderr
    rows = json.loads(st.stdout)
    assert sorted(r["Endpoint"] for r in rows) == sorted(eps)
    leaders = {r["Status"]["leader"] for r in rows}
    assert len(leaders) == 1 and 0 not in leaders, rows  # one leader, known to all
    assert all(r["Status"]["version"].startswith("3.4") for r in rows)
    ml = run(ours, "member", "list", "-w", "json")
    assert ml.returncode == 0, ml.stderr
    members = json.loads(ml.stdout)["members"]
    assert len(members) == 3 and {m["name"] for m in members} == {"node-0", "node-1", "node-2"}
    assert sorted(u for m in members for u in m["clientURLs"]) == sorted(f"http://{e}" for e in eps)
    ids = {m["ID"] for m in members}
    assert leaders <= ids


def _watch(endpoints: str, *args: str) -> subprocess.Popen[str]:
    env = {"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.Popen(
        [ETCDCTL, "--endpoints", endpoints, "watch", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _stop(p: subprocess.Popen[str]) -> str:
    p.terminate()
    out, _err = p.communicate(timeout=10)
    return out


def test_etcdctl_watch_gives_the_same_events_as_etcd(both: tuple[str, str]) -> None:
    """Watches from a past revision (replayed from the history) and live
    ones (started before the writes), with --prev-kv and on a prefix."""
    etcd, ours = both
    outputs = {}
    for name, ep in (("etcd", etcd), ("ours", ours)):
        live = _watch(ep, "--prefix", "w/")
        live_prev = _watch(ep, "--prev-kv", "w/a")
        time.sleep(1.5)  # the watches are created
        start = json.loads(run(ep, "get", "nothing", "-w", "json").stdout)["header"]["revision"]
        writes = [["put", "w/a", "1"], ["put", "w/b", "2"], ["put", "w/a", "3"], ["del", "w/a"]]
        writes += [["put", "x/other", "9"], ["del", "--prefix", "w/"]]
        for args in writes:
            assert run(ep, *args).returncode == 0
        time.sleep(1.5)  # the events are out
        past = _watch(ep, "--prefix", "w/", "--rev", str(start + 1))
        time.sleep(1.5)
        outputs[name] = (_stop(live), _stop(live_prev), _stop(past))
    same = outputs["ours"] == outputs["etcd"]
    for call in ("watch --prefix w/ (live)", "watch --prev-kv w/a (live)",
                 "watch --prefix w/ --rev N (history)"):  # fmt: skip
        ROWS.append(("Watch.Watch", call, "✔" if same else "differs"))
    assert same, outputs
    assert outputs["ours"][0].count("PUT") == 3 and outputs["ours"][0].count("DELETE") == 2


def test_a_watch_from_a_compacted_revision_is_cancelled(both: tuple[str, str]) -> None:
    etcd, ours = both
    outs = []
    for ep in (etcd, ours):
        rev = json.loads(run(ep, "put", "c/k", "1", "-w", "json").stdout)["header"]["revision"]
        run(ep, "put", "c/k", "2")
        assert run(ep, "compaction", str(rev + 1)).returncode == 0
        for one in ep.split(","):  # every replica applied it (a watch is served locally)
            t0 = time.monotonic()
            while run(one, "get", "c/k", "--rev", str(rev), "--consistency", "s").returncode == 0:
                assert time.monotonic() - t0 < 10
                time.sleep(0.1)
        p = _watch(ep, "c/k", "--rev", str(rev))
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = _stop(p), ""
        outs.append((p.returncode, out, err.strip().splitlines()[-1:] if err else []))
    ROWS.append(
        ("Watch.Watch", "watch --rev (compacted)", "✔" if outs[0] == outs[1] else "differs")
    )
    assert outs[0] == outs[1], outs
    assert outs[0][0] != 0 and "canceled" in str(outs[0][2]), outs


_LEASE_ID = re.compile(r"\b[0-9a-f]{15,16}\b")


def test_etcdctl_leases_compared_with_etcd(both: tuple[str, str]) -> None:
    """grant, put --lease, timetolive --keys, list, revoke: the same output
    (lease ids differ, and are replaced by LEASE)."""
    etcd, ours = both
    outs = []
    for ep in (etcd, ours):
        g = run(ep, "lease", "grant", "300")
        assert g.returncode == 0, g.stderr
        lid = g.stdout.split()[1]
        steps = [
            run(ep, "put", "l/a", "1", "--lease", lid),
            run(ep, "put", "l/b", "2", "--lease", lid),
            run(ep, "lease", "timetolive", lid, "--keys"),
            run(ep, "lease", "list"),
            run(ep, "get", "--prefix", "l/", "-w", "json"),
            run(ep, "lease", "revoke", lid),
            run(ep, "get", "--prefix", "l/"),
            run(ep, "lease", "timetolive", lid),
            run(ep, "put", "l/c", "3", "--lease", lid),
        ]
        text = [g.stdout] + [normal(p)[1] + normal(p)[2] for p in steps]
        # ids, and remaining seconds that may differ by the second
        text = [_LEASE_ID.sub("LEASE", t.replace(str(int(lid, 16)), "LEASEDEC")) for t in text]
        text = [re.sub(r"remaining\(\d+s\)", "remaining(Ns)", t) for t in text]
        # etcd lists a lease's keys from a Go map: in any order.
        text = [re.sub(r"attached keys\(\[([^]]*)\]\)",
                       lambda m: f"attached keys([{' '.join(sorted(m[1].split()))}])", t)
                for t in text]  # fmt: skip
        text = [re.sub(r'"ID":-?\d+|"revision":\d+|,"lease":\d+', "", t) for t in text]
        outs.append(text)
    calls = ["lease grant", "put --lease", "put --lease", "lease timetolive --keys", "lease list",
             "get -w json (leased keys)", "lease revoke", "get (after revoke)",
             "lease timetolive (revoked)", "put --lease (revoked lease)"]  # fmt: skip
    for i, call in enumerate(calls):
        ROWS.append(("Lease" if "lease " in call else "KV", call,
                     "✔" if outs[0][i] == outs[1][i] else "differs"))  # fmt: skip
    assert outs[0] == outs[1]
    assert "LEASE granted with TTL(300s)" in outs[1][0] and "l/a" in outs[1][3]


def test_a_lease_expires_without_keepalives_and_lives_with_them(both: tuple[str, str]) -> None:
    _etcd, ours = both
    g = run(ours, "lease", "grant", "2")
    lid = g.stdout.split()[1]
    assert run(ours, "put", "exp/dies", "x", "--lease", lid).returncode == 0
    g2 = run(ours, "lease", "grant", "2")
    kept = g2.stdout.split()[1]
    assert run(ours, "put", "exp/lives", "y", "--lease", kept).returncode == 0
    keeper = subprocess.Popen(
        [ETCDCTL, "--endpoints", ours, "lease", "keep-alive", kept],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while run(ours, "get", "exp/dies", "--print-value-only").stdout.strip():
            assert time.monotonic() - t0 < 10, "a lease without keepalives did not expire"
            time.sleep(0.2)
        gone_after = time.monotonic() - t0
        time.sleep(3)
        assert run(ours, "get", "exp/lives", "--print-value-only").stdout.strip() == "y"
    finally:
        keeper.terminate()
        keeper.wait()
    assert gone_after >= 1.0, gone_after  # not before its TTL (less the grant's own time)
    t1 = time.monotonic()
    while run(ours, "get", "exp/lives", "--print-value-only").stdout.strip():
        assert time.monotonic() - t1 < 10, "the lease did not expire once its keepalives stopped"
        time.sleep(0.2)
    print(f"lease of 2 s: gone {gone_after:.1f} s after its grant; kept alive 3 s more, "
          f"then gone {time.monotonic() - t1:.1f} s after the keepalives stopped")  # fmt: skip


def test_no_lease_expires_early_across_a_failover(tmp_path: Path) -> None:
    """Issue 13: no key expires before its TTL, measured from the last
    acknowledged keepalive, when the leader fails: the new leader starts
    every lease's deadline over (as etcd does)."""
    c = ProcCluster(tmp_path / "c", 3).start_all()
    try:
        c.wait_ready()
        eps = ",".join(c.layout["grpc_peers"])
        lid = run(eps, "lease", "grant", "4").stdout.split()[1]
        assert run(eps, "put", "fo/k", "v", "--lease", lid).returncode == 0
        leader = next(i for i in range(3) if (c.status(i) or {}).get("is_leader"))
        survivors = ",".join(c.layout["grpc_peers"][i] for i in range(3) if i != leader)
        ka = run(eps, "lease", "keep-alive", "--once", lid)
        t_ack = time.monotonic()
        assert ka.returncode == 0 and "TTL(4)" in ka.stdout, ka
        c.kill(leader)
        seen_until = t_ack
        while time.monotonic() - t_ack < 30:
            p = run(survivors, "get", "fo/k", "--print-value-only")
            if p.returncode == 0 and p.stdout.strip() == "":
                break
            if p.returncode == 0:
                seen_until = time.monotonic()
            time.sleep(0.1)
        else:
            raise AssertionError("the lease never expired after the failover")
        gone = time.monotonic() - t_ack
        print(f"TTL 4 s: the key lived {seen_until - t_ack:.1f} s after the last keepalive "
              f"across a failover, gone at {gone:.1f} s")  # fmt: skip
        assert seen_until - t_ack >= 4.0 - 0.3, (seen_until - t_ack, c.logs())
    finally:
        c.close()


def test_tokens_guard_the_etcd_api(tmp_path: Path) -> None:
    """With --http-auth-file, etcd's API needs a token: etcdctl --user
    name:token (Auth.Authenticate, then etcd's token metadata), or a bearer
    token over the gateway; roles and prefixes apply; anonymous is refused."""
    import urllib.error
    import urllib.request

    tokens = tmp_path / "tokens"
    rw, ro, ad = "w" * 24, "r" * 24, "a" * 24
    tokens.write_text(f"app readwrite app/ {rw}\nviewer read * {ro}\nops admin * {ad}\n")
    c = ProcCluster(tmp_path / "c", 3, extra=["--http-auth-file", str(tokens)]).start_all()
    try:
        c.wait_ready()
        eps = ",".join(c.layout["grpc_peers"])
        anon = run(eps, "put", "app/x", "1")
        assert anon.returncode != 0 and "user name is empty" in anon.stderr, anon.stderr
        assert run(eps, "--user", f"app:{rw}", "put", "app/x", "1").returncode == 0
        assert run(eps, "--user", f"app:{rw}", "get", "app/x").stdout == "app/x\n1\n"
        denied = run(eps, "--user", f"app:{rw}", "put", "other", "1")
        assert denied.returncode != 0 and "permission denied" in denied.stderr
        assert run(eps, "--user", f"viewer:{ro}", "get", "app/x").stdout == "app/x\n1\n"
        assert run(eps, "--user", f"viewer:{ro}", "put", "app/x", "2").returncode != 0
        wrong = run(eps, "--user", f"app:{ro}", "get", "app/x")
        assert wrong.returncode != 0 and "authentication failed" in wrong.stderr
        # etcd's Auth service, read from the tokens file (admin only); changes refused.
        admin = ("--user", f"ops:{ad}")
        assert run(eps, *admin, "user", "list").stdout == "app\nops\nviewer\n"
        assert run(eps, *admin, "user", "get", "app").stdout == "User: app\nRoles: readwrite:app/\n"
        assert run(eps, *admin, "role", "list").stdout == "read\nreadwrite:app/\nroot\n"
        assert run(eps, *admin, "role", "get", "readwrite:app/").stdout == (
            "Role readwrite:app/\nKV Read:\n\t[app/, app0) (prefix app/)\n"
            "KV Write:\n\t[app/, app0) (prefix app/)\n"
        )
        added = run(eps, *admin, "user", "add", "x:y")
        assert added.returncode != 0 and "tokens file" in added.stderr
        nosy = run(eps, "--user", f"viewer:{ro}", "user", "list")
        assert nosy.returncode != 0 and "permission denied" in nosy.stderr
        # The gateway: a bearer token, or 401.
        url = "http://" + c.layout["http_peers"][0] + "/v3/kv/range"
        body = b'{"key": "YXBwL3g="}'
        req = urllib.request.Request(url, data=body, method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("anonymous gateway call answered")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {ro}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["kvs"][0]["value"] == "MQ=="
    finally:
        c.close()


def test_paxosctl_txn_reads_and_prints_as_etcdctl(both: tuple[str, str], tmp_path: Path) -> None:
    """``paxosctl txn`` (paxosrsm's own client protocol) takes etcdctl's
    input and prints what ``etcdctl txn`` prints against etcd."""
    import yaml

    etcd, ours = both
    ours_cluster = None
    for p in Path(tmp_path).parent.parent.rglob("paxos*/cluster.yaml"):
        lay = yaml.safe_load(p.read_text())
        if ",".join(lay.get("grpc_peers", [])) == ours:
            ours_cluster = p
    assert ours_cluster is not None
    scripts = [
        'value("tx") = "x"\n\nput tx 1\n\nput tx 2\nget tx\n\n',
        'value("tx") = "2"\nversion("tx") = "1"\n\nget tx\ndel tx\n\nput tx 3\n\n',
        'create("tx") = "0"\n\nput tx fresh\nget tx\n\n\n',
        'mod("tx") > "1000000"\n\n\nget tx\n\n',
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for script in scripts:
        want = run(etcd, "txn", stdin=script)
        got = subprocess.run(
            [sys.executable, "-m", "paxosrsm.cli", "-c", str(ours_cluster), "txn"],
            input=script, capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        assert got.returncode == want.returncode == 0, (got.stderr, want.stderr)
        assert got.stdout == want.stdout, (script, got.stdout, want.stdout)
    bad = subprocess.run(
        [sys.executable, "-m", "paxosrsm.cli", "-c", str(ours_cluster), "txn"],
        input='value(tx) == "x"\n\n\n\n', capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a compare" in bad.stderr
