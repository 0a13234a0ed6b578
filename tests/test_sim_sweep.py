"""The seeded simulator under mixed faults: CI runs 500 seeds (SIM_SEEDS overrides).

Each seed draws a cluster (1, 3, 5 or 7 acceptors, NACK on or off, window,
batch, snapshot interval) and a fault schedule (partitions, one-way links,
leader isolation, crashes, pauses, loss and duplication), then checks safety,
replica convergence, no lost acknowledged write, linearizability of the
client history, and liveness after healing. A failure names its seed and the
command that replays it.
"""

from __future__ import annotations

import os

import pytest

from paxosrsm.sim.engine import SimParams, Simulator, run_seed

SEEDS = int(os.environ.get("SIM_SEEDS", "500"))
CHUNK = 10


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_seeds(start: int) -> None:
    ops = 0
    for seed in range(start, min(start + CHUNK, SEEDS)):
        res = run_seed(seed)  # raises SimulationFailure naming the seed
        assert res.linearizability is not None and res.linearizability.ok
        ops += res.ok_ops
    assert ops > 0, "the workload ran"


def test_a_seed_replays_exactly() -> None:
    def trace(seed: int) -> tuple[object, ...]:
        import random

        sim = Simulator(seed, SimParams.random(random.Random(seed)))
        res = sim.run()
        hist = [(r.client, r.seq, r.kind, r.invoke, r.complete, r.result) for r in sim.history]
        return (res.summary(), sorted(sim.chosen.items()), hist)

    assert trace(17) == trace(17)
    assert trace(17) != trace(18)


def test_mixed_faults_are_really_injected() -> None:
    kinds: set[str] = set()
    crashes = 0
    for seed in range(20):
        import random

        sim = Simulator(seed, SimParams.random(random.Random(seed)), verbose=False)
        logged: list[str] = []
        sim.verbose = True
        sim.log = logged.append  # type: ignore[method-assign]
        sim.run()
        text = "\n".join(logged)
        for k in ("partition", "one-way", "isolate", "crash", "pause", "loss=", "leads"):
            if k in text:
                kinds.add(k)
        crashes += text.count("crash node")
    assert kinds == {"partition", "one-way", "isolate", "crash", "pause", "loss=", "leads"}
    assert crashes >= 5


def test_the_runtime_order_and_its_buggify_lag_are_in_the_sweep() -> None:
    """Issue 11: part of the sweep drives the core as the runtime does (a
    flusher cycle per node, steps and ticks between proposes), some of it with
    a lag before a cycle; and those runs really take the flusher path."""
    import random

    params = [SimParams.random(random.Random(seed)) for seed in range(40)]
    lazy = [p for p in params if p.runtime_order]
    assert 5 <= len(lazy) <= 35 and any(p.flusher_lag > 0 for p in lazy)
    seed = next(s for s, p in enumerate(params) if p.runtime_order and p.flusher_lag > 0)
    sim = Simulator(seed, params[seed])
    cycles = 0
    real = sim._flusher_cycle

    def counted(nid: int, epoch: int) -> None:
        nonlocal cycles
        cycles += 1
        real(nid, epoch)

    sim._flusher_cycle = counted  # type: ignore[method-assign]
    res = sim.run()
    assert cycles > 100 and res.ok_ops > 0, (cycles, res.summary())
