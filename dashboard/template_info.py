"""What the templates page says about an e-mail template: where it comes from, its variables
(required / optional / default, and where each fact comes from), sample data to preview it
with, and where a render error is (file and line).

Read-only and Redis-free: it reads the templates through the renderer's own Jinja2 loader
(mailqueue.mail.templates), the same directories a worker searches.

Variables come from three places, in this order of trust:
- the header comment of the template's `body.html` (`Required: ...`, `Optional: ...`; a
  `default ...` in an item's parentheses is its default), and of `_layout.html` for the
  shared variables when the template extends it;
- `REQUIRED_VARIABLES` (mailqueue.mail.jobdata): what the worker refuses to send without;
- the templates' source (a template of yours without a header comment): the variables it
  uses, with `| default(...)` as their default.
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from mailqueue.mail.jobdata import REQUIRED_VARIABLES
from mailqueue.mail.templates import PACKAGE_TEMPLATE_DIR, TemplateRenderer

PARTS = ("subject.txt", "body.html", "body.txt")
LAYOUT = "_layout.html"
SOURCE_HEADER = "header comment"
SOURCE_LAYOUT = "shared layout (_layout.html)"
SOURCE_REQUIRED = "REQUIRED_VARIABLES (checked by the worker)"
SOURCE_USED = "used in the template's source"

_HEADER = re.compile(r"^\s*\{#-?(.*?)-?#\}", re.S)
_LABEL = re.compile(r"^\s*(Required|Optional|Variables)\b[^:\n]*:", re.M)
_IDENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.S)
_DEFAULT_NOTE = re.compile(r"\bdefault\s+(?:\"([^\"]*)\"|([^\s,;)]+))")
_DEFAULT_USE = re.compile(
    r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*default\(\s*(?:\"([^\"]*)\"|'([^']*)'|([^),]+))")
_NEEDS = re.compile(r"needs (.+?) in the job data")
_NOT_VARIABLES = frozenset({"nothing", "none", "loop", "self", "super", "varargs", "kwargs"})

# Sample values for the variables the built-in templates use; any other gets a generic one.
SAMPLES: dict[str, Any] = {
    "name": "Ada Lovelace",
    "campaign": "Spring news",
    "intro": "Here is what is new this month.",
    "articles": [
        {"title": "Campaigns with progress", "summary": "Watch a newsletter go out, live.",
         "url": "https://example.com/news/campaigns"},
        {"title": "Templates you can see", "summary": "Preview every template before it is sent."},
    ],
    "title": "Your export is ready",
    "message": "The export you asked for is ready.\nIt stays available for 7 days.",
    "reset_url": "https://example.com/reset?token=sample",
    "action_url": "https://example.com/start",
    "unsubscribe_url": "https://example.com/unsubscribe/sample",
    "app_url": "https://example.com",
}


@dataclass
class Variable:
    name: str
    required: bool = False
    default: str | None = None
    note: str = ""
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "default": self.default,
                "note": self.note, "sources": self.sources}


def origin(renderer: TemplateRenderer, name: str) -> str:
    """`built-in`, `MAIL_TEMPLATE_DIR`, or `MAIL_TEMPLATE_DIR (overrides the built-in)`."""
    files = [_filename(renderer, f"{name}/{part}") for part in PARTS]
    builtin_dir = str(PACKAGE_TEMPLATE_DIR)
    ours = [f for f in files if f and not f.startswith(builtin_dir)]
    if not ours:
        return "built-in"
    if (PACKAGE_TEMPLATE_DIR / name).is_dir():
        return "MAIL_TEMPLATE_DIR (overrides the built-in)"
    return "MAIL_TEMPLATE_DIR"


def _filename(renderer: TemplateRenderer, path: str) -> str | None:
    try:
        return source_of(renderer, path)[1]
    except jinja2.TemplateNotFound:
        return None


def source_of(renderer: TemplateRenderer, path: str) -> tuple[str, str]:
    """The text of a template file and its path on disk, as the renderer would find it."""
    loader = renderer.environment.loader
    assert loader is not None
    source, filename, _ = loader.get_source(renderer.environment, path)
    return source, filename or path


def _split_items(text: str) -> list[str]:
    """`a (x, y), b, c ({p, q})` -> the three items: commas inside brackets do not split."""
    items: list[str] = []
    depth, current = 0, list[str]()
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [" ".join(i.split()).rstrip(".") for i in items if i.strip()]


def parse_header(source: str) -> tuple[str, dict[str, list[str]]]:
    """The description line and {label: items} of a template's first comment."""
    found = _HEADER.match(source)
    if not found:
        return "", {}
    text = found.group(1)
    labels = list(_LABEL.finditer(text))
    first = text[:labels[0].start()] if labels else text
    description = " ".join(first.split())
    sections: dict[str, list[str]] = {}
    for i, label in enumerate(labels):
        end = labels[i + 1].start() if i + 1 < len(labels) else len(text)
        sections[label.group(1)] = _split_items(text[label.end():end])
    return description, sections


