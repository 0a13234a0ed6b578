"""``--state-machine module:factory`` (issue 13): the cluster replicates a
state machine of the user's own; the example counter, on real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from netcluster import ProcCluster

from paxosrsm.client import AsyncClient
from paxosrsm.examples.counter import Counter, CounterClient, CounterError
from paxosrsm.types import Kind


def test_a_replicated_counter(tmp_path: Path) -> None:
    c = ProcCluster(
        tmp_path / "c",
        3,
        extra=["--state-machine", "paxosrsm.examples.counter:Counter"],
        grpc=False,  # etcd's API is the MVCC store's: a node refuses both
    ).start_all()
    try:
        c.wait_ready()

        async def go() -> tuple[int, list[int]]:
            async with AsyncClient(c.addrs, c.key, timeout=10) as cl:
                counter = CounterClient(cl)
                results = await asyncio.gather(*(counter.add(1) for _ in range(200)))
                await counter.add(-50)
                # A bad write is an error result on every replica, not a crash.
                assert await cl.request(Kind.WRITE, b"mul 2") == b"error: want 'add <n>'"
                for _ in range(100):
                    st = [c.status(i) for i in range(3)]
                    if len({s["applied"] for s in st if s}) == 1:
                        break
                    await asyncio.sleep(0.1)
                final = await counter.get()
                # Stale reads, each from a node picked at random, once all
                # have applied the last write.
                stale = [await counter.get(stale=True) for _ in range(30)]
                return final, sorted(results) + stale

        final, seen = asyncio.run(go())
        # Every add applied once, in some order: the answers are 1..200.
        assert seen[:200] == list(range(1, 201))
        assert final == 150 and seen[200:] == [150] * 30
        for i in range(3):
            assert c.alive(i)
    finally:
        c.close()


def test_the_counter_contract() -> None:
    a = Counter()
    assert a.apply(b"add 5") == b"5" and a.apply(b"add -2") == b"3"
    assert a.apply(b"nonsense").startswith(b"error") and a.value == 3
    assert a.apply(b"add " + b"9" * 20).startswith(b"error")
    b = Counter()
    b.restore(a.snapshot())
    assert b.query(b"get") == b"3"
    assert CounterClient._int(b"7") == 7
    try:
        CounterClient._int(b"error: x")
    except CounterError:
        pass
    else:
        raise AssertionError("an error result must raise")
