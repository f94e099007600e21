"""Errors a caller of mailqueue can catch; each message says what to do about it."""

from __future__ import annotations


class MailQueueError(Exception):
    """Base class of every error raised on purpose by mailqueue."""


class RedisUnavailableError(MailQueueError):
    """Redis cannot be reached, or the configured URL is malformed."""


class RedisNotAnsweringError(RedisUnavailableError):
    """The Redis of REDIS_URL does not answer (yet): refused, unreachable, timed out or loading.

    Worth waiting for (a container started before its Redis); `reason` is the cause on one line.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class RedisBinaryNotFoundError(RedisUnavailableError):
    """No Redis was configured or running, and no redis-server binary exists to start one."""


class UnknownQueueError(MailQueueError):
    """The named queue does not exist under the prefix."""


class JobNotFoundError(MailQueueError):
    """No job with that id in that queue."""


class InvalidJobOptionsError(MailQueueError, ValueError):
    """Job options that BullMQ would reject or misread."""


class InvalidScheduleError(MailQueueError, ValueError):
    """A cron pattern or interval that cannot be scheduled."""


class InvalidFlowError(MailQueueError, ValueError):
    """A flow definition of the wrong shape."""


class UnknownJobNameError(MailQueueError):
    """A worker received a job whose name no handler is registered for."""


class RedisFullError(MailQueueError):
    """Redis is at its `maxmemory` and refuses writes (policy `noeviction`): no job was added."""


class JobStateError(MailQueueError):
    """The job is in a state the operation does not apply to (a delay change of a job that is
    not delayed): the message names its state."""
