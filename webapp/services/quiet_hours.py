"""Quiet hours: no marketing message outside the sending window in the recipient's local time.

The zone comes from the number (phonenumbers' time zones). A number with several zones (a US
toll-free number maps to dozens) may only be sent to when every one of them is inside the window;
where the zones share no moment, or the number's zone is unknown, the team's zone decides and the
caller is told so it can count those recipients (DOMAIN.md §3, §7).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_timezones

UNKNOWN_ZONE = "Etc/Unknown"
SEARCH_DAYS = 3  # a shared window, if there is one, opens within this many days


@dataclass(frozen=True)
class Window:
    start: time = time(8, 0)
    end: time = time(21, 0)

    def contains(self, moment: datetime, zone: ZoneInfo) -> bool:
        local = moment.astimezone(zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # a window across midnight


@dataclass(frozen=True)
class Verdict:
    send_now: bool
    next_open: datetime | None  # UTC, when send_now is False
    team_zone_used: bool  # the number's own zones were unknown or shared no window


@lru_cache(maxsize=4096)
def zones_for(phone: str) -> tuple[str, ...]:
    """The IANA zones of an E.164 number; empty when unknown."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ()
    return tuple(zone for zone in number_timezones.time_zones_for_number(number) if zone != UNKNOWN_ZONE)


@lru_cache(maxsize=1024)
def _zone_infos(names: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    infos = []
    for name in names:
        try:
            infos.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return tuple(infos)


def _next_shared_opening(zones: tuple[ZoneInfo, ...], window: Window, now: datetime) -> datetime | None:
    """The first moment at or after now when every zone is inside the window; None if none within SEARCH_DAYS."""
    if all(window.contains(now, zone) for zone in zones):
        return now
    candidates = []
    for zone in zones:
        local_day = now.astimezone(zone).date()
        for offset in range(SEARCH_DAYS + 1):
            opening = datetime.combine(local_day + timedelta(days=offset), window.start, zone).astimezone(UTC)
            if opening > now:
                candidates.append(opening)
    for moment in sorted(candidates):
        if all(window.contains(moment, zone) for zone in zones):
            return moment
    return None


def check(phone: str, now: datetime, team_zone: str, window: Window = Window()) -> Verdict:
    """May this number be sent to at `now` (aware, UTC)? If not, when does its window open?"""
    zones = _zone_infos(zones_for(phone))
    team_zone_used = False
    opening = _next_shared_opening(zones, window, now) if zones else None
    if opening is None:
        team_zone_used = True
        opening = _next_shared_opening(_zone_infos((team_zone,)) or (ZoneInfo("UTC"),), window, now)
    if opening == now:
        return Verdict(True, None, team_zone_used)
    return Verdict(False, opening, team_zone_used)
