"""BullMQ's key layout in Redis, in one place.

Node's BullMQ, bullmq for Python and every other tool that reads a queue agree on these
names: a queue `q` under the prefix `bull` keeps its waiting list in `bull:q:wait`, its
settings in `bull:q:meta`, its event stream in `bull:q:events`, and job 7 in the hash
`bull:q:7`. Every module of mailqueue that reads or writes such a key asks a `Keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The states a job can be ranged in, by the name of the key that holds them: a job
# "waiting" sits in the list `wait`; every other state's key has the state's own name.
_STATE_KEYS = {"waiting": "wait"}

# Keys any queue that was ever written to has (Node or Python made it); discovery looks
# for them, and a queue exists while one of them does.
MARKER_SUFFIXES = ("meta", "id", "events", "wait", "completed", "failed", "delayed")
# The markers that a discovery scan matches: one SCAN pattern finds all three.
SCANNED_MARKERS = ("meta", "id", "events")


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one queue: `Keys("bull", "emails").wait == "bull:emails:wait"`."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        """What every key of the queue starts with (`bull:emails:`); bullmq's scripts take
        it as their key prefix and add a job id or a key name to it."""
        return f"{self.prefix}:{self.queue}:"

    @property
    def qualified(self) -> str:
        """The queue's name with its prefix (`bull:emails`), as a flow's parent names it."""
        return f"{self.prefix}:{self.queue}"

    def state(self, state: str) -> str:
        """The list or sorted set that holds the jobs of `state` (`waiting` -> `wait`)."""
        return self.base + _STATE_KEYS.get(state, state)

    def job(self, job_id: str) -> str:
        """A job's hash."""
        return self.base + str(job_id)

    def lock(self, job_id: str) -> str:
        """The lock of an active job: its worker's token, renewed while the job runs."""
        return f"{self.base}{job_id}:lock"

    def logs(self, job_id: str) -> str:
        return f"{self.base}{job_id}:logs"

    def metrics(self, kind: str) -> str:
        """The per-minute counts of completed or failed jobs (workers with `metrics` on)."""
        return f"{self.base}metrics:{kind}"

    def markers(self) -> list[str]:
        return [self.base + suffix for suffix in MARKER_SUFFIXES]

    @property
    def meta(self) -> str:
        return self.base + "meta"

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def id(self) -> str:
        return self.base + "id"

    @property
    def wait(self) -> str:
        return self.base + "wait"

    @property
    def paused(self) -> str:
        return self.base + "paused"

    @property
    def active(self) -> str:
        return self.base + "active"

    @property
    def delayed(self) -> str:
        return self.base + "delayed"

    @property
    def prioritized(self) -> str:
        return self.base + "prioritized"

    @property
    def completed(self) -> str:
        return self.base + "completed"

    @property
    def failed(self) -> str:
        return self.base + "failed"

    @property
    def waiting_children(self) -> str:
        return self.base + "waiting-children"

    @property
    def marker(self) -> str:
        return self.base + "marker"

    @property
    def limiter(self) -> str:
        return self.base + "limiter"

    @property
    def repeat(self) -> str:
        """The sorted set of the queue's job schedulers, scored by their next run."""
        return self.base + "repeat"


def queue_of_marker(prefix: str, key: str) -> str | None:
    """The queue a scanned key is the `meta`, `id` or `events` key of, else None. A job's
    key (`bull:q:123`) never ends so, and a name holding ':' is no queue's."""
    head = f"{prefix}:"
    if not key.startswith(head):
        return None
    for suffix in SCANNED_MARKERS:
        if key.endswith(f":{suffix}"):
            name = key[len(head): -len(suffix) - 1]
            return name if name and ":" not in name else None
    return None

