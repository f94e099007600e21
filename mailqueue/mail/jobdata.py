"""Job data as producers write it: snake_case (Python) or camelCase (Node and nodemailer).

`normalize_mail_data(data)` is the one place an e-mail job's keys are read. It splits the
data into message options (`to`, `cc`, `bcc`, `reply_to`, `from`, `headers`,
`attachments`, `subject`, `html`, `text`, `template`, `unsubscribe_url`...) and template
variables, accepting every key in snake_case or camelCase (`replyTo`, `unsubscribeUrl`,
`resetUrl`, `firstName`...). It remembers how the producer spelt each key, so that an
error names a field the way the producer writes it: a Node producer is told `resetUrl`,
not `reset_url`.

`null` counts as absent, as it does for a JavaScript producer that writes `name: null`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mailqueue.mail.addresses import parse_address_list
from mailqueue.mail.errors import InvalidMailDataError

# The message options, by their canonical (snake_case) name. Every other key of the job
# data is a template variable. `unsubscribe_url` is both: the List-Unsubscribe header, and
# the footer link of the templates.
MESSAGE_OPTIONS = frozenset({
    "to", "cc", "bcc", "reply_to", "from", "headers", "attachments", "subject", "html",
    "text", "template", "variables", "unsubscribe_url", "in_reply_to", "references",
    "delivery",  # "at-least-once" (default) or "at-most-once": mailqueue.mail.sending
    "campaign_id",  # the campaign the job belongs to (mailqueue.campaigns)
})
# Options that are also template variables.
_SHARED = frozenset({"unsubscribe_url"})

# nodemailer options mailqueue does not implement. A producer that writes them expects
# them to act; taking them for template variables would drop them silently.
UNSUPPORTED_OPTIONS = {
    "message_id": "the Message-ID is derived from the queue and job id (no double send)",
    "envelope": "the SMTP envelope is taken from to, cc and bcc",
    "alternatives": "give 'html' and/or 'text'",
    "ical_event": "attach the .ics file in 'attachments'",
    "amp": "AMP parts are not sent",
    "raw": "give 'html' and/or 'text' and the options; raw messages are not sent",
}

# What each built-in template cannot do without: a job lacking one fails at once.
REQUIRED_VARIABLES: dict[str, tuple[str, ...]] = {
    "reset-password": ("reset_url",),
    "notification": ("title", "message"),
}
# A required variable the job may give under another field: a notification's title is the
# job's `subject` when there is no `title`.
_FALLBACKS: dict[str, dict[str, str]] = {"notification": {"title": "subject"}}

Style = Literal["camel", "snake", "unknown"]

_CAMEL = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][A-Za-z0-9]*)+$")
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_HUMP = re.compile(r"([a-z0-9])([A-Z])")


def snake_case(key: str) -> str:
    """`resetUrl` -> `reset_url`, `resetURL` -> `reset_url`; other keys unchanged."""
    if not _CAMEL.match(key):
        return key
    return _HUMP.sub(r"\1_\2", _ACRONYM.sub(r"\1_\2", key)).lower()


def camel_case(key: str) -> str:
    """`reset_url` -> `resetUrl`; a key without `_` unchanged."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(slots=True)
class MailJobData:
    """An e-mail job's data, read once: options and variables by canonical name."""

    options: dict[str, Any]
    variables: dict[str, Any]
    style: Style
    # canonical name -> the key as the producer wrote it, for every key present
    spelled: dict[str, str] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def name_of(self, canonical: str) -> str:
        """The field as this producer spells it (both spellings when we cannot tell)."""
        if canonical in self.spelled:
            return self.spelled[canonical]
        camel = camel_case(canonical)
        if camel == canonical or self.style == "snake":
            return canonical
        if self.style == "camel":
            return camel
        return f"{canonical} (or {camel})"

    def quoted(self, canonical: str) -> str:
        """`'resetUrl'`, or `'reset_url' (or 'resetUrl')` when we cannot tell."""
        name = self.name_of(canonical)
        if canonical in self.spelled or name in (canonical, camel_case(canonical)):
            return f"'{name}'"
        return f"'{canonical}' (or '{camel_case(canonical)}')"

    def template_variables(self, template: str) -> dict[str, Any]:
        """The variables for `template`, its required ones checked (InvalidMailDataError)."""
        variables = dict(self.variables)
        for name, option in _FALLBACKS.get(template, {}).items():
            if name not in variables and self.options.get(option) is not None:
                variables[name] = self.options[option]
        missing = [name for name in REQUIRED_VARIABLES.get(template, ())
                   if _blank(variables.get(name))]
        if missing:
            needed = ", ".join(self.quoted(m) for m in missing)
            given = ", ".join(self.keys) or "nothing"
            raise InvalidMailDataError(
                f"template {template!r} needs {needed} in the job data (the job has: {given}; "
                "see docs/mail.md)"
            )
        if template == "newsletter" and "articles" in variables \
                and not isinstance(variables["articles"], list):
            raise InvalidMailDataError(
                f"newsletter: {self.quoted('articles')} must be a list of {{title, summary}}"
            )
        return variables


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _style(keys: list[str]) -> Style:
    camel = any(_CAMEL.match(k) for k in keys)
    snake = any("_" in k.strip("_") for k in keys)
    if camel and not snake:
        return "camel"
    if snake and not camel:
        return "snake"
    return "unknown"


