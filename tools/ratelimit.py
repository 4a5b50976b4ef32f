"""Client-side rate control for bulk model calls: smooth pacing, adaptive concurrency and backoff.

The engine wraps every model call of a job in one shared `RateController`::

    async with controller.slot(estimated_tokens=600) as slot:
        response = await call_model(...)
        slot.success(response.headers, used_tokens=response.usage.total_tokens)
        # or, when the call failed: slot.failure(ModelCallError(..., kind=ErrorKind.rate_limited))

and retries a failed call after `Backoff.should_retry(error, attempt)` seconds. The controller, not each
call, owns the pace of the whole job, so retries of many calls cannot stampede (see ../STACK.md: per-call SDK
retries lost up to 61% of a bulk job to final 429s, and a fixed-rate limiter ran at 0.80 of the ceiling).

How a slot is granted, in order:

1. a concurrency slot under the current adaptive limit (AIMD: halved on a fresh 429, +1 after a window of
   successes, between 1 and `max_concurrency`); a 429 whose `x-ratelimit-remaining-*` headers still report
   room for every request in flight is not taken as a sign of our pace (it is only retried with backoff);
2. the end of the shared cooldown that a 429 starts (the server's `retry_after`, or a jittered backoff);
3. one request from a token bucket refilled continuously at `rpm` (and the estimated tokens from one at
   `tpm`), with a burst allowance of `burst_seconds` of the rate.

The `x-ratelimit-*` headers of successful replies adjust the refill rates: when a server says little is left,
the rate drops to the remaining budget spread over the reset time plus the refill its per-minute limit
implies; when it says plenty is left, the configured rates apply again.

Everything here is pure asyncio with an injectable clock and sleep, so tests can run it on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

from pydantic import BaseModel, ConfigDict, Field

from tools.errors import ErrorKind, ModelCallError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Failure kinds that mean "too fast": they shrink the concurrency limit and start a shared cooldown.
CONGESTION_KINDS = frozenset({ErrorKind.rate_limited})

_EPSILON = 1e-9


class RateLimits(BaseModel):
    """The budget of one endpoint: requests and tokens per minute, and requests in flight at most."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: float = Field(gt=0, description="Requests per minute the endpoint allows.")
    tpm: float | None = Field(
        default=None, gt=0, description="Tokens per minute, when the endpoint limits them."
    )
    max_concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at most.")
    burst_seconds: float = Field(
        default=0.1, gt=0, le=60, description="Burst allowance: this many seconds of the rate may go at once."
    )


# ---------------------------------------------------------------------------------------------- buckets


class TokenBucket:
    """A budget refilled continuously at `rate` per second up to `capacity`.

    `take` may drive the level below zero (a request larger than the bucket, or a token estimate that was
    too low); the debt is paid back by refill before anything else is admitted.
    """

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._updated = now

    def refill(self, now: float) -> float:
        """Bring the level up to `now` and return it."""
        if now > self._updated:
            self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
            self._updated = now
        return self.level

    def wait_time(self, amount: float, now: float) -> float:
        """Return the seconds until `amount` (at most the capacity) is available; 0 when it is now."""
        need = min(amount, self.capacity)
        level = self.refill(now)
        return 0.0 if level >= need - _EPSILON else (need - level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Spend `amount` (the level may go negative)."""
        self.refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return `amount` (negative to charge more), never above the capacity."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def set_rate(self, rate: float, now: float) -> None:
        """Change the refill rate from `now` on."""
        self.refill(now)
        self.rate = rate

    def seconds_to_full(self, now: float) -> float:
        """Return the seconds until the bucket is full again."""
        return max(0.0, self.capacity - self.refill(now)) / self.rate


# ---------------------------------------------------------------------------------------------- headers

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Parse an OpenAI reset duration ('20ms', '1s', '6m0s', '1h2m3.5s', or plain seconds) into seconds."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        position = match.end()
    return total if position == len(text) else None


def _finite_number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Return the server's retry hint in seconds from `retry-after-ms` or `retry-after` (seconds or a date)."""
    lowered = _lower_keys(headers)
    milliseconds = _finite_number(lowered.get("retry-after-ms"))
    if milliseconds is not None and milliseconds >= 0:
        return milliseconds / 1000
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HeaderBudget(BaseModel):
    """One `x-ratelimit-*` triple (requests or tokens) read from a reply."""

    model_config = ConfigDict(frozen=True)

    limit: float
    remaining: float
    reset_seconds: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], resource: str) -> HeaderBudget | None:
        """Read `x-ratelimit-{limit,remaining,reset}-{resource}`; None when one is missing or unreadable."""
        lowered = _lower_keys(headers)
        raw = [lowered.get(f"x-ratelimit-{part}-{resource}") for part in ("limit", "remaining", "reset")]
        if any(value is None for value in raw):
            return None
        limit_text, remaining_text, reset_text = (str(value) for value in raw)
        try:
            limit, remaining = float(limit_text), float(remaining_text)
        except ValueError:
            return None
        reset = parse_duration(reset_text)
        if reset is None or limit <= 0 or remaining < 0:
            return None
        return cls(limit=limit, remaining=remaining, reset_seconds=reset)

    def sustainable_rate(self) -> float:
        """Per second: what is left spread over the reset time, plus the refill a per-minute limit implies."""
        return self.remaining / max(self.reset_seconds, 0.05) + self.limit / 60


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(key).lower(): str(value) for key, value in headers.items()}


