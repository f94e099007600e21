"""The operator commands (issue 10, part 5): `queues`, `jobs`, `retry`, `pause`, `resume`,
`clean`, as an operator scripts them: the real command in a subprocess, the suite's Redis,
real workers to fail or complete jobs, and what an operator would then check (counts, the
paused flag, the audit log, one line and the exit code for a mistake).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job

from mailqueue.cli import app
from mailqueue.manager import MailManager
from mailqueue.types import JOB_STATES
from tests.cli.test_errors import assert_one_line, cli, cli_env
from tests.faults.system import MailqueueProcess
from tests.waiting import eventually

ACTOR = f"cli:{getpass.getuser()}"
DEAD_REDIS = "redis://127.0.0.1:1"


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)


async def mq(args: list[str], env: dict[str, str], cwd: Path
             ) -> subprocess.CompletedProcess[str]:
    """The command, off the event loop: the test's own workers keep running meanwhile."""
    return await asyncio.to_thread(cli, args, env, cwd)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def table(stdout: str) -> dict[str, dict[str, str]]:
    """A table the commands print, as {first column: {header: cell}}."""
    header, *rows = stdout.splitlines()
    names = header.split()
    # The last column (a failure's reason) may hold spaces; a "(...)" line is a note.
    split = [row.split(maxsplit=len(names) - 1) for row in rows if not row.startswith("(")]
    return {cells[0]: dict(zip(names, cells, strict=True)) for cells in split}


async def counts(mail: MailManager, queue: str) -> dict[str, int]:
    return {k: v for k, v in (await mail.queues.get_job_counts(queue)).items() if v}


async def finished_jobs(mail: MailManager, queue: str, count: int, fail: bool) -> list[str]:
    """`count` jobs that a real worker completes, or fails (once, no retry), then stopped."""
    async def handler(data: Any, job: Job) -> dict[str, Any]:
        if fail:
            raise RuntimeError(f"SMTP 550 mailbox unavailable for {data['to']}\nat send()")
        return {"sent": data["to"]}

    jobs = [await mail.add_job(queue, "send-welcome", {"to": f"user{n}@example.com"},
                               attempts=1) for n in range(count)]
    mail.start_worker(queue, {"send-welcome": handler})
    state = "failed" if fail else "completed"

    async def all_done() -> bool:
        return (await mail.queues.get_job_counts(queue))[state] == count

    await eventually(all_done, 20)
    await mail.stop_worker(queue)
    return [str(job.id) for job in jobs]


async def newest_audit(mail: MailManager) -> dict[str, Any]:
    entry = (await mail.get_audit_log(1))[0]
    return {k: entry[k] for k in ("actor", "action", "target", "result", "detail")}


# --- queues ---------------------------------------------------------------------------------

