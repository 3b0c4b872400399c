"""The fuzz pass's settings, shared by the tests/*/test_*_fuzz.py modules: fixed in CI, longer on demand.

In CI (CI=true) every run tries the same examples (derandomize) and no example database is kept, so a
failure is reproducible and the pass takes a few seconds per module. At a desk the examples are random
and remembered in .hypothesis/; FUZZ_SCALE multiplies every test's example count for a long run:

    FUZZ_SCALE=50 .venv/bin/python -m pytest -q tests -k fuzz

Hypothesis's own deadline and its too-slow health check time one example against a fixed 200 ms,
which a busy CI machine misses for no fault of the code; each test asserts its own generous bound
with `bounded_time` instead, wide enough for a loaded core and far below what a quadratic or
unbounded loop on the inputs would take.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("fuzz-ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", **_COMMON)
settings.load_profile("fuzz-ci" if IN_CI else "fuzz")


def fuzz_settings(examples: int, **overrides) -> settings:
    """Settings for one fuzz test: `examples` tries in CI, FUZZ_SCALE times as many when asked."""
    return settings(max_examples=max(1, round(examples * SCALE)), **overrides)


@contextmanager
def bounded_time(seconds: float, what: str) -> Iterator[None]:
    """Fail when the block takes longer than `seconds` (wall clock): one example must never hang."""
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    assert elapsed < seconds, f"{what} took {elapsed:.2f} s (bound {seconds} s)"