# ---------------------------------------------------------------------------------------------- backoff


class Backoff:
    """Retry policy: full-jitter exponential delays that honour the server's `retry_after` hint.

    `attempt` counts the calls made so far (1 after the first failure). Non-retryable kinds (bad_request,
    auth, invalid_output, ...) and hints longer than `max_retry_after` (a daily quota, not a pause) give up.
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        cap: float = 30.0,
        max_attempts: int = 8,
        retry_after_jitter: float = 0.1,
        max_retry_after: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base or max_attempts < 1:
            raise ValueError("Backoff needs base > 0, cap >= base and max_attempts >= 1")
        self.base = base
        self.cap = cap
        self.max_attempts = max_attempts
        self.retry_after_jitter = retry_after_jitter
        self.max_retry_after = max_retry_after
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Return a full-jitter delay for `attempt`: uniform in [0, min(cap, base * 2**(attempt - 1))]."""
        ceiling = min(self.cap, self.base * 2 ** max(0, min(attempt - 1, 62)))
        return self._rng.uniform(0.0, ceiling)

    def after_hint(self, retry_after: float) -> float:
        """Return the server's hint plus a small jitter, so waiting callers do not all return at once."""
        return retry_after + self._rng.uniform(0.0, max(0.05, self.retry_after_jitter * retry_after))

    def should_retry(self, error: ModelCallError, attempt: int) -> float | None:
        """Return the seconds to wait before trying again, or None to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return self.after_hint(error.retry_after)
        return self.delay(attempt)


# ---------------------------------------------------------------------------------------------- controller


class RateStats(BaseModel):
    """A snapshot of a controller: its adaptive limits, what it admitted and how often it paused."""

    model_config = ConfigDict(frozen=True)

    concurrency_limit: int
    max_concurrency: int
    in_flight: int
    peak_in_flight: int
    admitted: int
    succeeded: int
    failed: int
    failures: dict[str, int]
    rate_limited: int
    decreases: int
    spurious_429s: int = Field(
        default=0, description="429s that came with a healthy budget in their headers."
    )
    cooldowns: int
    cooldown_seconds: float = Field(description="Total length of the cooldowns started.")
    cooldown_remaining: float
    configured_rpm: float
    current_rpm: float = Field(description="The request refill rate now, per minute (headers may lower it).")
    current_tpm: float | None
    achieved_rpm: float = Field(description="Admissions per minute since the first one.")


class Slot:
    """The right to make one request; report its outcome once with `success` or `failure`."""

    def __init__(self, controller: RateController, *, estimated_tokens: int, issued_at: float) -> None:
        self._controller = controller
        self.estimated_tokens = estimated_tokens
        self.issued_at = issued_at
        self.reported = False
        self._released = False

    def success(self, headers: Mapping[str, str] | None = None, used_tokens: int | None = None) -> None:
        """Report a reply; `headers` feed the pacing, `used_tokens` corrects the token estimate."""
        if self._report():
            self._controller._on_success(self, headers or {}, used_tokens)

    def failure(self, error: ModelCallError) -> None:
        """Report a failed call; a 429 shrinks the concurrency limit and pauses every new request."""
        if self._report():
            self._controller._on_failure(self, error)

    def _report(self) -> bool:
        if self.reported:
            return False
        self.reported = True
        self._release()
        return True

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._controller._release()


class _SlotContext:
    def __init__(self, controller: RateController, estimated_tokens: int) -> None:
        self._controller = controller
        self._estimated_tokens = estimated_tokens
        self._slot: Slot | None = None

    async def __aenter__(self) -> Slot:
        self._slot = await self._controller._acquire(self._estimated_tokens)
        return self._slot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        slot = self._slot
        if slot is None:
            return
        if not slot.reported and isinstance(exc, ModelCallError):
            slot.failure(exc)
        # Otherwise (cancelled, an unexpected bug, or nothing reported) only free the slot.
        slot._release()


class RateController:
    """Admit model calls of one job at a pace and concurrency the endpoint can take; adapt to 429s."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        backoff: Backoff | None = None,
        decrease_factor: float = 0.5,
        low_remaining_fraction: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        self.limits = limits
        self.backoff = backoff or Backoff()
        self._decrease_factor = decrease_factor
        self._low_remaining_fraction = low_remaining_fraction
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = _Pace(limits.rpm / 60, limits.burst_seconds, now)
        self._tokens = _Pace(limits.tpm / 60, limits.burst_seconds, now) if limits.tpm else None
        self._limit = limits.max_concurrency
        self._in_flight = 0
        self._peak_in_flight = 0
        self._successes_since_increase = 0
        self._last_decrease_at = -math.inf
        self._consecutive_congestion = 0
        self._cooldown_until = -math.inf
        self._admission = asyncio.Lock()
        self._capacity_freed = asyncio.Event()
        self._first_admission: float | None = None
        self._admitted = 0
        self._succeeded = 0
        self._failures: Counter[str] = Counter()
        self._decreases = 0
        self._spurious_429s = 0
        self._cooldowns = 0
        self._cooldown_seconds = 0.0

    def slot(self, estimated_tokens: int = 0) -> _SlotContext:
        """Wait for the right to make one request of about `estimated_tokens` (prompt + max completion)."""
        return _SlotContext(self, max(0, estimated_tokens))

    @property
    def concurrency_limit(self) -> int:
        """The current adaptive limit on requests in flight."""
        return self._limit

    def stats(self) -> RateStats:
        """Return a snapshot of the limits, counters and cooldowns."""
        now = self._clock()
        elapsed = now - self._first_admission if self._first_admission is not None else 0.0
        return RateStats(
            concurrency_limit=self._limit,
            max_concurrency=self.limits.max_concurrency,
            in_flight=self._in_flight,
            peak_in_flight=self._peak_in_flight,
            admitted=self._admitted,
            succeeded=self._succeeded,
            failed=sum(self._failures.values()),
            failures=dict(self._failures),
            rate_limited=self._failures[ErrorKind.rate_limited.value],
            decreases=self._decreases,
            spurious_429s=self._spurious_429s,
            cooldowns=self._cooldowns,
            cooldown_seconds=self._cooldown_seconds,
            cooldown_remaining=max(0.0, self._cooldown_until - now),
            configured_rpm=self.limits.rpm,
            current_rpm=self._requests.bucket.rate * 60,
            current_tpm=self._tokens.bucket.rate * 60 if self._tokens else None,
            achieved_rpm=self._admitted / elapsed * 60 if elapsed > 0 else 0.0,
        )

    # ------------------------------------------------------------------ admission

    async def _acquire(self, estimated_tokens: int) -> Slot:
        # One waiter at a time, in arrival order: the first in line gets the next free budget.
        async with self._admission:
            while True:
                if self._in_flight >= self._limit:
                    self._capacity_freed.clear()
                    await self._capacity_freed.wait()
                    continue
                now = self._clock()
                wait = max(
                    self._cooldown_until - now,
                    self._requests.wait_time(1, now),
                    self._tokens.wait_time(estimated_tokens, now) if self._tokens else 0.0,
                )
                if wait <= 0:
                    break
                await self._sleep(wait)
            now = self._clock()
            self._requests.bucket.take(1, now)
            if self._tokens:
                self._tokens.bucket.take(estimated_tokens, now)
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._admitted += 1
            if self._first_admission is None:
                self._first_admission = now
            return Slot(self, estimated_tokens=estimated_tokens, issued_at=now)

    def _release(self) -> None:
        self._in_flight -= 1
        self._capacity_freed.set()

    # ------------------------------------------------------------------ feedback

    def _on_success(self, slot: Slot, headers: Mapping[str, str], used_tokens: int | None) -> None:
        now = self._clock()
        self._succeeded += 1
        self._consecutive_congestion = 0
        if self._tokens and used_tokens is not None:
            self._tokens.bucket.give_back(slot.estimated_tokens - used_tokens, now)
        self._requests.adjust(
            HeaderBudget.from_headers(headers, "requests"), self._low_remaining_fraction, now
        )
        if self._tokens:
            self._tokens.adjust(
                HeaderBudget.from_headers(headers, "tokens"), self._low_remaining_fraction, now
            )
        # Additive increase: one more slot after a window's worth (the current limit) of successes.
        if self._limit < self.limits.max_concurrency:
            self._successes_since_increase += 1
            if self._successes_since_increase >= self._limit:
                self._limit += 1
                self._successes_since_increase = 0
                self._capacity_freed.set()

    def _budget_left(self, headers: Mapping[str, str], estimated_tokens: int) -> bool:
        """Whether a refusal's headers report room for every request we have in flight (and their tokens)."""
        requests = HeaderBudget.from_headers(headers, "requests")
        if requests is None or requests.remaining < max(1, self._in_flight):
            return False
        tokens = HeaderBudget.from_headers(headers, "tokens")
        return tokens is None or tokens.remaining >= max(1, estimated_tokens * self._in_flight)

    def _on_failure(self, slot: Slot, error: ModelCallError) -> None:
        now = self._clock()
        self._failures[error.kind.value] += 1
        if error.kind not in CONGESTION_KINDS:
            return
        if self._budget_left(error.headers or {}, slot.estimated_tokens):
            # The server refused while reporting plenty of budget left (overload elsewhere, a burst limit, a
            # fault): not our pace's fault, so the request is retried with backoff and the pace is kept.
            self._spurious_429s += 1
            return
        # Requests sent before the last decrease saw the old, too-high pace: their 429s are the same signal,
        # so they may extend the pause to the server's hint but not shrink the limit again.
        fresh = slot.issued_at > self._last_decrease_at
        if fresh:
            self._limit = max(1, math.floor(self._limit * self._decrease_factor))
            self._last_decrease_at = now
            self._successes_since_increase = 0
            self._decreases += 1
            self._consecutive_congestion += 1
        if error.retry_after is not None:
            pause = self.backoff.after_hint(error.retry_after)
        elif fresh:
            pause = self.backoff.delay(self._consecutive_congestion)
        else:
            return
        until = now + pause
        if until > self._cooldown_until:
            self._cooldowns += 1
            self._cooldown_seconds += until - max(now, self._cooldown_until)
            self._cooldown_until = until


class _Pace:
    """A token bucket at a configured rate, which server headers may lower for a while."""

    def __init__(self, rate: float, burst_seconds: float, now: float) -> None:
        self.configured_rate = rate
        self.bucket = TokenBucket(rate=rate, capacity=max(1.0, rate * burst_seconds), now=now)
        self._cap_until = -math.inf

    def wait_time(self, amount: float, now: float) -> float:
        if now >= self._cap_until and self.bucket.rate != self.configured_rate:
            self.bucket.set_rate(self.configured_rate, now)
        return self.bucket.wait_time(amount, now)

    def adjust(self, budget: HeaderBudget | None, low_fraction: float, now: float) -> None:
        """Cap the rate while the server reports little left; lift the cap when it reports plenty."""
        if budget is None:
            return
        if budget.remaining < low_fraction * budget.limit:
            self.bucket.set_rate(min(self.configured_rate, budget.sustainable_rate()), now)
            self._cap_until = now + max(budget.reset_seconds, 1.0)
        elif self.bucket.rate != self.configured_rate:
            self.bucket.set_rate(self.configured_rate, now)
            self._cap_until = -math.inf
