"""E-mail: templates, MIME messages, the SMTP transport and pool, the development sink,
the no-double-send record and the built-in job handlers. See docs/mail.md."""

from __future__ import annotations
