"""QueueManager's reads for the job page: a job without its large payload, raw data, logs,
and duplicating a job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailqueue.errors import JobNotFoundError
from mailqueue.manager import MailManager
from mailqueue.queues.job_view import DATA_PREVIEW_BYTES


async def test_small_payload_is_parsed(mail: MailManager) -> None:
    await mail.add_job("jv", "hello", {"to": "ada@example.com", "n": 1}, jobId="small")
    view = await mail.queues.get_job_view("jv", "small")
    assert view["data"] == {"to": "ada@example.com", "n": 1}
    assert view["data_truncated"] is False
    assert view["data_preview"] is None
    assert view["data_size"] == len(json.dumps({"to": "ada@example.com", "n": 1},
                                               separators=(",", ":")))
    assert view["state"] == "waiting"
    assert view["name"] == "hello"


async def test_large_payload_is_not_read_whole(mail: MailManager) -> None:
    # Multi-byte characters everywhere: the cut must land on a character boundary. Python's
    # bullmq writes ASCII-escaped JSON; Node's writes raw UTF-8, as done here by hand.
    payload = {"blob": "é€😀" * 1_000_000}
    await mail.add_job("jv", "big", {}, jobId="big")
    await mail.client.hset(mail.queues.keys("jv").job("big"), "data",
                           json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    view = await mail.queues.get_job_view("jv", "big")
    assert view["data"] is None
    assert view["data_truncated"] is True
    assert view["data_size"] == len(json.dumps(payload, ensure_ascii=False).encode()) - 1
    preview = view["data_preview"]
    assert preview is not None
    assert preview.startswith('{"blob":"é€😀')
    assert DATA_PREVIEW_BYTES - 4 < len(preview.encode()) <= DATA_PREVIEW_BYTES

    text = await mail.queues.get_job_data_text("jv", "big")
    assert json.loads(text) == payload


async def test_custom_limit_and_missing_job(mail: MailManager) -> None:
    await mail.add_job("jv", "x", {"a": "b" * 100}, jobId="j1")
    view = await mail.queues.get_job_view("jv", "j1", data_limit=10)
    assert view["data_truncated"] is True and view["data_preview"] == '{"a":"bbbb'
    with pytest.raises(JobNotFoundError):
        await mail.queues.get_job_view("jv", "nope")
    with pytest.raises(JobNotFoundError):
        await mail.queues.get_job_data_text("jv", "nope")


async def test_log_page_has_count(mail: MailManager) -> None:
    job = await mail.add_job("jv", "x", {}, jobId="logged")
    for i in range(5):
        await job.log(f"line {i}")
    page = await mail.queues.get_job_log_page("jv", "logged", -2, -1)
    assert page == {"logs": ["line 3", "line 4"], "count": 5}


async def test_duplicate_keeps_name_data_options_but_not_the_id(mail: MailManager) -> None:
    data: dict[str, Any] = {"to": "ada@example.com"}
    await mail.add_job("jv", "send", data, jobId="orig", attempts=4, priority=3)
    copy = await mail.queues.duplicate_job("jv", "orig")
    assert copy.id != "orig"
    view = await mail.queues.get_job_view("jv", str(copy.id))
    assert view["name"] == "send"
    assert view["data"] == data
    assert view["opts"]["attempts"] == 4
    assert view["priority"] == 3
    assert view["opts"].get("jobId") in (None, copy.id)
    with pytest.raises(JobNotFoundError):
        await mail.queues.duplicate_job("jv", "nope")
