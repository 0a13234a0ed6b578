"""The chart's alerting rules and dashboard against a real Prometheus (Debian's
``prometheus`` package): promtool checks and unit-tests the rules; a
Prometheus scrapes a cluster of real node processes, loads the rules, and
fires PaxosMemberDown when a member stops, then PaxosInsufficientMembers when
a second one does. Every metric the rules and the dashboard name is one the
nodes export (the operator's own are checked in the operator's tests)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from netcluster import ProcCluster, free_ports

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "charts/paxosrsm-operator/files/prometheus-rules.yaml"
DASHBOARD = ROOT / "charts/paxosrsm-operator/files/grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 10 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yaml"],
        capture_output=True, text=True, cwd=ROOT / "tests/prometheus",
    )  # fmt: skip
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _names(expr: str) -> set[str]:
    words = set(re.findall(r"\b(paxos_[a-z0-9_]+|process_[a-z_]+)\b", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", w) for w in words}


def _exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    out = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    out += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return out


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def _firing(base: str) -> list[dict[str, Any]]:
    return [a for a in _get(f"{base}/api/v1/alerts")["alerts"] if a["state"] == "firing"]


def _wait(what: str, cond: Any, timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    c = ProcCluster(tmp_path / "c", 3, 0).start_all()
    try:
        c.wait_ready()
        yield c
    finally:
        c.close()


def test_a_real_prometheus_scrapes_the_members_and_fires_alerts(
    cluster: ProcCluster, tmp_path: Path
) -> None:
    c = cluster
    # The rules as shipped, their `for` shortened to 3 s (the expressions,
    # labels and annotations unchanged): the real ones wait minutes.
    rules = re.sub(r"for: \d+m", "for: 3s", RULES.read_text())
    (tmp_path / "rules.yaml").write_text(rules)
    targets = [urllib.parse.urlparse(c.http(i)).netloc for i in range(3)]
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "paxosrsm",
                "static_configs": [
                    {
                        "targets": targets,
                        "labels": {
                            "paxosrsm_cluster": "local",
                            "paxosrsm_role": "acceptor",
                            "namespace": "local",
                        },
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        c.client().put("hello", "world")

        def all_up() -> bool:
            try:
                act = _get(f"{base}/api/v1/targets")["activeTargets"]
            except OSError:
                return False
            return len(act) == 3 and all(t["health"] == "up" for t in act)

        _wait("3 targets up", all_up, 30)
        groups = _get(f"{base}/api/v1/rules")["groups"]
        assert [len(g["rules"]) for g in groups] == [10]
        assert all(r["health"] == "ok" for g in groups for r in g["rules"])

        # Every node metric the rules and the dashboard use is scraped.
        def exported() -> set[str]:
            names = set(_get(f"{base}/api/v1/label/__name__/values"))
            return names

        needed = set().union(*(_names(e) for e in _exprs()))
        needed = {n for n in needed if not n.startswith("paxos_operator_")}
        have = _wait("series", exported, 20)
        plain = {re.sub(r"_(bucket|count|sum)$", "", n) for n in have}
        assert not needed - plain, f"rules/dashboard name metrics no node exports: {needed - plain}"
        assert not _firing(base), _firing(base)

        victim = next(i for i in range(3) if i != c.leader())
        c.kill(victim)
        down = _wait(
            "PaxosMemberDown",
            lambda: [a for a in _firing(base) if a["labels"]["alertname"] == "PaxosMemberDown"],
            40,
        )
        assert [a["labels"]["instance"] for a in down] == [targets[victim]]
        assert not [a for a in _firing(base) if a["labels"]["alertname"] != "PaxosMemberDown"]
        second = next(i for i in range(3) if i != victim)
        c.kill(second)
        lost = _wait(
            "PaxosInsufficientMembers",
            lambda: [
                a for a in _firing(base) if a["labels"]["alertname"] == "PaxosInsufficientMembers"
            ],
            40,
        )
        assert lost[0]["labels"]["paxosrsm_cluster"] == "local"
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()