def _put(target: dict[str, Any], spelled: dict[str, str], key: str, value: Any,
         canonical: str) -> None:
    """Store `value` under `canonical`; two spellings of one field must agree."""
    if canonical in target and spelled.get(canonical) != key and target[canonical] != value:
        raise InvalidMailDataError(
            f"both '{spelled[canonical]}' and '{key}' are given, with different values: "
            "keep one"
        )
    target[canonical] = value
    spelled.setdefault(canonical, key)


def _attachment_keys(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [k for item in items if isinstance(item, Mapping) for k in item if isinstance(k, str)]


def _canonical_attachments(items: Any) -> Any:
    """nodemailer's `contentType` read as `content_type`; anything else is checked later."""
    if not isinstance(items, list):
        return items
    return [{snake_case(k) if isinstance(k, str) else k: v for k, v in item.items()}
            if isinstance(item, Mapping) else item for item in items]


def normalize_mail_data(data: Any) -> MailJobData:
    """Split job data into options and variables, every key in either spelling."""
    if isinstance(data, MailJobData):
        return data
    if not isinstance(data, Mapping):
        raise InvalidMailDataError("job data must be an object with at least 'to'")
    extra = data.get("variables")
    if extra is not None and not isinstance(extra, Mapping):
        raise InvalidMailDataError("'variables' must be an object of name -> value")
    keys = [k for k in data if isinstance(k, str)]
    nested = [k for k in (extra or {}) if isinstance(k, str)]
    style = _style(keys + nested + _attachment_keys(data.get("attachments")))

    options: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or value is None or key == "variables":
            continue
        canonical = snake_case(key)
        if canonical in UNSUPPORTED_OPTIONS:
            raise InvalidMailDataError(
                f"'{key}' is a nodemailer option mailqueue does not support: "
                f"{UNSUPPORTED_OPTIONS[canonical]}"
            )
        if canonical in MESSAGE_OPTIONS:
            _put(options, spelled, key, value, canonical)
            if canonical not in _SHARED:
                continue
        _put(variables, spelled, key, value, canonical)
    # `variables` is merged over the top-level ones, as before: it wins without a conflict.
    nested_vars: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if isinstance(key, str) and value is not None:
            _put(nested_vars, spelled, key, value, snake_case(key))
    variables.update(nested_vars)
    # Custom templates may use the producer's own spelling too: `{{ firstName }}`.
    for canonical, key in spelled.items():
        if key != canonical and canonical in variables:
            variables.setdefault(key, variables[canonical])
    if "attachments" in options:
        options["attachments"] = _canonical_attachments(options["attachments"])
    _default_name(variables, options.get("to"))
    return MailJobData(options=options, variables=variables, style=style, spelled=spelled,
                       keys=keys)


def _default_name(variables: dict[str, Any], to: Any) -> None:
    """Greet by `first_name`, or the display name of a single recipient, when no `name`."""
    if not _blank(variables.get("name")):
        return
    variables.pop("name", None)
    first = variables.get("first_name")
    if isinstance(first, str) and first.strip():
        variables["name"] = first.strip()
        return
    try:
        # The strict parser, as for sending: `"Ada <a@x>, Bob <b@x>"` is two recipients, so
        # nobody is greeted by name, and a refused address greets nobody (the job fails).
        recipients = parse_address_list(to, "to")
    except InvalidMailDataError:
        return
    if len(recipients) == 1 and recipients[0].name:
        variables["name"] = recipients[0].name
