"""The XSS payload corpus and the check that none of it became markup.

Every payload tries to set `window.__xss`; `html_problems` finds an element or attribute
that came from one (inline script, `on*` attribute, `javascript:` URL, probe element,
`hx-on`) or a rendered `{{7*7}}`. Used by the XSS, bad-input and security scenarios.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

# Every payload tries to set window.__xss (or parent.__xss); each carries a marker the
# parser check recognises if it ever becomes markup.
CORPUS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '"><svg onload="window.__xss=3">',
    "'><svg/onload=window.__xss=4>",
    "javascript:window.__xss=5",
    "</textarea><script>window.__xss=6</script>",
    "</title></pre><script>window.__xss=7</script>",
    '<x-xss-probe hx-on:click="window.__xss=8">probe</x-xss-probe>',
    "tmpl{{7*7}}x ${7*7} #{7*7} {% raw %}",
    '<a href="javascript:window.__xss=9">link</a>',
    "<iframe srcdoc=\"<script>parent.__xss=10</script>\"></iframe>",
    '" onmouseover="window.__xss=11" x="',
    "' onfocus='window.__xss=12' autofocus x='",
    '<div class="xss-probe" hx-get="/queues/pause-all" hx-trigger="load">hx</div>',
    "<!-- --><style>body{display:none}</style>]]>",
    '<body onload="window.__xss=13">',
    "<math><mi xlink:href=\"javascript:window.__xss=14\">m</mi></math>",
]
# The raw text of a page must never hold these (the cores of the payloads, unescaped).
RAW_MARKERS = ["<script>window.__xss", "<img src=x onerror", "<svg onload", "<svg/onload",
               "<x-xss-probe", "<iframe srcdoc", '<div class="xss-probe"', "<body onload",
               "<style>body{display:none}", "<math><mi", '<a href="javascript:']
TEMPLATE_MARKER = "tmpl49x"  # what {{7*7}} would render to, in CORPUS[8]
SELF_HOST = "127.0.0.1:3000"
CSS_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "poster",
             "background", "hx-get", "hx-post", "hx-put", "hx-delete", "hx-patch",
             "sse-connect"}


def queue_safe(payload: str) -> bool:
    """Queue names: 1-200 characters, no ':' and no surrounding spaces."""
    return ":" not in payload and payload == payload.strip() and 0 < len(payload) <= 200


def id_safe(payload: str) -> str:
    """A payload usable as a custom job id (BullMQ refuses ':' in one)."""
    return payload.replace(":", ";")


# --- the HTML check ------------------------------------------------------------------------


def _local_path(url: str) -> str:
    """The path of a URL of this dashboard (relative, or absolute on 127.0.0.1); else ''."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https") or parts.netloc not in ("", SELF_HOST):
        return ""
    return parts.path


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._script_depth = 0

    def _check(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        values = {name: (value or "") for name, value in attrs}
        where = f"<{tag} {' '.join(sorted(names))}>"
        if "xss" in tag or "xss-probe" in values.get("class", ""):
            self.problems.append(f"probe element {where}")
        if tag == "script" and not _local_path(values.get("src", "")).startswith("/static/"):
            self.problems.append(f"script not from /static/: {where} {values.get('src')!r}")
        if tag in ("iframe", "frame", "object", "embed", "base", "applet"):
            src = values.get("src", "")
            if not (tag == "iframe" and _local_path(src).startswith("/outbox/")
                    and "sandbox" in names
                    and "allow-scripts" not in values.get("sandbox", "")):
                self.problems.append(f"unexpected {where} src={src!r}")
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self.problems.append(f"meta refresh {values}")
        for name, value in values.items():
            if name.startswith("on") or name.startswith("hx-on") or name == "srcdoc":
                self.problems.append(f"event/srcdoc attribute {name}={value!r} on {where}")
            if name in URL_ATTRS:
                squeezed = "".join(value.split()).lower()
                if squeezed.startswith(("javascript:", "vbscript:", "data:text/html")):
                    self.problems.append(f"script URL {name}={value!r} on {where}")
            if name in ("hx-vals", "hx-vars", "hx-headers") and value.strip().startswith(
                    ("js:", "javascript:")):
                self.problems.append(f"htmx evaluated {name}={value!r} on {where}")
            if name in ("hx-trigger",) and "load" in value and "xss" in str(values):
                self.problems.append(f"htmx load trigger from a payload on {where}")
        if "hx-preserve" in names and not CSS_ID.match(values.get("id", "")):
            # htmx looks the element up by `#id`: a bad selector throws during live swaps.
            self.problems.append(f"hx-preserve id is not a CSS identifier: {values.get('id')!r}")
        if tag == "script":
            self._script_depth += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)
        if tag == "script":
            self._script_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script_depth:
            self._script_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._script_depth and data.strip():
            self.problems.append(f"inline script: {data[:80]!r}")


def html_problems(html: str) -> list[str]:
    """What in `html` came from a payload: injected elements or attributes, rendered templates.

    Empty for a page that shows every payload as text.
    """
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    problems = list(scanner.problems)
    problems += [f"raw payload {m!r} in the page" for m in RAW_MARKERS if m in html]
    if TEMPLATE_MARKER in html:
        problems.append("{{7*7}} rendered as 49")
    return problems
