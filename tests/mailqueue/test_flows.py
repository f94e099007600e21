"""FlowManager against a real Redis: adding flows, reading trees, flow metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import InvalidFlowError, JobNotFoundError, MailQueueError
from mailqueue.flows import FlowManager, parse_flow_id, split_job_key
from mailqueue.flows.index import FLOW_INDEX_SUFFIX
from mailqueue.manager import MailManager
from mailqueue.queues import QueueManager

Processor = Callable[[Any, str], Awaitable[Any]]


class Flows:
    """A FlowManager and its QueueManager on one prefix, plus helpers to run workers."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.connection = connection_options(redis_url)
        self.client = aioredis.Redis(decode_responses=True, **self.connection)
        self.queues = QueueManager(
            self.connection, self.client, prefix,
            {"attempts": 1, "removeOnComplete": False, "removeOnFail": False},
        )
        self.flows = FlowManager(self.connection, self.client, prefix, self.queues)
        self.workers: list[Worker] = []

    def work(self, queue: str, processor: Processor) -> None:
        self.workers.append(
            Worker(queue, processor, {"connection": self.connection, "prefix": self.prefix})
        )

    async def wait_for(self, queue: str, job_id: str, state: str, timeout: float = 15.0
                       ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            tree = await self.flows.get_flow(queue, job_id)
            if tree["state"] == state:
                return tree
            if time.monotonic() > deadline or tree["state"] in ("completed", "failed"):
                raise AssertionError(
                    f"{queue}:{job_id} is {tree['state']}, not {state}: {tree['failed_reason']}"
                )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))
        await self.flows.close()
        await self.queues.close()
        await self.client.aclose()


@pytest.fixture
async def fx(redis_url: str, prefix: str) -> AsyncIterator[Flows]:
    flows = Flows(redis_url, prefix)
    yield flows
    await flows.close()


@pytest.fixture
async def tagged(redis_url: str, prefix: str) -> AsyncIterator[Flows]:
    """A `{tag}` prefix, as used on Redis Cluster."""
    flows = Flows(redis_url, "{" + prefix + "}")
    yield flows
    await flows.close()


async def echo(job: Any, token: str) -> Any:
    if job.data.get("fail"):
        raise RuntimeError(f"{job.name} failed on purpose")
    return {"name": job.name, "n": job.data.get("n")}


async def sum_children(job: Any, token: str) -> Any:
    values = await job.getChildrenValues()
    total = sum(v.get("total", v.get("n", 0)) for v in values.values())
    return {"children": len(values), "total": total}


def nested(fail_child: bool = False) -> dict[str, Any]:
    """report (reports) <- render-1 (renders) <- fetch (reports); render-2 (renders)."""
    return {
        "name": "report", "queueName": "reports", "data": {"n": 0},
        "children": [
            {"name": "render-1", "queueName": "renders", "data": {"n": 1},
             "children": [{"name": "fetch", "queueName": "reports", "data": {"n": 10}}]},
            {"name": "render-2", "queueName": "renders", "data": {"n": 2, "fail": fail_child},
             "opts": {"failParentOnFailure": True} if fail_child else {}},
        ],
    }


