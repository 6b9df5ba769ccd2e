"""A small five-field cron parser (UTC) for Pipeline schedules.

Only what schedules need: numbers, `*`, lists, ranges and steps in minute, hour, day of month,
month and day of week (0 or 7 = Sunday). Day-of-month and day-of-week combine with OR when both
are restricted, as in Vixie cron.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))


class CronError(ValueError):
    pass


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = int(base)
                end = high if step_text else start
        except ValueError:
            raise CronError(f"schedule: {name} field {text!r} is not a number/range/step") from None
        if step < 1 or start < low or end > high or start > end:
            raise CronError(f"schedule: {name} field {text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        parts = text.split()
        if len(parts) != 5:
            raise CronError(f"schedule {text!r}: need five fields (minute hour dom month dow)")
        parsed = [
            _parse_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=False)
        ]
        weekdays = _parse_field(parts[4], "day of week", 0, 7)
        weekdays = frozenset(d % 7 for d in weekdays)
        minutes, hours, days, months = parsed
        return cls(minutes, hours, days, months, weekdays, parts[2] != "*", parts[4] != "*")

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after `t`. Skips a month, day or hour that
        cannot match at once, so a yearly schedule costs hundreds of steps, not a year of
        minutes."""
        candidate = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(days=366)
        while candidate < limit:
            if candidate.month not in self.months:
                first = candidate.replace(day=1, hour=0, minute=0)
                candidate = (first + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise CronError("schedule never matches within a year")

    def last_at_or_before(self, t: datetime, since: datetime) -> datetime | None:
        """The latest matching minute in (since, t], or None."""
        latest = None
        cursor = since
        while True:
            nxt = self.next_after(cursor)
            if nxt > t:
                return latest
            latest = cursor = nxt

    def matches(self, t: datetime) -> bool:
        return (
            t.month in self.months
            and self._day_matches(t)
            and t.hour in self.hours
            and t.minute in self.minutes
        )

    def latest_at_or_before(self, t: datetime, since: datetime) -> datetime | None:
        """The latest matching minute in (since, t], scanning back from `t` (a month, day or
        hour that cannot match is skipped whole): a slot found after a long outage costs the
        way back to it, not one step per missed slot."""
        candidate = t.replace(second=0, microsecond=0)
        while candidate > since:
            if candidate.month not in self.months:
                candidate = candidate.replace(day=1, hour=0, minute=0) - timedelta(minutes=1)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) - timedelta(minutes=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) - timedelta(minutes=1)
            elif candidate.minute not in self.minutes:
                candidate -= timedelta(minutes=1)
            else:
                return candidate
        return None
