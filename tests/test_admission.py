"""Admission of datagrams before their MAC is checked (issue 12, floods)."""

from __future__ import annotations

from paxosrsm.net.admission import Admission


def test_an_unknown_source_gets_its_burst_then_its_rate() -> None:
    a = Admission(per_source=100, unknown_total=10_000)
    t = 1000.0
    took = sum(a.admit("10.0.0.9", t) for _ in range(1000))
    assert took == 200  # the burst: two seconds' worth
    took = sum(a.admit("10.0.0.9", t + 1.0) for _ in range(1000))
    assert took == 100  # then the rate


def test_a_trusted_source_is_never_limited() -> None:
    a = Admission(per_source=1, unknown_total=1)
    a.trust("10.0.0.1", 0.0)
    assert all(a.admit("10.0.0.1", 1.0) for _ in range(10_000))
    assert not all(a.admit("10.0.0.1", 500.0) for _ in range(10))  # trust expires


def test_unknown_sources_share_one_budget_and_the_tables_are_bounded() -> None:
    a = Admission(per_source=100, unknown_total=500, max_sources=64)
    took = sum(a.admit(f"10.1.{i // 250}.{i % 250}", 0.0) for i in range(5000))
    assert took == 1000  # the shared burst, however many sources
    assert len(a.buckets) <= 64
    for i in range(1000):
        a.trust(f"10.2.{i // 250}.{i % 250}", 0.0)
    assert len(a.trusted) <= 64