def by_name(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {node["name"]: node}
    for child in node["children"]:
        found.update(by_name(child))
    return found


# --- adding ------------------------------------------------------------------------------------


async def test_add_flow_returns_id_and_tree_waiting_for_children(fx: Flows) -> None:
    added = await fx.flows.add_flow(nested())
    assert added["queue"] == "reports"
    assert added["flow_id"] == f"reports:{added['job_id']}"
    assert parse_flow_id(added["flow_id"]) == ("reports", added["job_id"])
    tree = added["tree"]
    assert tree["id"] == added["job_id"] and tree["state"] == "waiting-children"
    assert tree["pending"] == 2 and tree["failed"] == 0 and tree["parent"] is None
    nodes = by_name(tree)
    assert set(nodes) == {"report", "render-1", "render-2", "fetch"}
    assert nodes["render-1"]["queue"] == "renders"
    assert nodes["render-1"]["state"] == "waiting-children"
    assert nodes["render-1"]["pending"] == 1
    assert nodes["render-2"]["state"] == "waiting"
    assert nodes["fetch"]["queue"] == "reports" and nodes["fetch"]["state"] == "waiting"
    assert not any(node["truncated"] for node in nodes.values())
    # The same tree through the flow id.
    again = await fx.flows.get_flow_by_id(added["flow_id"])
    assert by_name(again).keys() == nodes.keys()


async def test_default_job_options_apply_under_node_options(fx: Flows) -> None:
    fx.queues.default_job_options = {"attempts": 4, "removeOnComplete": 100}
    added = await fx.flows.add_flow({
        "name": "parent", "queueName": "reports",
        "children": [{"name": "kid", "queueName": "renders", "opts": {"attempts": 2}}],
    })
    kid = added["tree"]["children"][0]
    parent_job = await fx.queues.get_job("reports", added["job_id"])
    kid_job = await fx.queues.get_job("renders", kid["id"])
    assert parent_job["opts"]["attempts"] == 4
    assert parent_job["opts"]["removeOnComplete"] == 100
    assert kid_job["opts"]["attempts"] == 2
    assert kid_job["opts"]["removeOnComplete"] == 100
    assert kid_job["data"] == {}


async def test_flow_runs_to_completed_with_children_return_values(fx: Flows) -> None:
    added = await fx.flows.add_flow(nested())
    fx.work("reports", _route({"report": sum_children, "fetch": echo}))
    fx.work("renders", _route({"render-1": sum_children, "render-2": echo}))
    tree = await fx.wait_for("reports", added["job_id"], "completed")
    nodes = by_name(tree)
    assert all(node["state"] == "completed" for node in nodes.values())
    assert tree["pending"] == 0 and tree["processed"] == 2 and tree["failed"] == 0
    assert tree["return_value"] == {"children": 2, "total": 10 + 2}
    assert nodes["render-1"]["return_value"] == {"children": 1, "total": 10}
    assert nodes["render-2"]["return_value"] == {"name": "render-2", "n": 2}
    assert nodes["fetch"]["return_value"] == {"name": "fetch", "n": 10}
    for node in nodes.values():
        assert node["finished_on"] >= node["processed_on"] >= node["timestamp"] > 0
        assert node["attempts_made"] == 1


def _route(handlers: dict[str, Processor]) -> Processor:
    async def processor(job: Any, token: str) -> Any:
        return await handlers[job.name](job, token)

    return processor


async def test_fail_parent_on_failure_shows_in_tree(fx: Flows) -> None:
    added = await fx.flows.add_flow(nested(fail_child=True))
    fx.work("reports", _route({"report": sum_children, "fetch": echo}))
    fx.work("renders", _route({"render-1": sum_children, "render-2": echo}))
    tree = await fx.wait_for("reports", added["job_id"], "failed")
    nodes = by_name(tree)
    assert nodes["render-2"]["state"] == "failed"
    assert nodes["render-2"]["failed_reason"] == "render-2 failed on purpose"
    assert tree["failed"] == 1
    assert "failed" in (tree["failed_reason"] or "")
    assert nodes["render-2"]["id"] in tree["failed_reason"]


async def test_removed_children_still_show_how_they_ended(fx: Flows) -> None:
    added = await fx.flows.add_flow({
        "name": "parent", "queueName": "reports",
        "children": [
            {"name": "kid", "queueName": "renders", "data": {"n": 5},
             "opts": {"removeOnComplete": True}},
        ],
    })
    fx.work("reports", sum_children)
    fx.work("renders", echo)
    tree = await fx.wait_for("reports", added["job_id"], "completed")
    kid = tree["children"][0]
    assert kid["removed"] is True and kid["state"] == "completed"
    assert kid["return_value"] == {"name": "kid", "n": 5}


async def test_child_knows_its_parent(fx: Flows) -> None:
    added = await fx.flows.add_flow(nested())
    render_1 = by_name(added["tree"])["render-1"]
    subtree = await fx.flows.get_flow("renders", render_1["id"])
    assert subtree["parent"] == {"queue": "reports", "id": added["job_id"]}
    assert [c["name"] for c in subtree["children"]] == ["fetch"]


async def test_tagged_prefix_and_cross_queue_keys(tagged: Flows) -> None:
    added = await tagged.flows.add_flow(nested())
    nodes = by_name(added["tree"])
    assert set(nodes) == {"report", "render-1", "render-2", "fetch"}
    assert nodes["fetch"]["queue"] == "reports"
    fetch = await tagged.flows.get_flow("reports", nodes["fetch"]["id"])
    assert fetch["parent"] == {"queue": "renders", "id": nodes["render-1"]["id"]}
    assert split_job_key("{t:x}:q:1") == ("{t:x}", "q", "1")


async def test_limits_mark_truncated_nodes(fx: Flows) -> None:
    added = await fx.flows.add_flow({
        "name": "fan-out", "queueName": "reports",
        "children": [
            {"name": f"kid-{i}", "queueName": "renders",
             "children": [{"name": "leaf", "queueName": "renders"}] if i == 0 else []}
            for i in range(5)
        ],
    })
    shallow = await fx.flows.get_flow("reports", added["job_id"], max_depth=0)
    assert shallow["children"] == [] and shallow["truncated"] and shallow["pending"] == 5
    narrow = await fx.flows.get_flow("reports", added["job_id"], max_children=3)
    assert len(narrow["children"]) == 3 and narrow["truncated"] and narrow["pending"] == 5
    one_level = await fx.flows.get_flow("reports", added["job_id"], max_depth=1)
    assert len(one_level["children"]) == 5 and not one_level["truncated"]
    with_kid = [c for c in one_level["children"] if c["pending"]]
    assert len(with_kid) == 1 and with_kid[0]["truncated"] and with_kid[0]["children"] == []


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "where"),
    [
        ({"name": "x", "queueName": "bad:name"}, "queueName"),
        ({"queueName": "q"}, "name"),
        ({"name": "x", "queueName": "q", "data": {"when": object()}}, "data"),
        ({"name": "x", "queueName": "q", "children": {"name": "y"}}, "children"),
        ({"name": "x", "queueName": "q", "opts": {"attempts": 0}}, "opts"),
        ({"name": "x", "queue": "q"}, "flow"),
        ("not a mapping", "flow"),
        ({"name": "x", "queueName": "q", "children": [
            {"name": "a", "queueName": "q"}, {"name": "b", "queueName": "no:colons"}]},
         "children[1].queueName"),
        ({"name": "x", "queueName": "q", "children": [{"name": "a", "queueName": "q",
          "children": [{"name": "b", "queueName": "q", "opts": {"bogus": 1}}]}]},
         "children[0].children[0].opts"),
        ({"name": "x", "queueName": "q", "children": [{"name": "a", "queueName": "q",
          "opts": {"failParentOnFailure": True, "ignoreDependencyOnFailure": True}}]},
         "children[0].opts"),
        ({"name": "x", "queueName": "q", "children": [None]}, "children[0]"),
    ],
)
async def test_bad_definitions_name_the_node(fx: Flows, definition: Any, where: str) -> None:
    with pytest.raises(InvalidFlowError) as caught:
        await fx.flows.add_flow(definition)
    assert str(caught.value).startswith(f"{where}:"), str(caught.value)
    assert await fx.client.keys(f"{fx.prefix}:*") == []  # nothing was written


