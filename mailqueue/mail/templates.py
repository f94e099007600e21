"""Rendering e-mail templates: a subject, an HTML part and a plain-text part per template.

A template is a folder `<name>/` holding `subject.txt`, `body.html` and `body.txt`, and
optionally `settings.json` (`{"delivery": "at-most-once"}`: see mailqueue.mail.sending); the
bodies extend the shared `_layout.html` / `_layout.txt`. The package's own folder
(`mailqueue/mail/templates/`) is always searched last, so a user directory given as
`template_dir` (setting `MAIL_TEMPLATE_DIR`) can override one file or add new templates.

Undefined variables raise (`StrictUndefined`): a missing variable fails the job with its
name instead of sending a blank. HTML is autoescaped; text and subjects are not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from mailqueue.mail.errors import TemplateNotFoundError, TemplateRenderError

PACKAGE_TEMPLATE_DIR = Path(__file__).parent / "templates"

# The templates shipped with the package; each one's variables are listed in docs/mail.md
# and in a comment at the top of its body.html.
BUILTIN_TEMPLATES = ("welcome", "newsletter", "reset-password", "notification")

_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_WHITESPACE = re.compile(r"\s+")
# What a template's settings.json may say.
_SETTINGS = frozenset({"delivery", "ignore_suppressions"})


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """What a template produced: a one-line subject and both bodies."""

    subject: str
    html: str
    text: str


@lru_cache(maxsize=16)
def _environment(template_dir: str | None) -> jinja2.Environment:
    searchpath: list[str] = []
    if template_dir:
        searchpath.append(template_dir)
    searchpath.append(str(PACKAGE_TEMPLATE_DIR))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates are read once per process; a worker restart picks up edits.
        auto_reload=False,
    )


class TemplateRenderer:
    """Renders named e-mail templates from the package directory and an optional override."""

    def __init__(
        self, template_dir: str | Path | None = None, defaults: dict[str, Any] | None = None
    ) -> None:
        if template_dir is not None and not Path(template_dir).is_dir():
            raise TemplateNotFoundError(
                f"template directory {str(template_dir)!r} does not exist: create it or unset "
                "MAIL_TEMPLATE_DIR to use the built-in templates"
            )
        self.template_dir = str(template_dir) if template_dir is not None else None
        self.environment = _environment(self.template_dir)
        # Variables every template sees unless the job gives its own (e.g. app_name).
        self.defaults = dict(defaults or {})
        self._settings: dict[str, dict[str, Any]] = {}  # read once per process, as templates

    def exists(self, name: str) -> bool:
        if not _TEMPLATE_NAME.match(name):
            return False
        try:
            self.environment.get_template(f"{name}/subject.txt")
        except jinja2.TemplateNotFound:
            return False
        return True

    def render(self, name: str, variables: dict[str, Any]) -> RenderedMail:
        """Render template `name` with `variables`; raise a permanent error naming what is wrong."""
        if not _TEMPLATE_NAME.match(name):
            raise TemplateNotFoundError(
                f"{name!r} is not a template name (lower-case letters, digits, '-' and '_')"
            )
        context = {**self.defaults, **variables}
        parts: dict[str, str] = {}
        for part in ("subject.txt", "body.html", "body.txt"):
            path = f"{name}/{part}"
            try:
                template = self.environment.get_template(path)
            except jinja2.TemplateNotFound as exc:
                known = ", ".join(sorted(self.list_templates()))
                raise TemplateNotFoundError(
                    f"no e-mail template {name!r} (missing {exc.name}); templates: {known}"
                ) from exc
            try:
                parts[part] = template.render(context)
            except jinja2.UndefinedError as exc:
                raise TemplateRenderError(
                    f"template {name!r} ({part}): {exc.message}; add it to the job data "
                    f"(each template's variables are listed in docs/mail.md)"
                ) from exc
            except jinja2.TemplateError as exc:
                raise TemplateRenderError(f"template {name!r} ({part}): {exc}") from exc
        subject = _WHITESPACE.sub(" ", parts["subject.txt"]).strip()
        if not subject:
            raise TemplateRenderError(f"template {name!r} rendered an empty subject")
        return RenderedMail(subject=subject, html=parts["body.html"], text=parts["body.txt"])

    def settings(self, name: str) -> dict[str, Any]:
        """`<name>/settings.json` (the first found, as for the other files), or {}."""
        if name not in self._settings:
            loader = self.environment.loader
            assert loader is not None
            try:
                source, filename, _ = loader.get_source(self.environment, f"{name}/settings.json")
            except jinja2.TemplateNotFound:
                self._settings[name] = {}
                return {}
            try:
                value = json.loads(source)
            except ValueError as exc:
                raise TemplateRenderError(f"{filename}: not JSON ({exc})") from None
            if not isinstance(value, dict) or set(value) - _SETTINGS:
                raise TemplateRenderError(
                    f"{filename}: an object with {', '.join(sorted(_SETTINGS))} only"
                )
            self._settings[name] = value
        return self._settings[name]

    def list_templates(self) -> list[str]:
        """Names of the templates found in every directory searched."""
        names = {
            path.split("/", 1)[0]
            for path in self.environment.list_templates()
            if path.endswith("/subject.txt")
        }
        return sorted(names)
