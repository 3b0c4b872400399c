"""A per-team send rate shared by every worker on every machine: GCRA in one Redis Lua script.

The generic cell rate algorithm keeps one number per key, the theoretical arrival time (TAT) of the
next message. A message may go when TAT - burst_window <= now; it then moves TAT on by one emission
interval. The script reads the clock from Redis TIME, so workers on machines whose clocks disagree
share one clock, and runs atomically, so two workers can never take the same slot.

`decide` is the same arithmetic in Python, with the clock passed in: the tests prove the rule with a
fixed clock, and the script is tested against it. `team_limiter` is a team's bucket, which its campaigns'
batches and its test sends share.
"""

from dataclasses import dataclass

from redis import Redis

# KEYS[1] = the bucket; ARGV = emission interval (µs), burst tolerance (µs), how many to take.
# Returns {granted (0/1), wait in µs until the request would be granted}.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * count
local allow_at = new_tat - tolerance - interval
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Decision:
    granted: bool
    wait_seconds: float  # until the same request would be granted; 0 when granted
    tat_us: int  # the bucket's state after the decision


def decide(tat_us: int | None, now_us: int, per_second: float, burst: int, count: int = 1) -> Decision:
    """The GCRA rule: may `count` messages go now at `per_second` with `burst` allowed at once?"""
    interval = round(1_000_000 / per_second)
    tolerance = interval * (max(burst, 1) - 1)  # how far ahead of now the TAT may run
    tat = max(tat_us if tat_us is not None else now_us, now_us)
    new_tat = tat + interval * count
    allow_at = new_tat - tolerance - interval
    if allow_at > now_us:
        return Decision(False, (allow_at - now_us) / 1_000_000, tat)
    return Decision(True, 0.0, new_tat)


class RateLimiter:
    """`take(key, n)` grants up to the configured rate across every process sharing this Redis."""

    def __init__(self, redis: Redis, per_second: float, burst: int = 1):
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}")
        self.redis = redis
        self.per_second = per_second
        self.burst = max(1, int(burst))
        self._script = redis.register_script(_GCRA)

    def take(self, key: str, count: int = 1) -> tuple[bool, float]:
        """(granted, seconds to wait before asking again); nothing is taken when refused."""
        interval = round(1_000_000 / self.per_second)
        granted, wait_us = self._script(keys=[f"ratelimit:{key}"], args=[interval, interval * (self.burst - 1), count])
        return bool(granted), int(wait_us) / 1_000_000


def team_limiter(team) -> RateLimiter:
    """The team's send rate (SEND_RATE_DEFAULT when empty) on the app's Redis, bursting up to SEND_CONCURRENCY."""
    from flask import current_app

    from webapp.queues import redis_connection

    rate = float(team.send_rate or current_app.config["SEND_RATE_DEFAULT"])
    burst = max(1, min(current_app.config["SEND_CONCURRENCY"], int(rate)))
    return RateLimiter(redis_connection(), rate, burst)
