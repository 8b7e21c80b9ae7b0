"""ISO weeks: parsing `2026-W47` or a date, and the boundaries a run "as of" a week sees."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from segments.errors import ConfigError

_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, order=True)
class Week:
    """One ISO week. `start` is Monday 00:00 local, `end` the following Monday 00:00 (exclusive).

    >>> w = Week.parse("2026-11-22")
    >>> w.label, w.monday, w.sunday
    ('2026-W47', datetime.date(2026, 11, 16), datetime.date(2026, 11, 22))
    """

    year: int
    number: int

    @classmethod
    def of(cls, day: date) -> Week:
        iso = day.isocalendar()
        return cls(iso.year, iso.week)

    @classmethod
    def parse(cls, text: str) -> Week:
        """Parse an ISO week label (`2026-W47`) or a date (`2026-11-22`) into the week holding it."""
        text = text.strip()
        m = _WEEK_RE.match(text)
        if m:
            year, number = int(m.group(1)), int(m.group(2))
            try:
                date.fromisocalendar(year, number, 1)
            except ValueError:
                raise ConfigError(
                    f"'{text}' is not an ISO week: {year} has no week {number}."
                ) from None
            return cls(year, number)
        try:
            return cls.of(date.fromisoformat(text))
        except ValueError:
            raise ConfigError(
                f"'{text}' is neither an ISO week like 2026-W47 nor a date like 2026-11-22."
            ) from None

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.number:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.number, 1)

    @property
    def sunday(self) -> date:
        return self.monday + timedelta(days=6)

    @property
    def last_day(self) -> date:
        """The last day the week covers (its Sunday): day counts such as recency end here."""
        return self.sunday

    @property
    def start(self) -> datetime:
        return datetime.combine(self.monday, datetime.min.time())

    @property
    def end(self) -> datetime:
        """The exclusive end: the next Monday 00:00 local time."""
        return self.start + timedelta(days=7)

    def shift(self, weeks: int) -> Week:
        return Week.of(self.monday + timedelta(weeks=weeks))

    def window_start(self, weeks: int) -> datetime:
        """Start of the window of `weeks` whole weeks that ends at this week's end."""
        return self.end - timedelta(weeks=weeks)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, order=True)
class Day:
    """An as-of point inside a week: the data up to the end of `day` (a live table's as-of).

    It answers what a `Week` answers for the stages (`label`, `last_day`, `end`,
    `window_start`), so a week's windows ending on a Sunday and a live table's windows
    ending on a Wednesday are the same code: a window of n weeks is the 7n days ending with
    `last_day`.

    >>> d = Day(date(2026, 11, 25))
    >>> d.label, d.end, d.week.label
    ('2026-11-25', datetime.datetime(2026, 11, 26, 0, 0), '2026-W48')
    """

    day: date

    @classmethod
    def of(cls, ts: datetime) -> Day:
        return cls(ts.date())

    @property
    def label(self) -> str:
        return self.day.isoformat()

    @property
    def last_day(self) -> date:
        return self.day

    @property
    def week(self) -> Week:
        """The ISO week holding this day."""
        return Week.of(self.day)

    @property
    def end(self) -> datetime:
        """The exclusive end: midnight after `day`."""
        return datetime.combine(self.day, datetime.min.time()) + timedelta(days=1)

    def window_start(self, weeks: int) -> datetime:
        """Start of the window of `weeks` weeks (7 days each) that ends at `end`."""
        return self.end - timedelta(weeks=weeks)

    def __str__(self) -> str:
        return self.label


AsOf = Week | Day  # what a stage is computed "as of": a whole week, or a day inside one


def week_range(text: str) -> list[Week]:
    """Parse `2026-W01..2026-W47` (inclusive) or a single week into a list of weeks."""
    if ".." not in text:
        return [Week.parse(text)]
    first, last = (Week.parse(part) for part in text.split("..", 1))
    if last < first:
        raise ConfigError(f"week range '{text}' ends before it starts.")
    weeks, w = [], first
    while w <= last:
        weeks.append(w)
        w = w.shift(1)
    return weeks


def latest_complete_week(max_ts: datetime) -> Week:
    """The latest week the data covers completely: the week of `max_ts` when it falls on the
    week's last day, otherwise the week before."""
    w = Week.of(max_ts.date())
    return w if max_ts.date() == w.sunday else w.shift(-1)
