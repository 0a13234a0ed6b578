"""Cron schedules (the five standard fields), pure: parse once, then ask for
the next run after a time. No dependency: the syntax is small and fixed.

    minute hour day-of-month month day-of-week
    *  5  1-5  */15  0-30/10  1,15  and @hourly @daily @weekly @monthly @yearly

As in cron, when both day-of-month and day-of-week are restricted a day
matches if either does. Times are UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class CronError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    def matches(self, t: dt.datetime) -> bool:
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self._day_ok(t)
        )

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``t`` (UTC)."""
        t = t.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        end = t + dt.timedelta(days=366 * 5)
        while t < end:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if t.minute in self.minutes:
                return t
            t += dt.timedelta(minutes=1)
        raise CronError("the schedule never runs (no matching date in five years)")

    def _day_ok(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.dom_any and self.dow_any:
            return True
        if self.dom_any:
            return dow
        if self.dow_any:
            return dom
        return dom or dow

    def max_gap(self, start: dt.datetime, runs: int = 64) -> dt.timedelta:
        """The longest time between two runs over the next ``runs`` runs
        (a backup is overdue when its last success is older than twice this)."""
        t = self.next_after(start)
        gap = dt.timedelta(0)
        for _ in range(runs):
            n = self.next_after(t)
            gap = max(gap, n - t)
            t = n
        return gap


def _field(text: str, lo: int, hi: int, name: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/", 1)
            if not s.isdigit() or int(s) == 0:
                raise CronError(f"bad step {s!r} in the {name} field")
            step = int(s)
        if part == "*":
            a, b = lo, hi
        elif "-" in part:
            x, y = part.split("-", 1)
            if not (x.isdigit() and y.isdigit()):
                raise CronError(f"bad range {part!r} in the {name} field")
            a, b = int(x), int(y)
        elif part.isdigit():
            a = int(part)
            b = hi if step > 1 else a
        else:
            raise CronError(f"bad value {part!r} in the {name} field")
        if not (lo <= a <= hi and lo <= b <= hi and a <= b):
            raise CronError(f"{part!r} is outside {lo}-{hi} in the {name} field")
        out.update(range(a, b + 1, step))
    return frozenset(out)


def parse(expr: str) -> Cron:
    if not isinstance(expr, str) or len(expr) > 200:
        raise CronError("a schedule is a string of at most 200 characters")
    text = _ALIASES.get(expr.strip(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"a schedule has 5 fields (minute hour day month weekday), got {expr!r}")
    f = [_field(p, lo, hi, n) for p, (lo, hi), n in zip(parts, _RANGES, _NAMES, strict=True)]
    weekdays = frozenset(d % 7 for d in f[4])
    return Cron(f[0], f[1], f[2], f[3], weekdays, parts[2] == "*", parts[4] == "*")
