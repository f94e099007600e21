"""Job option checks: what bullmq would accept silently is refused with a clear message."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.errors import InvalidJobOptionsError, MailQueueError
from mailqueue.job_options import (
    KNOWN_OPTIONS,
    merge_job_options,
    validate_job_options,
    validate_queue_name,
)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"attempts": 1, "delay": 0, "priority": 0},
        {"attempts": 5, "backoff": 1000},
        {"backoff": {"type": "exponential", "delay": 2000}},
        {"backoff": {"type": "fixed", "delay": 0}},
        {"jobId": "welcome-ada"},
        {"jobId": "007"},  # BullMQ only refuses ids that read back as the same integer
        {"jobId": "+5"},
        {"removeOnComplete": True, "removeOnFail": 100},
        {"removeOnComplete": {"age": 3600, "count": 10}},
        {"removeOnFail": {"count": 0}},
        {"priority": 2_097_152, "lifo": True, "keepLogs": 10, "stackTraceLimit": 5},
        {"priority": None, "delay": None},
        {"deduplication": {"id": "x"}},
    ],
)
def test_good_options_pass_unchanged(opts: dict[str, Any]) -> None:
    assert validate_job_options(opts) is opts


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ("attempts=3", "Job options must be a dict, not str"),
        ({"attempt": 3}, "Unknown job option(s): attempt; known: "),
        ({"retries": 1, "ttl": 5}, "Unknown job option(s): retries, ttl"),
        ({"attempts": 0}, "attempts must be an integer >= 1, not 0"),
        ({"attempts": "3"}, "attempts must be an integer >= 1, not '3'"),
        ({"attempts": True}, "attempts must be an integer >= 1, not True"),
        ({"attempts": 2.5}, "attempts must be an integer >= 1, not 2.5"),
        ({"delay": -1}, "delay must be an integer >= 0, not -1"),
        ({"priority": -1}, "priority must be an integer >= 0"),
        ({"priority": 2_097_153}, "priority must be <= 2097152"),
        ({"lifo": "yes"}, "lifo must be true or false"),
        ({"timestamp": -5}, "timestamp must be an integer >= 0"),
        ({"backoff": -1}, "backoff must be >= 0 ms"),
        ({"backoff": "exponential"}, "backoff must be ms or {type, delay}"),
        ({"backoff": {"type": "linear", "delay": 1}}, "backoff.type must be 'fixed' or"),
        ({"backoff": {"type": "fixed"}}, "backoff.delay must be ms >= 0, not None"),
        ({"backoff": {"type": "fixed", "delay": -1}}, "backoff.delay must be ms >= 0"),
        ({"backoff": {"type": "fixed", "dealy": 10}}, "backoff has unknown key(s) dealy"),
        ({"jobId": 123}, "jobId must be a non-empty string, not 123"),
        ({"jobId": ""}, "jobId must be a non-empty string"),
        ({"jobId": "123"}, "jobId '123' cannot be an integer"),
        ({"jobId": "-4"}, "jobId '-4' cannot be an integer"),
        ({"jobId": "a:b"}, "jobId 'a:b' cannot contain ':'"),
        ({"removeOnComplete": -1}, "removeOnComplete must be true/false, a count >= 0"),
        ({"removeOnFail": {"age": -1}}, "removeOnFail must be"),
        ({"removeOnFail": {"days": 1}}, "removeOnFail must be"),
        ({"removeOnFail": {}}, "removeOnFail must be"),
        ({"keepLogs": -1}, "keepLogs must be an integer >= 0"),
    ],
)
def test_bad_options_name_the_problem(opts: Any, message: str) -> None:
    with pytest.raises(InvalidJobOptionsError) as caught:
        validate_job_options(opts)
    assert message in str(caught.value)
    # Callers may catch it as a ValueError too.
    assert isinstance(caught.value, ValueError)


def test_unknown_option_message_lists_the_known_ones() -> None:
    with pytest.raises(InvalidJobOptionsError) as caught:
        validate_job_options({"removeOnCompleted": 1})
    for name in ("removeOnComplete", "attempts", "backoff"):
        assert name in str(caught.value)
    assert "removeOnComplete" in KNOWN_OPTIONS


def test_merge_puts_per_call_options_over_defaults() -> None:
    defaults = {"attempts": 3, "backoff": {"type": "exponential", "delay": 2000},
                "removeOnComplete": 1000}
    merged = merge_job_options(defaults, {"attempts": 5, "backoff": {"type": "fixed", "delay": 1}})
    assert merged == {"attempts": 5, "backoff": {"type": "fixed", "delay": 1},
                      "removeOnComplete": 1000}
    assert defaults["attempts"] == 3, "the defaults are not changed"
    assert merge_job_options(defaults, {}) == defaults


@pytest.mark.parametrize("name", ["emails", "e-mails_2", "Ünïcode", "x" * 200, "a b", "{tag}q"])
def test_good_queue_names(name: str) -> None:
    assert validate_queue_name(name) == name


@pytest.mark.parametrize("name", ["", " ", " emails", "emails ", "a:b", ":a", "x" * 201,
                                  "\temails", None, 3, b"emails"])
def test_bad_queue_names(name: Any) -> None:
    with pytest.raises(MailQueueError, match=r"Bad queue name .*1-200 characters, no ':'"):
        validate_queue_name(name)
