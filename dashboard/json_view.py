"""JSON as HTML for a person: syntax-coloured, objects and arrays foldable, built on the server.

`json_html(value)` writes the value as `json.dumps(value, indent=2, ensure_ascii=False)` writes
it, character for character, as text nodes among spans that only add colour (`j-k` keys,
`j-s` strings, `j-n` numbers, `j-l` true/false/null, `j-p` brackets) and a <details> around
every non-empty object or array, so that:

- the page needs no script to fold (a <details> opens and closes by itself) and none to
  colour (the classes are styled in app.css, light and dark);
- the element's `textContent` is exactly the pretty JSON: a copy button copies it as is, and
  a person selecting it gets JSON;
- every string of the value (keys too: job data is untrusted) is escaped by markupsafe.

Large values are not turned into thousands of elements: past `max_nodes` values or
`max_chars` characters, `json_html` returns None and the page shows plain text.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup, escape

MAX_NODES = 4000
MAX_CHARS = 64 * 1024
OPEN_DEPTH = 3  # the value itself starts open; containers less deep than this too...
OPEN_ITEMS = 50  # ...unless they hold more items than this


class _TooBig(Exception):
    pass


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def json_html(value: Any, max_nodes: int = MAX_NODES, max_chars: int = MAX_CHARS
              ) -> Markup | None:
    """The value as coloured, foldable HTML whose text is its pretty JSON; None when it is
    too large to be worth it (show `json.dumps(value, indent=2)` as plain text then)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return None
    if len(text) > max_chars:
        return None
    out: list[str] = []
    budget = [max_nodes]
    try:
        _value(value, 0, "", "", out, budget)
    except (_TooBig, RecursionError):
        return None
    return Markup("".join(out))


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        css = "j-s"
    elif value is None or isinstance(value, bool):
        css = "j-l"
    elif isinstance(value, int | float):
        css = "j-n"
    else:  # default=str: anything else is written as its string
        css = "j-s"
    return f'<span class="{css}">{escape(_dump(value))}</span>'


def _value(value: Any, depth: int, key_html: str, comma: str, out: list[str],
           budget: list[int]) -> None:
    """One value on a line that already holds its indentation; `key_html` (the escaped key
    and ': ') and `comma` go around it on the same line."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig
    is_dict = isinstance(value, dict)
    if not isinstance(value, dict | list | tuple) or not value:
        inner = ('<span class="j-p">' + ("{}" if is_dict else "[]") + "</span>"
                 if isinstance(value, dict | list | tuple) else _scalar(value))
        out.append(f'<div class="j-line">{key_html}{inner}{comma}</div>')
        return
    items: list[tuple[Any, Any]] = (list(value.items()) if isinstance(value, dict)
                                    else list(enumerate(value)))
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    count = f"{len(items)} {'key' if is_dict else 'item'}{'' if len(items) == 1 else 's'}"
    is_open = depth == 0 or (depth < OPEN_DEPTH and len(items) <= OPEN_ITEMS)
    out.append(f'<details class="j"{" open" if is_open else ""}>'
               f'<summary data-n="{count}" data-close="{closing}{comma}">{key_html}'
               f'<span class="j-p">{opening}</span></summary><div class="j-body">')
    indent = "  " * (depth + 1)
    for i, (key, child) in enumerate(items):
        child_key = (f'<span class="j-k">{escape(_dump(_key_text(key)))}</span>: ' if is_dict
                     else "")
        out.append("\n" + indent)
        _value(child, depth + 1, child_key, "," if i < len(items) - 1 else "", out, budget)
    out.append(f'</div>\n{"  " * depth}<span class="j-p">{closing}</span>{comma}</details>')


def _key_text(key: Any) -> str:
    """A key as json.dumps writes it (it turns True into "true", 1.5 into "1.5")."""
    if isinstance(key, str):
        return key
    return str(next(iter(json.loads(json.dumps({key: 0})))))
