"""Every text colour of static/app.css against every background it is drawn on reaches WCAG AA
(4.5:1), light and dark (issue 14: zero counts with AA contrast; the JSON tokens, the primary
button and the badges too). Read from the stylesheet itself: a palette change that breaks a
pair fails here before anyone squints at a screen."""

from __future__ import annotations

import re
from pathlib import Path

CSS = (Path(__file__).resolve().parents[2] / "static" / "app.css").read_text()
STATES = ("waiting", "active", "delayed", "prioritized", "waiting-children", "completed",
          "failed", "paused")

# (text, backgrounds) as the pages draw them.
PAIRS: list[tuple[str, tuple[str, ...]]] = [
    ("fg", ("bg", "panel", "hover", "accent-soft")),  # body text; the sidebar's current queue
    ("fg-soft", ("bg", "panel", "hover")),  # tabs, sidebar links, stack lines
    ("muted", ("bg", "panel", "hover", "accent-soft")),  # zero counts (rows hovered, group
    # heads), the sidebar's waiting count on the current queue, notes
    ("accent", ("bg", "panel", "hover")),  # links
    *((state, ("bg", "panel", "hover")) for state in STATES),  # counts, pills, rows
    ("failed", ("accent-soft",)),  # the current queue's failed count in the sidebar
    *((token, ("panel",)) for token in ("j-key", "j-str", "j-num", "j-lit", "j-punct")),
    ("on-accent", ("accent",)),  # a primary button
    ("warn-fg", ("warn-bg",)),  # warnings: a queue that will not move
]


def palettes() -> dict[str, dict[str, str]]:
    root = re.search(r":root\s*{(.*?)}", CSS, re.S)
    dark = re.search(r"prefers-color-scheme:\s*dark\)\s*{\s*:root\s*{(.*?)}", CSS, re.S)
    assert root and dark, "no :root palette (light) or dark palette in app.css"
    light = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\b", root.group(1)))
    return {"light": light,
            "dark": {**light, **dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\b",
                                                dark.group(1)))}}


def luminance(hex_colour: str) -> float:
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_text_colour_reaches_aa_on_its_backgrounds() -> None:
    failures = []
    for scheme, palette in palettes().items():
        for text, backgrounds in PAIRS:
            for background in backgrounds:
                ratio = contrast(palette[text], palette[background])
                if ratio < 4.5:
                    failures.append(f"{scheme}: --{text} {palette[text]} on --{background} "
                                    f"{palette[background]}: {ratio:.2f}:1")
    assert not failures, "\n".join(failures)


def test_text_colours_come_from_the_palette() -> None:
    """A literal text colour would be the same in light and dark: only the banner's, which
    brings its own background, may be one."""
    literal = re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})", CSS)
    assert sorted(literal) == ["#78350f", "#7f1d1d"], literal
    assert contrast("#78350f", "#fef3c7") >= 4.5 and contrast("#7f1d1d", "#fee2e2") >= 4.5
