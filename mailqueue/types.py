"""Plain shapes that cross from the manager layer to its callers (CLI, dashboard, apps)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

JobState = Literal[
    "waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed",
    "paused",
]

# Every state a job can be listed under, in the order a person reads them.
JOB_STATES: tuple[JobState, ...] = (
    "waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed",
    "paused",
)


class JobInfo(TypedDict):
    """One job, as read from Redis."""

    id: str
    queue: str
    name: str
    data: Any
    opts: dict[str, Any]
    progress: Any
    attempts_made: int
    attempts_started: int
    timestamp: int
    processed_on: int | None
    finished_on: int | None
    delay: int
    priority: int
    failed_reason: str | None
    stacktrace: list[str]
    return_value: Any
    parent_key: str | None
    state: str | None


class JobPage(TypedDict):
    """One page of a queue's jobs in one state."""

    queue: str
    state: str
    page: int
    per_page: int
    total: int
    jobs: list[JobInfo]


class ScheduleInfo(TypedDict):
    """A BullMQ job scheduler (a recurring job)."""

    queue: str
    id: str
    name: str
    cron: str | None
    every_ms: int | None
    tz: str | None
    next_run: int | None
    iteration_count: int | None
    limit: int | None
    template: dict[str, Any]


class JobView(JobInfo):
    """A job for a person to read: its payload parsed only when small."""

    data_size: int
    data_truncated: bool
    data_preview: str | None


class LogPage(TypedDict):
    """Lines of a job's log and how many it has."""

    logs: list[str]
    count: int


class JobSummary(TypedDict):
    """A job's row in a table: never its data, return value or stack traces."""

    id: str
    queue: str
    name: str
    state: str | None
    progress: Any
    attempts_made: int
    attempts_started: int
    attempts: int
    timestamp: int
    processed_on: int | None
    finished_on: int | None
    delay: int
    priority: int
    failed_reason: str | None
    parent_key: str | None


class SummaryPage(TypedDict):
    """One page of a state's rows, with every state's count."""

    queue: str
    state: str
    page: int
    per_page: int
    sort: str
    total: int
    counts: dict[str, int]
    jobs: list[JobSummary]


class JobSearch(TypedDict):
    """A bounded search of one state: which jobs were read, which matched, where next."""

    queue: str
    state: str
    field: str
    text: str
    scanned: int
    total: int
    counts: dict[str, int]
    matched: int
    start: int
    next_start: int | None
    jobs: list[JobSummary]


class WorkerInfo(TypedDict):
    """A live BullMQ worker (Python or Node, any process), as CLIENT LIST shows it."""

    queue: str
    name: str | None  # host-pid-n for the workers this project starts; Node's have none
    addr: str
    age_s: int
    idle_s: int
    language: str  # "python" or "node"
    client_name: str
    connections: int