def _item(text: str) -> tuple[str, str, str | None] | None:
    """`expires_in_minutes (default 60)` -> (name, note, default)."""
    found = _IDENT.match(text)
    if not found or found.group(1).lower() in _NOT_VARIABLES:
        return None
    note = " ".join((found.group(2) or "").split())
    default = _DEFAULT_NOTE.search(note)
    return found.group(1), note, (default.group(1) if default and default.group(1) is not None
                                  else default.group(2) if default else None)


def variables_of(renderer: TemplateRenderer, name: str) -> tuple[str, list[Variable]]:
    """The template's description and variables, each with where it was read."""
    found: dict[str, Variable] = {}

    def add(var_name: str, source: str, *, required: bool = False, note: str = "",
            default: str | None = None) -> None:
        var = found.setdefault(var_name, Variable(var_name))
        var.required = var.required or required
        var.note = var.note or note
        var.default = var.default if var.default is not None else default
        if source not in var.sources:
            var.sources.append(source)

    sources: dict[str, str] = {}
    for part in PARTS:
        try:
            sources[part] = source_of(renderer, f"{name}/{part}")[0]
        except jinja2.TemplateNotFound:
            continue
    description, sections = parse_header(sources.get("body.html", ""))
    description = re.sub(rf"^{re.escape(name)}\s*[—–-]+\s*", "", description)  # the page says it
    description = description[:1].upper() + description[1:]
    for label, items in sections.items():
        for text in items:
            item = _item(text)
            if item:
                add(item[0], SOURCE_HEADER, required=label == "Required", note=item[1],
                    default=item[2])
    for var_name in REQUIRED_VARIABLES.get(name, ()):
        add(var_name, SOURCE_REQUIRED, required=True)
    used: set[str] = set()
    defaults: dict[str, str] = {}
    for text in sources.values():
        try:
            used |= meta.find_undeclared_variables(renderer.environment.parse(text))
        except jinja2.TemplateSyntaxError:
            pass  # the preview shows the error, with its line
        for match in _DEFAULT_USE.finditer(text):
            value = next(g for g in match.groups()[1:] if g is not None)
            defaults.setdefault(match.group(1), value.strip())
    if LAYOUT in sources.get("body.html", "") and "extends" in sources.get("body.html", ""):
        _, layout = parse_header(_safe_source(renderer, LAYOUT))
        for text in layout.get("Variables", []):
            item = _item(text)
            if item and item[0] not in found:
                add(item[0], SOURCE_LAYOUT, note=item[1], default=item[2])
            elif item and found[item[0]].default is None:
                found[item[0]].default = item[2]  # the layout says it (app_name's)
    for var_name in sorted(used - set(found) - _NOT_VARIABLES):
        add(var_name, SOURCE_USED, default=defaults.get(var_name))
    for var in found.values():
        if var.default is None and var.name in defaults:
            var.default = defaults[var.name]
    ordered = sorted(found.values(), key=lambda v: (not v.required, SOURCE_LAYOUT in v.sources))
    return description, ordered


def _safe_source(renderer: TemplateRenderer, path: str) -> str:
    try:
        return source_of(renderer, path)[0]
    except jinja2.TemplateNotFound:
        return ""