async def test_queues_shows_the_counts_of_every_queue(mail: MailManager, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    for n in range(3):
        await mail.add_job("emails", "send-welcome", {"to": f"w{n}@example.com"})
    await mail.add_job("digest", "send-digest", {"to": "d@example.com"}, delay=60_000)
    await mail.add_job("digest", "send-digest", {"to": "p@example.com"})
    await mail.queues.pause("digest")

    rows = table(ok(await mq(["queues"], env, tmp_path)))
    assert list(rows) == ["digest", "emails"]
    assert rows["emails"] == {"queue": "emails", "waiting": "3", "active": "0", "delayed": "0",
                              "prioritized": "0", "waiting-children": "0", "completed": "0",
                              "failed": "0", "paused": "0", "workers": "0",
                              "status": "running"}
    assert (rows["digest"]["waiting"], rows["digest"]["delayed"], rows["digest"]["paused"],
            rows["digest"]["status"]) == ("0", "1", "1", "paused")

    data = json.loads(ok(await mq(["queues", "--json"], env, tmp_path)))
    assert data["emails"] == {"counts": {s: 3 if s == "waiting" else 0 for s in JOB_STATES},
                              "paused": False, "workers": 0}
    assert data["digest"]["paused"] is True


async def test_node_made_queues_are_listed_and_handled(mail: MailManager, node: Any,
                                                       env: dict[str, str],
                                                       tmp_path: Path) -> None:
    queue = "node.mail"
    await node.run("add", queue=queue, jobs=[
        {"name": "welcome", "data": {"to": "ada@example.com"}},
        {"name": "welcome", "data": {"to": "bob@example.com", "fail": "mailbox full"},
         "opts": {"attempts": 1}},
    ])
    await node.run("work", queue=queue, jobs=2, seconds=20)

    row = table(ok(await mq(["queues"], env, tmp_path)))[queue]
    assert (row["completed"], row["failed"]) == ("1", "1")
    failed = table(ok(await mq(["jobs", queue], env, tmp_path)))
    assert [(r["name"], r["reason"]) for r in failed.values()] == [("welcome", "mailbox full")]
    assert ok(await mq(["retry", queue, "--all-failed"], env, tmp_path)) == (
        f"Retried 1 failed job(s) of {queue}\n")
    assert await counts(mail, queue) == {"waiting": 1, "completed": 1}


# --- jobs -----------------------------------------------------------------------------------

async def test_jobs_lists_failed_jobs_with_their_reason(mail: MailManager, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    ids = await finished_jobs(mail, "emails", 3, fail=True)
    before = time.time()

    result = await mq(["jobs", "emails", "--state", "failed"], env, tmp_path)
    lines = ok(result).splitlines()
    assert lines[0].split() == ["id", "name", "finished", "attempts", "reason"]
    rows = table(ok(result))
    assert list(rows) == ids[::-1]  # newest first
    for n, job_id in enumerate(ids):
        row = rows[job_id]
        assert (row["name"], row["attempts"]) == ("send-welcome", "1")
        # Only the first line of the reason, not the stack of lines after it.
        assert row["reason"] == f"SMTP 550 mailbox unavailable for user{n}@example.com"
        finished = datetime.strptime(row["finished"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before - 60 < finished.timestamp() <= before + 1

    limited = ok(await mq(["jobs", "emails", "--state", "failed", "--limit", "2"], env,
                          tmp_path))
    assert list(table(limited)) == ids[:0:-1]
    assert limited.splitlines()[-1] == "(2 of 3 failed jobs; --limit for more)"

    data = json.loads(ok(await mq(["jobs", "emails", "--json"], env, tmp_path)))
    assert (data["queue"], data["state"], data["total"]) == ("emails", "failed", 3)
    assert [j["id"] for j in data["jobs"]] == ids[::-1]
    assert data["jobs"][0]["data"] == {"to": "user2@example.com"}

    waiting = await mail.add_job("emails", "send-welcome", {"to": "later@example.com"})
    rows = table(ok(await mq(["jobs", "emails", "--state", "waiting"], env, tmp_path)))
    assert list(rows) == [str(waiting.id)] and "added" in rows[str(waiting.id)]
    assert ok(await mq(["jobs", "emails", "--state", "active"], env, tmp_path)) == (
        "(no active jobs in emails)\n")


# --- retry ----------------------------------------------------------------------------------

async def test_retry_all_failed_moves_them_to_waiting_and_is_audited(
        mail: MailManager, env: dict[str, str], tmp_path: Path) -> None:
    await finished_jobs(mail, "emails", 2, fail=True)

    result = await mq(["retry", "emails", "--all-failed"], env, tmp_path)
    assert ok(result) == "Retried 2 failed job(s) of emails\n"
    assert await counts(mail, "emails") == {"waiting": 2}
    assert await newest_audit(mail) == {
        "actor": ACTOR, "action": "queue.retry-failed", "target": "emails", "result": "ok",
        "detail": "Retried 2 failed job(s) of emails"}


async def test_retry_given_jobs_and_an_unknown_one(mail: MailManager, env: dict[str, str],
                                                   tmp_path: Path) -> None:
    first, second = await finished_jobs(mail, "emails", 2, fail=True)

    result = await mq(["retry", "emails", first, "404"], env, tmp_path)
    assert_one_line(result, "mailqueue: No job '404' in queue 'emails'", 1)
    assert result.stdout == f"Retried 1 job(s) of emails: {first}\n"
    assert (await mail.queues.get_job("emails", first))["state"] == "waiting"
    assert (await mail.queues.get_job("emails", second))["state"] == "failed"
    assert await newest_audit(mail) == {
        "actor": ACTOR, "action": "queue.retry-selected", "target": f"emails/{first}",
        "result": "error",
        "detail": "Retried 1 job(s) of emails; 1 not: No job '404' in queue 'emails'"}

    quiet = await mq(["retry", "emails", second, "-q"], env, tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert await counts(mail, "emails") == {"waiting": 2}


# --- pause, resume --------------------------------------------------------------------------

async def test_pause_and_resume_set_the_flag_and_are_audited(
        mail: MailManager, env: dict[str, str], tmp_path: Path) -> None:
    await mail.add_job("emails", "send-welcome", {"to": "a@example.com"})

    assert ok(await mq(["pause", "emails"], env, tmp_path)) == "Paused emails\n"
    assert await mail.queues.is_paused("emails")
    assert await newest_audit(mail) == {"actor": ACTOR, "action": "queue.pause",
                                        "target": "emails", "result": "ok",
                                        "detail": "Paused emails"}
    assert table(ok(await mq(["queues"], env, tmp_path)))["emails"]["status"] == "paused"

    assert ok(await mq(["resume", "emails"], env, tmp_path)) == "Resumed emails\n"
    assert not await mail.queues.is_paused("emails")
    assert (await newest_audit(mail))["action"] == "queue.resume"


# --- clean ----------------------------------------------------------------------------------

async def test_clean_removes_only_the_old_completed_jobs(
        mail: MailManager, env: dict[str, str], tmp_path: Path) -> None:
    ids = await finished_jobs(mail, "emails", 4, fail=False)
    await finished_jobs(mail, "other", 1, fail=True)
    # Two of them finished two hours ago: what BullMQ's clean reads is the job's finishedOn
    # and its score in the completed set, so both are set back (waiting 2 h is not a test).
    old, recent = ids[:2], ids[2:]
    two_hours_ago = int(time.time() * 1000) - 2 * 3_600_000
    for job_id in old:
        await mail.client.hset(mail.queues.keys("emails").job(job_id), "finishedOn", two_hours_ago)
        await mail.client.zadd(mail.queues.keys("emails").completed, {job_id: two_hours_ago})

    result = await mq(["clean", "emails", "--state", "completed", "--older-than", "1h"], env,
                      tmp_path)
    assert ok(result) == "Removed 2 completed job(s) older than 1h from emails\n"
    remaining = await mail.queues.get_jobs("emails", "completed")
    assert sorted(j["id"] for j in remaining["jobs"]) == sorted(recent)
    assert await counts(mail, "other") == {"failed": 1}
    assert await newest_audit(mail) == {
        "actor": ACTOR, "action": "queue.clean", "target": "emails", "result": "ok",
        "detail": "Removed 2 completed job(s) older than 1h from emails"}

    assert ok(await mq(["clean", "emails", "--older-than", "0", "--limit", "1"], env,
                       tmp_path)) == "Removed 1 completed job(s) older than 0 from emails\n"
    assert await counts(mail, "emails") == {"completed": 1}


# --- mistakes: one line, the right exit code ------------------------------------------------

STATES = ", ".join(JOB_STATES)
CLEANABLE = "completed, failed, delayed, waiting, active, paused, prioritized"
DURATION = "is not a duration: use a number and a unit, like 30s, 15m, 1h or 2d"


@pytest.mark.parametrize(("args", "line"), [
    (["jobs", "emails", "--state", "broken"],
     f"mailqueue: --state: unknown state 'broken': use one of {STATES}"),
    (["clean", "emails", "--state", "waiting-children", "--older-than", "1h"],
     f"mailqueue: --state: cannot clean 'waiting-children': use one of {CLEANABLE}"),
    (["clean", "emails", "--older-than", "1x"], f"mailqueue: --older-than: '1x' {DURATION}"),
    (["clean", "emails", "--older-than", "h"], f"mailqueue: --older-than: 'h' {DURATION}"),
    (["clean", "emails", "--older-than", "-1h"], f"mailqueue: --older-than: '-1h' {DURATION}"),
    (["clean", "emails"],
     "mailqueue: clean needs --older-than, like --older-than 1h (0 for every job)"),
    (["clean", "emails", "--older-than", "1h", "--limit", "-1"],
     "mailqueue: --limit must be 0 or more, not -1"),
    (["jobs", "emails", "--limit", "0"], "mailqueue: --limit must be 1 or more, not 0"),
    (["retry", "emails"], "mailqueue: retry needs job ids or --all-failed"),
    (["retry", "emails", "1", "--all-failed"], "mailqueue: give job ids or --all-failed, not both"),
    (["queues", "-v", "-q"], "mailqueue: -v and -q cannot be used together"),
    (["status", "--redis-url", " "],
     "mailqueue: --redis-url is empty: give a URL like redis://localhost:6379"),
])
def test_a_usage_mistake_is_one_line_and_exit_2(args: list[str], line: str,
                                                tmp_path: Path) -> None:
    # A dead Redis: a usage mistake is found before anything connects.
    result = cli(args, cli_env(tmp_path, REDIS_URL=DEAD_REDIS), tmp_path)
    assert_one_line(result, line, 2)


@pytest.mark.parametrize("args", [
    ["jobs", "nope"], ["retry", "nope", "--all-failed"], ["retry", "nope", "1"],
    ["pause", "nope"], ["resume", "nope"], ["clean", "nope", "--older-than", "1d"],
])
async def test_an_unknown_queue_is_one_line_and_exit_1(
        args: list[str], mail: MailManager, prefix: str, env: dict[str, str],
        tmp_path: Path) -> None:
    result = await mq(args, env, tmp_path)
    assert_one_line(result, f"mailqueue: No queue named 'nope' under prefix '{prefix}'", 1)
    assert result.stdout == ""
    if args[0] != "jobs":  # a refused change is audited too, as on the dashboard
        entry = await newest_audit(mail)
        assert (entry["actor"], entry["target"], entry["result"]) == (ACTOR, "nope", "error")
    assert await mail.queues.list_queues(refresh=True) == []


@pytest.mark.parametrize("args", [["queues"], ["pause", "emails"], ["jobs", "emails"]])
def test_redis_gone_is_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    result = cli(args, cli_env(tmp_path, REDIS_URL=DEAD_REDIS), tmp_path)
    assert_one_line(result, f"mailqueue: Redis at {DEAD_REDIS} (REDIS_URL) does not answer: "
                            "Connection refused", 1)


# --- options every command takes ------------------------------------------------------------

COMMANDS = sorted(c.name or (c.callback.__name__ if c.callback else "")
                  for c in app.registered_commands)


def test_every_command_documents_the_shared_options_and_exit_codes(tmp_path: Path) -> None:
    assert {"send", "status", "worker", "run", "dashboard", "queues", "jobs", "retry",
            "pause", "resume", "clean"} <= set(COMMANDS)
    env = cli_env(tmp_path, COLUMNS="200")
    for command in COMMANDS:
        text = ok(cli([command, "--help"], env, tmp_path))
        for option in ("--redis-url", "--verbose", "-v", "--quiet", "-q"):
            assert f" {option} " in text, (command, option)
        assert "Exit codes: 0 done; 1 failed at run time" in text, command
    top = ok(cli(["--help"], env, tmp_path))
    assert "--install-completion" in top
    assert "2 usage or configuration error" in top
    assert all(f" {command} " in top for command in COMMANDS)


async def test_redis_url_option_wins_over_redis_url(mail: MailManager, redis_url: str,
                                                    prefix: str, tmp_path: Path) -> None:
    await mail.create_queue("emails")
    env = cli_env(tmp_path, REDIS_URL=DEAD_REDIS, QUEUE_PREFIX=prefix)
    override = ["--redis-url", redis_url]
    assert "emails" in table(ok(await mq(["queues", *override], env, tmp_path)))
    ok(await mq(["send", "--to", "ada@example.com", *override], env, tmp_path))
    assert "Status: healthy" in ok(await mq(["status", *override], env, tmp_path))
    assert await counts(mail, "emails") == {"waiting": 1}

    # A long-running command too, started with a dead REDIS_URL that it would not wait for.
    worker = MailqueueProcess(tmp_path, ["worker", *override, "-q"], redis_url=DEAD_REDIS,
                              prefix=prefix, REDIS_CONNECT_TIMEOUT_S="0")
    try:
        await asyncio.to_thread(worker.wait_for_output, "Ctrl-C to stop")
        assert await mail.workers.list_workers("emails")
    finally:
        assert worker.stop() == 0, worker.output()


async def test_verbose_logs_debug_and_quiet_only_errors(mail: MailManager,
                                                        env: dict[str, str],
                                                        tmp_path: Path) -> None:
    await mail.create_queue("emails")
    # A misspelt setting is a warning in the log: there by default, gone with -q.
    env = {**env, "MAILQUEUE_REDIS_ULR": "redis://x"}
    plain = await mq(["pause", "emails"], env, tmp_path)
    assert "MAILQUEUE_REDIS_ULR" in plain.stderr and plain.stdout == "Paused emails\n"

    quiet = await mq(["resume", "emails", "-q"], env, tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert not await mail.queues.is_paused("emails")

    verbose = await mq(["queues", "-v"], env, tmp_path)
    assert "emails" in table(ok(verbose))
    assert " DEBUG " in verbose.stderr and "MAILQUEUE_REDIS_ULR" in verbose.stderr


def test_install_completion_writes_the_script_for_the_shell(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(tmp_path, HOME=str(home), SHELL="/bin/bash")
    result = ok(cli(["--install-completion", "bash"], env, tmp_path))
    # For the command's own name, also when started as `python -m mailqueue.cli`.
    script_path = home / ".bash_completions" / "mailqueue.sh"
    assert f"bash completion installed in {script_path}" in result
    script = script_path.read_text()
    assert "_MAILQUEUE_COMPLETE=complete_bash" in script
    assert "complete -o default -F _mailqueue_completion mailqueue" in script
    assert f"source '{script_path}'" in (home / ".bashrc").read_text()

    # What the installed script asks the command when the user presses Tab.
    def complete(line: str) -> list[str]:
        words = line.split()
        asked = cli([], {**env, "_MAILQUEUE_COMPLETE": "complete_bash",
                         "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}, tmp_path)
        return asked.stdout.split()

    assert complete("mailqueue qu") == ["queues"]
    assert complete("mailqueue jobs emails --state fa") == ["failed"]
    assert complete("mailqueue clean emails --state w") == ["waiting"]