async def test_missing_job_and_bad_ids(fx: Flows) -> None:
    with pytest.raises(JobNotFoundError):
        await fx.flows.get_flow("reports", "nope")
    with pytest.raises(JobNotFoundError):
        await fx.flows.get_flow_by_id("reports:nope")
    with pytest.raises(MailQueueError):
        await fx.flows.get_flow_by_id("no-colon")
    with pytest.raises(MailQueueError):
        await fx.flows.get_flow("bad:queue", "1")


# --- metrics ------------------------------------------------------------------------------------


async def test_flow_metrics_by_state_and_durations(fx: Flows) -> None:
    empty = await fx.flows.get_flow_metrics()
    assert empty["tracked"] == 0 and empty["durations_ms"]["count"] == 0
    assert empty["durations_ms"]["p95"] is None
    done = await fx.flows.add_flow(nested())
    broken = await fx.flows.add_flow(nested(fail_child=True))
    fx.work("reports", _route({"report": sum_children, "fetch": echo}))
    fx.work("renders", _route({"render-1": sum_children, "render-2": echo}))
    await fx.wait_for("reports", done["job_id"], "completed")
    await fx.wait_for("reports", broken["job_id"], "failed")
    await asyncio.gather(*(w.close() for w in fx.workers))
    fx.workers.clear()
    waiting = await fx.flows.add_flow(nested())
    metrics = await fx.flows.get_flow_metrics()
    assert metrics["tracked"] == 3
    assert metrics["by_state"] == {"completed": 1, "failed": 1, "waiting-children": 1}
    # The new flow's root and its render-1 both wait for children.
    assert metrics["waiting_children"] == {"total": 2, "by_queue": {"reports": 1, "renders": 1}}
    durations = metrics["durations_ms"]
    assert durations["count"] == 2
    assert 0 <= durations["p50"] <= durations["p95"] <= durations["max"] < 15_000
    assert durations["avg"] is not None
    members = await fx.client.zrange(f"{fx.prefix}:{FLOW_INDEX_SUFFIX}", 0, -1)
    assert set(members) == {done["flow_id"], broken["flow_id"], waiting["flow_id"]}