def sample_data(variables: list[Variable]) -> dict[str, Any]:
    """Sensible sample values: every required variable, and the optional ones of the
    template itself that have no default (the layout's own are left to their defaults)."""
    data: dict[str, Any] = {}
    for var in variables:
        if not var.required and (var.default is not None or SOURCE_LAYOUT in var.sources):
            continue
        if var.name in SAMPLES:
            data[var.name] = SAMPLES[var.name]
        elif var.name.endswith("_url"):
            data[var.name] = f"https://example.com/{var.name.removesuffix('_url')}"
        else:
            data[var.name] = f"Sample {var.name.replace('_', ' ')}"
    return data


def sample_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


@dataclass
class ErrorAt:
    """A render error, and where it is when that is known."""

    message: str
    file: str | None = None
    line: int | None = None
    code: str | None = None  # the line's text

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "file": self.file, "line": self.line,
                "code": self.code}


def json_error(exc: json.JSONDecodeError, text: str) -> ErrorAt:
    lines = text.splitlines()
    code = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else None
    return ErrorAt(f"The sample data is not JSON: {exc.msg} (line {exc.lineno}, column "
                   f"{exc.colno})", "sample data", exc.lineno, code)


def locate(exc: BaseException, renderer: TemplateRenderer, template: str = "") -> ErrorAt:
    """The error's text, and the template file and line it points at: a syntax error says
    its own; an error while rendering is found in the traceback (Jinja2 rewrites it so its
    frames are the template files' lines)."""
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, jinja2.TemplateSyntaxError):
        message = message if isinstance(exc, jinja2.TemplateError | ValueError) or \
            type(exc).__module__.startswith("mailqueue") else f"{type(exc).__name__}: {message}"
    cause: BaseException = exc
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, jinja2.TemplateSyntaxError):
            cause = candidate
            name = candidate.name or candidate.filename
            code = _line(candidate.source, candidate.lineno) if candidate.source else None
            if code is None and name:
                code = _line(_safe_source(renderer, candidate.name or ""), candidate.lineno)
            text = f"{message}" if message.startswith("template") else \
                f"template {name!r}: {message}"
            return ErrorAt(text, name, candidate.lineno, code)
        if candidate is not None and candidate.__traceback__ is not None:
            cause = candidate
    roots = _search_roots(renderer)
    frame_file, frame_line = None, None
    for frame in traceback.extract_tb(cause.__traceback__):
        relative = _relative(frame.filename, roots)
        if relative is not None:
            frame_file, frame_line = relative, frame.lineno
    if frame_file is None:
        # A required variable refused before rendering: point at where the template uses it.
        needed = _NEEDS.search(message)
        names = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", needed.group(1)) if needed else []
        for var_name in names:
            found = first_use(renderer, template, var_name)
            if found:
                return ErrorAt(message, found[0], found[1], found[2])
        return ErrorAt(message)
    code = _line(_safe_source(renderer, frame_file), frame_line)
    return ErrorAt(message, frame_file, frame_line, code)


def first_use(renderer: TemplateRenderer, template: str, var_name: str
              ) -> tuple[str, int, str] | None:
    """The first line of the template's files that uses `var_name` in an expression."""
    use = re.compile(r"(\{\{|\{%)[^}]*\b" + re.escape(var_name) + r"\b")
    for part in PARTS:
        path = f"{template}/{part}"
        for number, line in enumerate(_safe_source(renderer, path).splitlines(), 1):
            if use.search(line):
                return path, number, line
    return None


def _search_roots(renderer: TemplateRenderer) -> list[Path]:
    roots = [PACKAGE_TEMPLATE_DIR.resolve()]
    if renderer.template_dir:
        roots.insert(0, Path(renderer.template_dir).resolve())
    return roots


def _relative(filename: str, roots: list[Path]) -> str | None:
    """`welcome/body.html` for a file under a template directory; None for Python code."""
    if filename.endswith(".py"):
        return None
    path = Path(filename).resolve()
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return None


def _line(source: str | None, lineno: int | None) -> str | None:
    if not source or not lineno:
        return None
    lines = source.splitlines()
    return lines[lineno - 1] if 0 < lineno <= len(lines) else None
