"""The Jepsen-style test on real processes in network namespaces: CI's slice.

The full campaign (every nemesis, longer faults) is a README command:
``python -m paxosrsm.testing.jepsen``. This slice runs the partitions that
used to make leaders duel (bridge, ring), a leader's isolation and a wipe,
4 s each on 5 nodes, and asserts a linearizable history and issue 11's
liveness targets (no leader duel, no long stall after a wipe, no change of
leader after a heal).
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from paxosrsm.testing import jepsen

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
    reason="needs root, ip and iptables (network namespaces)",
)


@pytest.mark.jepsen
@needs_root
def test_partitions_wipes_and_isolation_on_real_processes() -> None:
    async def go() -> list[jepsen.RunResult]:
        out = []
        with jepsen.environment(5) as c:
            await jepsen.run_one(c, "none", fault_s=2.0, warm_s=1.0, after_s=0.5, seed=999)
            base = await jepsen.run_one(c, "none", fault_s=4.0)
            out.append(base)
            for i, nem in enumerate(("bridge", "ring", "isolate-leader", "wipe")):
                r = await jepsen.run_one(c, nem, fault_s=4.0, seed=i + 1, baseline=base.throughput)
                out.append(r)
            # The etcd-API workload (issue 13): Range, Put and a Txn CAS, and a
            # watch checked against the store's change log, across a leader kill.
            out.append(await jepsen.run_one(c, "kill", fault_s=4.0, seed=7, api="etcd"))
        return out

    results = asyncio.run(go())
    report = jepsen.report(results)
    print(report)
    by = {r.nemesis: r for r in results}
    for r in results:
        assert r.linearizable, f"{r.nemesis}: {r.explanation}\n{report}"
        assert r.ops_ok > 100, report
    for nem in ("bridge", "ring"):
        assert by[nem].elections == 0, report
        assert by[nem].leader_changed_after_heal is False, report
    assert by["isolate-leader"].leader_changed_after_heal is False, report
    assert by["wipe"].longest_gap_s < 1.5, report
    etcd = results[-1]
    assert etcd.watch_ok is True and etcd.watch_events > 50, (etcd.explanation, report)
    print(f"etcd API under a leader kill: {etcd.ops_ok} ops linearizable, the watch saw "
          f"{etcd.watch_events} events, all of the log, in order")  # fmt: skip