async def test_facade_add_and_get_flow(mail: MailManager) -> None:
    added = await mail.add_flow({"name": "p", "queueName": "emails",
                                 "children": [{"name": "c", "queueName": "emails"}]})
    tree = await mail.get_flow("emails", added["job_id"])
    assert tree["state"] == "waiting-children" and len(tree["children"]) == 1
    assert (await mail.get_flow_metrics())["by_state"] == {"waiting-children": 1}


async def test_flow_attached_under_an_existing_parent(fx: Flows) -> None:
    outer = await fx.flows.add_flow(nested())
    inner = await fx.flows.add_flow({
        "name": "extra", "queueName": "renders",
        "opts": {"parent": {"id": outer["job_id"], "queue": "reports"}},
        "children": [{"name": "extra-kid", "queueName": "renders"}],
    })
    assert inner["tree"]["parent"] == {"queue": "reports", "id": outer["job_id"]}
    tree = await fx.flows.get_flow("reports", outer["job_id"])
    assert tree["pending"] == 3
    assert by_name(tree)["extra"]["children"][0]["name"] == "extra-kid"
    with pytest.raises(InvalidFlowError, match=r"^opts\.parent:"):
        await fx.flows.add_flow({"name": "orphan", "queueName": "renders",
                                 "opts": {"parent": {"id": "missing", "queue": "reports"}}})
    with pytest.raises(InvalidFlowError, match=r"^opts\.parent:"):
        await fx.flows.add_flow({"name": "orphan", "queueName": "renders",
                                 "opts": {"parent": "reports"}})


async def test_tree_is_read_in_few_round_trips_whatever_its_width(
    fx: Flows, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = await fx.flows.add_flow({
        "name": "wide", "queueName": "reports",
        "children": [
            {"name": f"kid-{i}", "queueName": "renders",
             "children": [{"name": f"leaf-{i}", "queueName": "reports"}]}
            for i in range(50)
        ],
    })
    calls: list[int] = []
    make_pipeline = fx.client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        calls.append(1)
        return pipe

    monkeypatch.setattr(fx.client, "pipeline", counting_pipeline)
    tree = await fx.flows.get_flow("reports", added["job_id"])
    assert len(by_name(tree)) == 1 + 50 + 50
    # Three levels, at most two round trips each; nothing per node.
    assert len(calls) <= 6
