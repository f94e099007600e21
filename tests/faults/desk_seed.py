"""Real values for the mail desk's path parameters, for the route-walking fault tests: a
campaign, a delivery-log entry and a suppressed address."""

from __future__ import annotations

from mailqueue.mail.message_log import Attempt, LogEntry
from mailqueue.manager import MailManager


async def seed_desk(mail: MailManager, queue: str, job_id: str) -> dict[str, str]:
    campaign = await mail.campaigns.create("newsletter", ["reader@example.com"],
                                           variables={"campaign": "Seeded"})
    [entry_id] = await mail.desk.messages.write([(
        LogEntry("sent", ["ada@example.com"], 250, "250 OK"),
        Attempt(f"<{queue}.{job_id}@localhost>", queue, job_id, 1, "welcome", "Hi"))])
    await mail.desk.suppress("gone@example.com", actor="seed", note="seeded")
    return {"campaign_id": campaign["id"], "entry_id": entry_id, "address": "gone@example.com"}
