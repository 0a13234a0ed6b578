"""The node's lock-free histogram (net/metrics.py) must expose exactly what
prometheus_client's own Histogram does for the same observations: bucket
bounds (values on a bound count in it: ``le``), cumulative counts, sum,
count, labels."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from paxosrsm.net import metrics


def _lines(reg: CollectorRegistry) -> list[str]:
    return [
        ln
        for ln in generate_latest(reg).decode().splitlines()
        if not ln.startswith("#") and "_created" not in ln
    ]


def test_same_exposition_as_prometheus_client() -> None:
    bounds = metrics.REQUEST_BUCKETS
    rng = random.Random(7)
    values = [rng.choice(bounds) for _ in range(50)]  # exactly on a bound
    values += [rng.uniform(0, 10) for _ in range(500)] + [0.0, 1e-9, 100.0]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h_seconds", "doc", buckets=bounds, registry=theirs)
    b = metrics.Histogram("h_seconds", "doc", buckets=bounds, registry=ours)
    la = Histogram("l_seconds", "doc", ["api", "op"], buckets=bounds, registry=theirs)
    lb = metrics.Histogram("l_seconds", "doc", ["api", "op"], buckets=bounds, registry=ours)
    la.labels("grpc", "put")
    lb.labels("grpc", "put")  # present at zero, as the node declares them
    for v in values:
        a.observe(v)
        b.observe(v)
        la.labels("http", "range").observe(v / 3)
        lb.labels("http", "range").observe(v / 3)
    want, got = _lines(theirs), _lines(ours)
    assert len(want) == len(got) > 40
    for w, g in zip(want, got, strict=True):
        wn, _, wv = w.rpartition(" ")
        gn, _, gv = g.rpartition(" ")
        assert wn == gn and abs(float(wv) - float(gv)) < 1e-9, (w, g)
