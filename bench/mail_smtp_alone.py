"""SMTP alone: the ceiling that the sink and a pool of 5 set on one process, without any
queue. `smtp_alone` runs this file as a process of its own (its CPU is the sender's):

    python bench/mail_smtp_alone.py SMTP_URL N IN_FLIGHT
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from mail_processes import POOL, Context, MailBenchError, node_rendering


def smtp_alone_child(url: str, n: int, in_flight: int) -> None:
    """(In a process of its own.) Send n notification messages, built beforehand, through our
    SmtpTransport (pool of 5) with `in_flight` sends at once; print seconds and CPU seconds."""
    import asyncio

    from mailqueue.mail.message import Address, build_message
    from mailqueue.mail.transport import SmtpTransport

    node = node_rendering()
    sender = Address("noreply@localhost", "mailqueue")
    batch = [build_message(sender=sender, to=[Address(f"user{i}@example.com")],
                           subject=node["subject"], text=node["text"], html=node["html"],
                           message_id=f"<emails.{i}@localhost>") for i in range(n)]

    async def send_all() -> float:
        transport = SmtpTransport(f"{url}&pool={POOL}")
        slots = asyncio.Semaphore(in_flight)

        async def one(message: Any) -> None:
            async with slots:
                await transport.send(message)

        await transport.send(batch[0])  # connected
        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in batch[1:]))
        elapsed = time.perf_counter() - started
        await transport.close()
        return elapsed

    cpu0 = time.process_time()
    seconds = asyncio.run(send_all())
    print(json.dumps({"seconds": seconds, "cpu": time.process_time() - cpu0, "sent": n - 1}))


def smtp_alone(ctx: Context, n: int) -> dict[str, Any]:
    before, sink_cpu0 = ctx.sink.stats(), ctx.sink.cpu()
    done = subprocess.run([sys.executable, __file__, ctx.sink.url, str(n),
                           str(ctx.concurrency)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise MailBenchError(f"smtp alone: exit {done.returncode}: {done.stderr[-600:]}")
    sink_cpu1, after = ctx.sink.cpu(), ctx.sink.stats()
    result = json.loads(done.stdout.splitlines()[-1])
    if after["messages"] - before["messages"] != n:
        raise MailBenchError(f"smtp alone: the sink received "
                             f"{after['messages'] - before['messages']} of {n} messages")
    sent = result["sent"]
    return {"rate": sent / result["seconds"], "sender_cpu_ms": result["cpu"] * 1000 / n,
            "sink_cpu_ms": (sink_cpu1 - sink_cpu0) * 1000 / n}


if __name__ == "__main__":
    smtp_alone_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
