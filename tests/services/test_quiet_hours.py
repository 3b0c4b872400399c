"""Quiet hours with a fixed clock: the recipient's local time decides, several zones must all agree."""

from datetime import UTC, datetime, time

from webapp.services.quiet_hours import Window, check, zones_for

LONDON = "+447400123456"
NEW_YORK = "+12125551234"  # America/New_York
LOS_ANGELES = "+13105551234"  # America/Los_Angeles
TOLL_FREE = "+18005551234"  # every US zone


def test_inside_the_window_sends_now():
    """14:00 in London is inside 08:00-21:00."""
    verdict = check(LONDON, datetime(2026, 6, 1, 13, 0, tzinfo=UTC), "UTC")
    assert verdict.send_now and not verdict.team_zone_used


def test_before_eight_local_waits_for_eight_local():
    """06:00 in New York (10:00 UTC in summer) waits until 08:00 New York, 12:00 UTC."""
    verdict = check(NEW_YORK, datetime(2026, 6, 1, 10, 0, tzinfo=UTC), "UTC")
    assert not verdict.send_now
    assert verdict.next_open == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_after_nine_pm_waits_for_the_next_morning():
    """22:30 in Los Angeles waits until 08:00 the next day there (15:00 UTC in summer)."""
    verdict = check(LOS_ANGELES, datetime(2026, 6, 2, 5, 30, tzinfo=UTC), "UTC")
    assert verdict.next_open == datetime(2026, 6, 2, 15, 0, tzinfo=UTC)


def test_a_number_with_many_zones_gets_the_window_they_all_share():
    """A toll-free number spans US zones: 08:00 on the west coast is the earliest all are awake."""
    assert len(zones_for(TOLL_FREE)) > 3
    verdict = check(TOLL_FREE, datetime(2026, 6, 1, 13, 0, tzinfo=UTC), "UTC")  # 06:00 in Los Angeles
    assert not verdict.send_now
    opening = verdict.next_open
    assert opening is not None and opening > datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    for zone in zones_for(TOLL_FREE):
        from zoneinfo import ZoneInfo

        local = opening.astimezone(ZoneInfo(zone)).time()
        assert time(8) <= local < time(21), zone


def test_an_unknown_zone_falls_back_to_the_team_zone_and_says_so():
    """A number whose zone is unknown uses the team's zone, flagged so the campaign can count it."""
    verdict = check("+80012345678", datetime(2026, 6, 1, 3, 0, tzinfo=UTC), "Europe/Paris")
    assert verdict.team_zone_used
    assert verdict.next_open == datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # 08:00 in Paris (CEST)


def test_a_window_across_midnight():
    """A night-shift window 22:00-06:00 contains 23:00 and 05:00, not noon."""
    window = Window(time(22), time(6))
    assert check(LONDON, datetime(2026, 1, 5, 23, 0, tzinfo=UTC), "UTC", window).send_now
    assert check(LONDON, datetime(2026, 1, 5, 5, 0, tzinfo=UTC), "UTC", window).send_now
    assert not check(LONDON, datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "UTC", window).send_now
