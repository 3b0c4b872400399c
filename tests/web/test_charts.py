"""The timeline chart's axes: round counts on gridlines, times in the team's zone that never crowd each other."""

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from webapp.web import charts

SERIES = (("Posts", 1, "line-posted"), ("Delivered", 2, "line-delivered"))
START = datetime(2030, 7, 1, 13, 7)  # naive UTC, as stored


def _chart(span: timedelta, posted: int = 7, zone: str = "UTC") -> charts.Chart:
    rows = [(START.replace(second=0), posted, posted // 2)]
    return charts.cumulative_chart(rows, SERIES, START, START + span, ZoneInfo(zone))


@pytest.mark.parametrize(("posted", "labels"), [(1, ["1 message"]), (7, ["5", "10 messages"]),
                                                (10, ["5", "10 messages"]), (1234, ["500", "1,000", "1,500 messages"])])
def test_counts_are_labelled_on_round_gridlines_up_to_the_top(posted, labels):
    chart = _chart(timedelta(minutes=30), posted)
    assert [tick.label for tick in chart.counts] == labels
    assert chart.counts[-1].at == pytest.approx(charts.PAD)  # the top gridline is the top of the plot
    assert all(0 < tick.at < charts.PLOT_HEIGHT for tick in chart.counts)


def test_times_are_the_teams_round_times_between_the_start_and_the_end():
    """30 minutes in Kolkata (UTC+5:30): the ends as they are, round ten minutes between them."""
    chart = _chart(timedelta(minutes=30), zone="Asia/Kolkata")
    labels = [tick.label for tick in chart.times]
    assert labels[0] == "18:37" and labels[-1] == "19:07"
    assert labels[1:-1] and all(re.fullmatch(r"\d\d:\d0", label) for label in labels[1:-1]), labels
    assert [tick.anchor for tick in (chart.times[0], chart.times[-1])] == ["start", "end"]


@pytest.mark.parametrize("span", [timedelta(seconds=5), timedelta(minutes=3), timedelta(minutes=47),
                                  timedelta(hours=5), timedelta(hours=30), timedelta(days=3), timedelta(days=40)])
def test_time_labels_never_crowd_each_other(span):
    """Whatever the campaign's length, at most five labels, each at least LABEL_GAP of the width from the next."""
    ticks = _chart(span).times
    assert 2 <= len(ticks) <= 5
    gaps = [later.at - earlier.at for earlier, later in zip(ticks, ticks[1:], strict=False)]
    assert min(gaps) >= charts.LABEL_GAP * 100 - 0.5, [(tick.at, tick.label) for tick in ticks]


def test_short_campaigns_show_seconds_and_long_ones_dates():
    assert [tick.label for tick in _chart(timedelta(seconds=5)).times] == ["13:07:00", "13:07:05"]
    assert _chart(timedelta(days=3)).times[0].label == "Jul 1"
