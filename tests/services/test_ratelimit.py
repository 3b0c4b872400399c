"""The shared send rate: GCRA arithmetic with a fixed clock, and the Redis script that applies it."""

import pytest

from webapp.services.ratelimit import RateLimiter, decide

SECOND = 1_000_000


def _run(per_second: float, burst: int, times_us: list[int]) -> list[bool]:
    tat, granted = None, []
    for now in times_us:
        decision = decide(tat, now, per_second, burst)
        tat = decision.tat_us
        granted.append(decision.granted)
    return granted


def test_a_burst_goes_at_once_then_the_rate_holds():
    """With burst 5 at 10/s, five go at t=0 and the sixth waits 100 ms."""
    assert _run(10, 5, [0] * 6) == [True] * 5 + [False]
    decision = decide(decide(None, 0, 10, 1).tat_us, 0, 10, 1)
    assert not decision.granted and decision.wait_seconds == pytest.approx(0.1)


def test_a_steady_stream_at_the_rate_is_never_refused():
    """Requests exactly one interval apart are all granted, for a minute."""
    assert all(_run(50, 1, [i * SECOND // 50 for i in range(3000)]))


def test_a_flood_gets_exactly_the_rate_over_a_minute():
    """Asking every millisecond for 60 s at 100/s grants 6,000 plus the burst, no more."""
    granted = sum(_run(100, 10, [i * 1000 for i in range(60_000)]))
    assert 6000 <= granted <= 6000 + 10


def test_idle_time_does_not_bank_more_than_the_burst():
    """After an hour of silence only `burst` messages go at once."""
    tat = decide(None, 0, 10, 3).tat_us
    granted = []
    for _ in range(5):
        decision = decide(tat, 3600 * SECOND, 10, 3)
        tat = decision.tat_us
        granted.append(decision.granted)
    assert granted == [True, True, True, False, False]


def test_the_redis_script_applies_the_same_rule(app):
    """Against a real Redis: a burst of 3 at 1/s grants three, refuses the fourth with a wait near 1 s."""
    from webapp.queues import redis_connection

    with app.app_context():
        limiter = RateLimiter(redis_connection(), per_second=1, burst=3)
        results = [limiter.take("team:1") for _ in range(4)]
        assert [granted for granted, _ in results] == [True, True, True, False]
        assert 0 < results[-1][1] <= 1.0
        other = RateLimiter(redis_connection(), per_second=1, burst=3)
        assert other.take("team:2")[0], "each key has its own bucket"


def test_a_refused_request_takes_nothing(app):
    """Refusals do not push the next slot further away (no self-inflicted starvation)."""
    from webapp.queues import redis_connection

    with app.app_context():
        limiter = RateLimiter(redis_connection(), per_second=2, burst=1)
        assert limiter.take("k")[0]
        waits = [limiter.take("k")[1] for _ in range(20)]
        assert all(0 < wait <= 0.5 for wait in waits)
