"""One job read for a person (mailqueue/queues/job_view.py): what was added, a job without
its large payload, raw data, logs."""

from __future__ import annotations

import json

import pytest
from bullmq import Job

from mailqueue.errors import JobNotFoundError
from mailqueue.manager import MailManager
from mailqueue.queues import QueueManager
from mailqueue.queues.job_view import DATA_PREVIEW_BYTES


async def test_get_job_returns_what_was_added(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "send-welcome", {"to": "ada@example.com"}, {"priority": 3})
    info = await qm.get_job("emails", str(job.id))
    assert info["id"] == str(job.id)
    assert info["queue"] == "emails"
    assert info["name"] == "send-welcome"
    assert info["data"] == {"to": "ada@example.com"}
    assert info["priority"] == 3
    assert info["state"] == "prioritized"
    assert info["attempts_made"] == 0
    assert info["timestamp"] > 0
    with pytest.raises(JobNotFoundError, match=r"'999'.*'emails'"):
        await qm.get_job("emails", "999")


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


async def test_job_logs(qm: QueueManager) -> None:
    job = await qm.add_job("emails", "n", {})
    assert job.id is not None
    await Job.addJobLog(qm.handles.handle("emails"), str(job.id), "first")
    await Job.addJobLog(qm.handles.handle("emails"), str(job.id), "second")
    assert await qm.get_job_logs("emails", str(job.id)) == ["first", "second"]
