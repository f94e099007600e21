"""`mailqueue worker --processes 2`: two worker processes, jobs shared out, SIGTERM stops all.

A real `mailqueue worker --processes 2` supervisor, its two children each with the e-mail
handlers, sending to an SMTP sink in the test process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.faults.system import MailqueueProcess
from tests.mailqueue.mail.test_mail_faults import (  # noqa: F401 - big_sink is a fixture
    NOTIFY,
    big_sink,
    drained,
    message_ids,
)
from tests.waiting import eventually


async def test_worker_processes_share_the_jobs_and_stop_together(
    mail: MailManager, big_sink: MailSink, tmp_path: Path, redis_url: str,  # noqa: F811
    prefix: str,
) -> None:
    total = 60
    await mail.create_queue("emails")
    supervisor = MailqueueProcess(tmp_path, ["worker", "--processes", "2", "--concurrency", "5"],
                                  redis_url=redis_url, prefix=prefix)
    try:
        supervisor.wait_for_output("processes (pids", timeout=60)
        match = re.search(r"processes \(pids ([\d, ]+)\)", supervisor.output())
        assert match, supervisor.output()
        pids = [int(p) for p in match.group(1).split(",")]
        assert len(pids) == 2
        children = psutil.Process(supervisor.process.pid).children(recursive=True)
        assert sorted(c.pid for c in children) == sorted(pids)

        # Each child connects on its own schedule after the supervisor prints their pids.
        workers = await eventually(lambda: mail.workers.list_workers("emails"), 30,
                                   "both children registered as workers",
                                   accept=lambda found: len(found) >= 2)
        assert len(workers) == 2, workers
        assert {str(pid) for pid in pids} == {w["name"].split("-")[-2] for w in workers}

        await mail.add_jobs("emails", [
            {"name": "send-notification", "data": {**NOTIFY, "to": f"p{i}@example.com"}}
            for i in range(total)
        ])
        await eventually(lambda: drained(mail), 90)
        counts = await mail.queues.get_job_counts("emails")
        assert counts["completed"] == total and counts["failed"] == 0, counts
        assert len(await message_ids(big_sink)) == total
    finally:
        code = supervisor.stop(timeout=60)
    output = supervisor.log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Stopped." in output
    # No process left: neither child, nor a worker in Redis.
    await eventually(lambda: not any(_alive(pid) for pid in pids), 10,
                     f"both children {pids} gone")
    assert await mail.workers.list_workers("emails") == []
    assert output.count("[worker 1] Stopped.") == 1
    assert output.count("[worker 2] Stopped.") == 1


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_processes_auto_runs_one_worker_per_usable_core(tmp_path: Path, redis_url: str,
                                                        prefix: str) -> None:
    cores = len(os.sched_getaffinity(0))
    supervisor = MailqueueProcess(tmp_path, ["worker", "--processes", "auto"],
                                  redis_url=redis_url, prefix=prefix)
    try:
        if cores == 1:  # one process: the worker runs in the command itself
            supervisor.wait_for_output("Ctrl-C to stop", timeout=60)
        else:
            supervisor.wait_for_output("processes (pids", timeout=60)
            match = re.search(r"Worker: (\d+) processes", supervisor.output())
            assert match and int(match.group(1)) == cores, supervisor.output()
    finally:
        assert supervisor.stop() == 0, supervisor.output()


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_process_count_is_one_line(tmp_path: Path, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mailqueue.cli", "worker", "--processes",
                             value], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mailqueue: --processes: {value!r} is not a number of processes: use 1, 2, ... "
        "or auto"]
