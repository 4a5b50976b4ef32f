"""Tests of tools/ratelimit.py: buckets, header parsing, backoff, pacing, AIMD concurrency and cooldowns.

Single-task tests run the controller on a fake clock whose `sleep` moves time forward; tests with many
tasks use the real loop with short times and assert only bounds that load cannot break.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from tools.errors import ErrorKind, ModelCallError
from tools.ratelimit import (
    Backoff,
    HeaderBudget,
    RateController,
    RateLimits,
    TokenBucket,
    parse_duration,
    retry_after_from_headers,
)


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it (one task at a time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def rate_limited(retry_after: float | None = None) -> ModelCallError:
    return ModelCallError("429", kind=ErrorKind.rate_limited, retry_after=retry_after, status_code=429)


def controller_on(clock: FakeClock, **limits: float) -> RateController:
    return RateController(
        RateLimits(**limits),
        backoff=Backoff(rng=random.Random(0)),
        clock=clock,
        sleep=clock.sleep,
    )


# ------------------------------------------------------------------------------------------- pieces


def test_token_bucket_refills_caps_and_allows_debt() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0)
    assert bucket.wait_time(5, 0) == 0
    bucket.take(5, 0)
    assert bucket.wait_time(1, 0) == pytest.approx(0.1)
    assert bucket.refill(0.3) == pytest.approx(3)
    assert bucket.refill(100) == 5  # never above the capacity
    bucket.take(12, 100)  # larger than the bucket: admitted once full, paid back later
    assert bucket.level == -7 and bucket.wait_time(1, 100) == pytest.approx(0.8)
    assert bucket.wait_time(50, 101) == pytest.approx(0.2)  # waits for a full bucket, not for 50
    bucket.give_back(100, 200)
    assert bucket.level == 5 and bucket.seconds_to_full(200) == 0
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1, now=0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("7.66s", 7.66),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1s garbage", "m5"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_retry_after_from_headers() -> None:
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after_from_headers({"retry-after": later}) == pytest.approx(30, abs=2)
    assert retry_after_from_headers({"retry-after": "whenever"}) is None
    assert retry_after_from_headers({}) is None


def test_header_budget() -> None:
    headers = {
        "x-ratelimit-limit-requests": "3000",
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "2s",
    }
    budget = HeaderBudget.from_headers(headers, "requests")
    assert budget == HeaderBudget(limit=3000, remaining=12, reset_seconds=2)
    assert budget.sustainable_rate() == pytest.approx(12 / 2 + 50)
    assert HeaderBudget.from_headers(headers, "tokens") is None
    assert HeaderBudget.from_headers({**headers, "x-ratelimit-reset-requests": "later"}, "requests") is None


def test_rate_limits_validate() -> None:
    assert RateLimits(rpm=60).max_concurrency == 16
    with pytest.raises(ValidationError):
        RateLimits(rpm=0)
    with pytest.raises(ValidationError):
        RateLimits(rpm=60, max_concurrency=0)


# ------------------------------------------------------------------------------------------- backoff


def test_backoff_delays_are_bounded_and_jittered() -> None:
    backoff = Backoff(base=0.5, cap=30, max_attempts=20, rng=random.Random(1))
    error = ModelCallError("boom", kind=ErrorKind.server_error)
    for attempt in range(1, 15):
        delays = [backoff.should_retry(error, attempt) for _ in range(50)]
        ceiling = min(30, 0.5 * 2 ** (attempt - 1))
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 40  # full jitter: no two callers wait the same
    assert max(backoff.delay(40) for _ in range(200)) > 25  # the cap, not a tiny number, bounds late attempts


def test_backoff_honours_retry_after_and_gives_up() -> None:
    backoff = Backoff(max_attempts=3, rng=random.Random(2))
    hinted = [backoff.should_retry(rate_limited(2.0), 1) for _ in range(100)]
    assert all(h is not None and 2.0 <= h <= 2.2 for h in hinted) and len(set(hinted)) > 90
    assert backoff.should_retry(rate_limited(0.02), 1) is not None
    assert backoff.should_retry(rate_limited(2.0), 3) is None  # out of attempts
    assert backoff.should_retry(rate_limited(3600), 1) is None  # a quota, not a pause
    for kind in (ErrorKind.bad_request, ErrorKind.auth, ErrorKind.invalid_output, ErrorKind.cancelled):
        assert backoff.should_retry(ModelCallError("no", kind=kind, retry_after=1), 1) is None
    for kind in (ErrorKind.timeout, ErrorKind.connection, ErrorKind.server_error):
        assert backoff.should_retry(ModelCallError("again", kind=kind), 1) is not None


# ------------------------------------------------------------------------------------------- pacing (fake clock)


async def test_pacing_keeps_to_the_rpm_over_any_window() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=600, burst_seconds=0.3)  # 10/s, a burst of 3
    admitted = []
    for _ in range(60):
        async with controller.slot() as slot:
            admitted.append(clock())
            slot.success()
    assert admitted[2] == admitted[0]  # the burst
    elapsed = admitted[-1] - admitted[0]
    assert elapsed == pytest.approx((60 - 3) / 10)
    for window in (0.5, 1.0, 3.0):
        most = max(sum(1 for t in admitted if start <= t < start + window) for start in admitted)
        assert most <= 3 + 10 * window
    assert controller.stats().achieved_rpm == pytest.approx(60 / elapsed * 60, rel=0.01)


async def test_token_budget_paces_big_requests_and_corrects_estimates() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000, tpm=60_000, burst_seconds=1)  # 1,000 tokens/s
    async with controller.slot(estimated_tokens=1000) as slot:
        slot.success(used_tokens=200)  # 800 come back
    start = clock()
    async with controller.slot(estimated_tokens=1000) as slot:
        slot.success(used_tokens=1000)
    assert clock() - start == pytest.approx(0.2)
    async with controller.slot(estimated_tokens=5000) as slot:  # bigger than the bucket: waits for a full one
        slot.success()
    start = clock()
    async with controller.slot(estimated_tokens=100) as slot:  # then pays the 4,000-token debt
        slot.success()
    assert clock() - start == pytest.approx(4.1)


async def test_low_remaining_headers_slow_down_and_plenty_restores() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=6000)  # 100/s configured
    low = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "1s",
    }
    async with controller.slot() as slot:
        slot.success(low)
    assert controller.stats().current_rpm == pytest.approx(
        (5 / 1 + 10) * 60
    )  # spread 5 over 1 s + 10/s refill
    plenty = {**low, "x-ratelimit-remaining-requests": "590", "x-ratelimit-reset-requests": "100ms"}
    async with controller.slot() as slot:
        slot.success(plenty)
    assert controller.stats().current_rpm == 6000
    async with controller.slot() as slot:
        slot.success(low)
    clock.now += 5  # a cap expires after its reset time even without new headers
    async with controller.slot() as slot:
        slot.success()
    assert controller.stats().current_rpm == 6000


# ------------------------------------------------------------------------------------------- AIMD (fake clock)


async def test_429_halves_the_limit_pauses_everyone_and_recovers() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000, max_concurrency=8)
    async with controller.slot() as slot:
        slot.failure(rate_limited(retry_after=2.0))
    stats = controller.stats()
    assert stats.concurrency_limit == 4 and stats.cooldowns == 1
    assert 2.0 <= stats.cooldown_remaining <= 2.2
    before = clock()
    async with controller.slot() as slot:
        assert clock() - before >= 2.0  # the next request waited for the cooldown
        slot.success()
    successes = 1
    while controller.concurrency_limit < 8:
        async with controller.slot() as slot:
            slot.success()
        successes += 1
        assert successes < 100
    assert successes == 4 + 5 + 6 + 7  # +1 after a window (the current limit) of successes
    assert controller.stats().decreases == 1


async def test_a_429_with_budget_left_keeps_the_pace() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000, max_concurrency=8)
    budget = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "590",
        "x-ratelimit-reset-requests": "1s",
    }
    healthy = ModelCallError(
        "429", kind=ErrorKind.rate_limited, retry_after=1.0, status_code=429, headers=budget
    )
    async with controller.slot() as slot:
        slot.failure(healthy)
    stats = controller.stats()
    assert stats.concurrency_limit == 8 and stats.cooldowns == 0 and stats.spurious_429s == 1
    # The same refusal with the budget used up is congestion: halve and pause.
    spent = {**budget, "x-ratelimit-remaining-requests": "0"}
    async with controller.slot() as slot:
        slot.failure(
            ModelCallError(
                "429", kind=ErrorKind.rate_limited, retry_after=1.0, status_code=429, headers=spent
            )
        )
    stats = controller.stats()
    assert stats.concurrency_limit == 4 and stats.cooldowns == 1 and stats.decreases == 1


async def test_stale_429s_do_not_shrink_the_limit_again() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000, max_concurrency=16)
    contexts = [controller.slot() for _ in range(5)]
    slots = [await context.__aenter__() for context in contexts]  # five requests in flight at once
    for slot in slots:
        slot.failure(rate_limited(retry_after=0.5))
    for context in contexts:
        await context.__aexit__(None, None, None)
    assert controller.concurrency_limit == 8  # one signal, one halving
    async with controller.slot() as slot:  # sent after the decrease: a fresh signal
        slot.failure(rate_limited(retry_after=0.5))
    assert controller.concurrency_limit == 4
    for _ in range(4):
        async with controller.slot() as slot:
            slot.failure(rate_limited())
    assert controller.concurrency_limit == 1  # floor
    assert controller.stats().rate_limited == 10


async def test_cooldown_without_a_hint_uses_growing_backoff() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000)
    pauses = []
    for _ in range(6):
        async with controller.slot() as slot:
            slot.failure(rate_limited())
        pauses.append(controller.stats().cooldown_remaining)
    assert all(0 <= pause <= min(30, 0.5 * 2**n) for n, pause in enumerate(pauses))
    async with controller.slot() as slot:
        slot.success()
    async with controller.slot() as slot:  # a success resets the streak
        slot.failure(rate_limited())
    assert controller.stats().cooldown_remaining <= 0.5


async def test_other_failures_and_exceptions_only_free_the_slot() -> None:
    clock = FakeClock()
    controller = controller_on(clock, rpm=60_000, max_concurrency=4)
    async with controller.slot() as slot:
        slot.failure(ModelCallError("500", kind=ErrorKind.server_error))
    with pytest.raises(ModelCallError):
        async with controller.slot():
            raise rate_limited(retry_after=1)  # an unreported ModelCallError counts as the failure
    with pytest.raises(RuntimeError):
        async with controller.slot():
            raise RuntimeError("a bug")
    async with controller.slot():
        pass  # nothing reported
    stats = controller.stats()
    assert stats.in_flight == 0 and stats.failures == {"server_error": 1, "rate_limited": 1}
    assert stats.concurrency_limit == 2 and stats.admitted == 4


# ------------------------------------------------------------------------------------------- many tasks (real time)


async def test_concurrency_never_exceeds_the_limit_and_shrinks_on_429() -> None:
    controller = RateController(
        RateLimits(rpm=600_000, max_concurrency=6), backoff=Backoff(rng=random.Random(3))
    )
    seen: list[int] = []
    limit_after_429: list[int] = []

    async def call(number: int) -> None:
        async with controller.slot() as slot:
            in_flight = controller.stats().in_flight
            assert in_flight <= controller.concurrency_limit  # at admission, always under the current limit
            seen.append(in_flight)
            await asyncio.sleep(0.01)
            if number == 20:
                slot.failure(rate_limited(retry_after=0.05))
                limit_after_429.append(controller.concurrency_limit)
            else:
                slot.success()

    await asyncio.wait_for(asyncio.gather(*(call(n) for n in range(80))), timeout=10)
    stats = controller.stats()
    assert max(seen) == 6 and stats.peak_in_flight == 6
    assert limit_after_429 == [3] and stats.decreases == 1 and stats.cooldowns == 1
    assert stats.concurrency_limit == 6 and stats.in_flight == 0  # recovered by the end


async def test_real_time_pacing_with_many_waiters() -> None:
    controller = RateController(
        RateLimits(rpm=6000, max_concurrency=50, burst_seconds=0.05)
    )  # 100/s, burst 5
    admitted: list[float] = []

    async def call() -> None:
        async with controller.slot() as slot:
            admitted.append(time.monotonic())
            await asyncio.sleep(0.005)
            slot.success()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(40))), timeout=10)
    assert time.monotonic() - started >= (40 - 5) / 100 - 0.01
    admitted.sort()
    for window in (0.1, 0.2):
        most = max(sum(1 for t in admitted if start <= t < start + window) for start in admitted)
        assert most <= 5 + 100 * window + 1
