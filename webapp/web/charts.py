"""Server-rendered SVG charts: no script, no CDN, nothing for the CSP to allow.

The plot is an inner <svg> whose viewBox stretches to the chart's width (its lines keep their stroke with
vector-effect), while the axis labels sit in the outer <svg>, which has no viewBox: their x is a percentage
of the width and their font a CSS size, so they read the same on a 390 px phone and a wide screen instead
of shrinking with the drawing.
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

WIDTH, PLOT_HEIGHT, PAD = 640, 150, 2  # the plot's viewBox: x stretches to the chart's width, y is in pixels
TOP = 18  # pixels above the plot, for the top count's label
HEIGHT = TOP + PLOT_HEIGHT + 22  # and below it, for the times
MAX_POINTS = 160  # a week-long campaign still draws as a few kilobytes
Y_TICKS = 3  # counts labelled on the y axis, at most (0 is the baseline)
LABEL_GAP = 0.22  # of the width between two time labels: five "14:30" fit on a phone
TIME_STEPS = [timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720)] + [
    timedelta(days=d) for d in (1, 2, 7, 14, 28)]


@dataclass(frozen=True)
class Line:
    name: str
    css: str
    points: str  # SVG polyline points
    total: int


@dataclass(frozen=True)
class Tick:
    at: float  # y in the plot's pixels (counts), or x as a percentage of the width (times)
    label: str
    anchor: str = "middle"  # text-anchor of a time label: the ends keep inside the chart


@dataclass(frozen=True)
class Chart:
    lines: list[Line]
    top: int  # the y axis' top value
    start: datetime
    end: datetime
    counts: list[Tick] = field(default_factory=list)  # y axis: gridlines with their counts, lowest first
    times: list[Tick] = field(default_factory=list)  # x axis: times in the team's zone, earliest first
    width: int = WIDTH
    height: int = HEIGHT
    plot_top: int = TOP
    plot_height: int = PLOT_HEIGHT

    @property
    def times_y(self) -> int:
        """The baseline of the time labels, below the plot."""
        return self.plot_top + self.plot_height + 16


def cumulative_chart(rows: list[tuple], series: tuple[tuple[str, int, str], ...], start: datetime,
                     end: datetime, zone: ZoneInfo | None = None) -> Chart | None:
    """Cumulative lines from `start` to `end` over (minute, value, value, ...) rows; series: (name, column, css).

    A minute's figures are drawn at the minute's end (or at `end`, if sooner): what happened in it is all
    in by then, so a campaign that took seconds still draws a slope from its start, not a vertical line.
    Moments are naive UTC; the time labels are in `zone` (UTC without one).
    """
    if not rows:
        return None
    rows = _thin(rows, {column for _name, column, _css in series})
    start = min(start, rows[0][0])
    end = max(end, start + timedelta(seconds=1))
    span = (end - start).total_seconds()
    totals = {column: 0 for _name, column, _css in series}
    cumulated = []
    for row in rows:
        for column in totals:
            totals[column] += row[column]
        cumulated.append((min(row[0] + timedelta(minutes=1), end), dict(totals)))
    step = _count_step(max(totals.values()))
    top = max(step * math.ceil(max(totals.values()) / step), 1)

    def y(value: int) -> float:
        return PLOT_HEIGHT - PAD - value / top * (PLOT_HEIGHT - 2 * PAD)

    def point(moment: datetime, value: int) -> str:
        x = PAD + (moment - start).total_seconds() / span * (WIDTH - 2 * PAD)
        return f"{x:.1f},{y(value):.1f}"

    lines = []
    for name, column, css in series:
        points = [point(start, 0)] + [point(moment, values[column]) for moment, values in cumulated]
        lines.append(Line(name, css, " ".join(points), totals[column]))
    unit = " message" if top == 1 else " messages"
    counts = [Tick(round(y(value), 1), f"{value:,}" + (unit if value == top else ""))
              for value in range(step, top + 1, step)]
    return Chart(lines, top, start, end, counts, _time_ticks(start, end, zone or ZoneInfo("UTC")))


def _count_step(highest: int) -> int:
    """A round step (1, 2 or 5 times a power of ten) that labels the counts up to `highest` in Y_TICKS or fewer."""
    raw = max(highest, 1) / Y_TICKS
    power = 10 ** math.floor(math.log10(raw))
    return max(1, next(int(n * power) for n in (1, 2, 5, 10) if n * power >= raw))


def _time_ticks(start: datetime, end: datetime, zone: ZoneInfo) -> list[Tick]:
    """The chart's start and end, and round times between them far enough apart for their labels not to touch."""
    span = end - start
    local = lambda moment: moment.replace(tzinfo=UTC).astimezone(zone)  # noqa: E731
    if span >= timedelta(days=2):
        shown = lambda moment: f"{local(moment):%b} {local(moment).day}"  # noqa: E731
    elif span >= timedelta(minutes=10):
        shown = lambda moment: f"{local(moment):%H:%M}"  # noqa: E731
    else:
        shown = lambda moment: f"{local(moment):%H:%M:%S}"  # noqa: E731
    ticks = [Tick(0.0, shown(start), "start"), Tick(100.0, shown(end), "end")]
    step = next((step for step in TIME_STEPS if span / step <= 1 / LABEL_GAP), TIME_STEPS[-1])
    midnight = datetime.combine(local(start).date(), time(0), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
    moment = midnight + step * math.ceil((start - midnight) / step)
    between = []
    while moment < end:
        at = (PAD + (moment - start) / span * (WIDTH - 2 * PAD)) / WIDTH * 100  # where the plot draws it
        if LABEL_GAP * 100 <= at <= 100 - LABEL_GAP * 100 and all(
                abs(at - tick.at) >= LABEL_GAP * 100 for tick in between):
            between.append(Tick(round(at, 2), shown(moment)))
        moment += step
    return [ticks[0], *between, ticks[1]]


def _thin(rows: list[tuple], columns: set[int]) -> list[tuple]:
    """At most MAX_POINTS rows: neighbouring minutes added together, each keeping the later minute."""
    if len(rows) <= MAX_POINTS:
        return rows
    size = -(-len(rows) // MAX_POINTS)
    thinned = []
    for start in range(0, len(rows), size):
        group = rows[start:start + size]
        merged = list(group[-1])
        for column in columns:
            merged[column] = sum(row[column] for row in group)
        thinned.append(tuple(merged))
    return thinned
