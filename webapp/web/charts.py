"""Server-rendered SVG charts: no script, no CDN, nothing for the CSP to allow."""

from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT, PAD = 640, 180, 4
MAX_POINTS = 160  # a week-long campaign still draws as a few kilobytes


@dataclass(frozen=True)
class Line:
    name: str
    css: str
    points: str  # SVG polyline points
    total: int


@dataclass(frozen=True)
class Chart:
    lines: list[Line]
    top: int  # the y axis' top value
    start: datetime
    end: datetime
    width: int = WIDTH
    height: int = HEIGHT


def cumulative_chart(rows: list[tuple], series: tuple[tuple[str, int, str], ...], start: datetime,
                     end: datetime) -> Chart | None:
    """Cumulative lines from `start` to `end` over (minute, value, value, ...) rows; series: (name, column, css).

    A minute's figures are drawn at the minute's end (or at `end`, if sooner): what happened in it is all
    in by then, so a campaign that took seconds still draws a slope from its start, not a vertical line.
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
    top = max(max(totals.values()), 1)

    def point(moment: datetime, value: int) -> str:
        x = PAD + (moment - start).total_seconds() / span * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - value / top * (HEIGHT - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for name, column, css in series:
        points = [point(start, 0)] + [point(moment, values[column]) for moment, values in cumulated]
        lines.append(Line(name, css, " ".join(points), totals[column]))
    return Chart(lines, top, start, end)


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
