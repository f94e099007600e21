"""A circuit breaker per SMTP transport: a worker whose server is unreachable stops taking jobs.

Without it, a worker with a wrong or dead SMTP_URL took jobs as fast as the others, failed
each in a millisecond (connection refused) and spent its attempts: one broken worker out of
two failed ~10% of a queue for good (issue 11, point 8).

- closed (normal): connections are made; a success resets the count.
- `threshold` consecutive connection failures (refused, DNS, TLS handshake, timeout
  connecting — never a reply about one message) open it. While open, a send raises
  `TransportDownError` at once, without connecting: the job is put back without spending
  an attempt, and the worker, which waits on this breaker as a gate (mailqueue.worker_gates),
  takes no job.
- after the open period (1 s, doubling up to 60 s) one probe connection is tried
  (half-open): success closes the breaker, failure opens it again for twice as long. The
  probe runs on a timer of the breaker's own, so no job is spent on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from mailqueue.mail.errors import TransportDownError

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half-open"]
DEFAULT_THRESHOLD = 3
DEFAULT_FIRST_DELAY_S = 1.0
DEFAULT_MAX_DELAY_S = 60.0
# A job a down transport hands back waits this long before any worker takes it again: long
# enough not to spin between workers that are all down, short for a worker that can send.
PUT_BACK_MS = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


class CircuitBreaker:
    """Counts connection failures of one transport; opens, probes and closes (see above).

    `probe` opens one connection and closes it, raising when it cannot. `target` names what
    is protected (the redacted SMTP URL) in messages and on the dashboard.
    """

    def __init__(self, probe: Callable[[], Awaitable[None]], target: str, *,
                 threshold: int = DEFAULT_THRESHOLD, first_delay_s: float = DEFAULT_FIRST_DELAY_S,
                 max_delay_s: float = DEFAULT_MAX_DELAY_S) -> None:
        self._probe = probe
        self.target = target
        self.threshold = threshold
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.state: State = "closed"
        self.failures = 0  # consecutive connection failures
        self.error = ""  # the last one
        self.since_ms: int | None = None  # down since (first failure of this outage)
        self.next_try_ms: int | None = None  # when the next probe runs
        self.probes = 0
        self.version = 0  # one more at every state change
        self._delay_s = first_delay_s
        self._closed = asyncio.Event()
        self._closed.set()
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._probing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.target}, {self.state}, failures={self.failures})"

    # --- What a worker's gate needs (mailqueue.worker_gates.WorkerGate) ----------------------

    @property
    def blocked(self) -> bool:
        return self.state != "closed"

    async def wait_open(self) -> None:
        """Until the breaker is closed again (the gate lets jobs through). Cancel-safe."""
        await self._closed.wait()

    async def wait_changed(self, seen: int) -> None:
        """Until the state is newer than version `seen` (a change while the caller was busy
        publishing the previous one is not missed)."""
        while self.version == seen:
            await self._changed.wait()

    def describe(self) -> dict[str, str]:
        """What the dashboard and /health show, as strings (a Redis hash)."""
        return {
            "kind": "smtp", "state": self.state, "target": self.target,
            "failures": str(self.failures), "error": self.error,
            "since_ms": str(self.since_ms or ""), "next_try_ms": str(self.next_try_ms or ""),
            "probes": str(self.probes),
        }

    # --- The transport's side -----------------------------------------------------------------

    def check(self) -> None:
        """Raise TransportDownError unless connections may be tried."""
        if self.state != "closed":
            raise self.down_error()

    def down_error(self) -> TransportDownError:
        wait_s = max(0, (self.next_try_ms or 0) - _now_ms()) / 1000
        return TransportDownError(
            f"SMTP server {self.target} is down ({self.failures} connection failure(s), the "
            f"last: {self.error}); next try in {wait_s:.0f} s",
            gate=self, retry_in_ms=PUT_BACK_MS,
        )

    def success(self) -> None:
        if self.state == "closed":
            self.failures = 0
            return
        self._close()

    def failure(self, error: BaseException | str) -> bool:
        """Count one connection failure; True if the breaker is (now) open."""
        self.failures += 1
        self.error = str(error)
        if self.since_ms is None:
            self.since_ms = _now_ms()
        if self.state == "closed" and self.failures >= self.threshold:
            self._open(self.first_delay_s)
            log.warning("%s: %d connection failures in a row (%s); not taking jobs for %.0f s",
                        self.target, self.failures, self.error, self._delay_s)
        return self.state != "closed"

    def close(self) -> None:
        """Stop the timer and any probe (the transport is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._probing is not None:
            self._probing.cancel()
        self._probing = None

    # --- Inside -------------------------------------------------------------------------------

    def _open(self, delay_s: float) -> None:
        self.state = "open"
        self._delay_s = delay_s
        self.next_try_ms = _now_ms() + int(delay_s * 1000)
        self._closed.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._start_probe)
        self._notify()

    def _close(self) -> None:
        if self.state != "closed":
            log.warning("%s: reachable again after %d failure(s); taking jobs", self.target,
                        self.failures)
        self.state = "closed"
        self.failures = 0
        self.since_ms = self.next_try_ms = None
        self._delay_s = self.first_delay_s
        self.close()
        self._closed.set()
        self._notify()

    def _notify(self) -> None:
        # Wake whoever waits for a change, then arm a fresh event for the next one.
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _start_probe(self) -> None:
        self._timer = None
        if self.state != "open":
            return
        self.state = "half-open"
        self._notify()
        self._probing = asyncio.ensure_future(self._run_probe())

    async def _run_probe(self) -> None:
        self.probes += 1
        try:
            await self._probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            self.error = str(exc)
            self._probing = None
            self._open(min(self._delay_s * 2, self.max_delay_s))
            return
        self._probing = None
        self._close()

