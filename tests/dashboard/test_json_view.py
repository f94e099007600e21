"""dashboard/json_view.py: coloured, foldable JSON whose text is exactly the pretty JSON."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailqueue.dashboard.json_view import json_html

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=30,
)


def text_of(html: str) -> str:
    """What a browser's textContent gives: the text nodes, unescaped."""
    return unescape(re.sub(r"<[^>]+>", "", html))


@settings(max_examples=300, derandomize=True)
@given(JSON)
def test_the_text_is_the_pretty_json(value: Any) -> None:
    html = json_html(value)
    assert html is not None
    assert text_of(str(html)) == json.dumps(value, indent=2, ensure_ascii=False)


def test_hostile_keys_and_values_are_text() -> None:
    html = str(json_html({"<script>alert(1)</script>": '<img src=x onerror="x()">'}))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;img" in html


def test_every_container_folds_and_says_what_it_holds() -> None:
    html = str(json_html({"a": [1, 2, 3], "b": {"c": 1}, "e": {}}))
    assert html.count("<details") == 3  # the root, a and b; {} has nothing to fold
    assert 'data-n="3 items" data-close="],"' in html and 'data-n="1 key"' in html
    deep = {"l1": {"l2": {"l3": {"l4": 1}}}}
    assert str(json_html(deep)).count("<details class=\"j\" open>") == 3  # deeper: folded
    assert str(json_html(list(range(60)))).startswith('<details class="j" open>')  # the root
    assert str(json_html({"long": list(range(60))})).count("<details class=\"j\" open>") == 1


def test_large_values_stay_plain_text() -> None:
    assert json_html(list(range(5000))) is None  # too many values
    assert json_html("x" * 70_000) is None  # too many characters
    assert json_html({"a": 1}, max_nodes=1) is None
    assert json_html({"a": object()}) is not None  # written as a string, like json.dumps
