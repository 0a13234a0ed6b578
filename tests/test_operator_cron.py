"""The operator's cron schedules (operator/paxos_operator/cron.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from paxos_operator.cron import CronError, parse

T0 = dt.datetime(2026, 12, 7, 9, 30, 15, tzinfo=dt.UTC)  # a Monday


def runs(expr: str, n: int, start: dt.datetime = T0) -> list[str]:
    c = parse(expr)
    out, t = [], start
    for _ in range(n):
        t = c.next_after(t)
        out.append(t.strftime("%a %Y-%m-%d %H:%M"))
    return out


@pytest.mark.parametrize(
    "expr, want",
    [
        ("*/15 * * * *", ["Mon 2026-12-07 09:45", "Mon 2026-12-07 10:00", "Mon 2026-12-07 10:15"]),
        ("0 3 * * *", ["Tue 2026-12-08 03:00", "Wed 2026-12-09 03:00", "Thu 2026-12-10 03:00"]),
        ("@hourly", ["Mon 2026-12-07 10:00", "Mon 2026-12-07 11:00", "Mon 2026-12-07 12:00"]),
        ("30 9 * * 1-5", ["Tue 2026-12-08 09:30", "Wed 2026-12-09 09:30", "Thu 2026-12-10 09:30"]),
        ("0 0 1 * *", ["Fri 2027-01-01 00:00", "Mon 2027-02-01 00:00", "Mon 2027-03-01 00:00"]),
        ("0 12 29 2 *", ["Tue 2028-02-29 12:00", "Sun 2032-02-29 12:00"]),
        # day of month OR day of week when both are restricted, as cron does
        ("0 0 13 * 5", ["Fri 2026-12-11 00:00", "Sun 2026-12-13 00:00", "Fri 2026-12-18 00:00"]),
        ("0 0 * * 7", ["Sun 2026-12-13 00:00", "Sun 2026-12-20 00:00", "Sun 2026-12-27 00:00"]),
        (
            "5,35 */12 * * *",
            ["Mon 2026-12-07 12:05", "Mon 2026-12-07 12:35", "Tue 2026-12-08 00:05"],
        ),
    ],
)
def test_next_runs(expr: str, want: list[str]) -> None:
    assert runs(expr, len(want)) == want


def test_the_longest_gap_between_runs() -> None:
    assert parse("*/5 * * * *").max_gap(T0) == dt.timedelta(minutes=5)
    assert parse("0 3 * * 1-5").max_gap(T0) == dt.timedelta(days=3)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "*/0 * * * *",
        "a * * * *",
        "5-1 * * * *",
        "0 0 31 2 *",
        "* * * * * *",
        "x" * 300,
    ],
)
def test_bad_schedules_are_refused(expr: str) -> None:
    with pytest.raises(CronError):
        parse(expr).next_after(T0)
