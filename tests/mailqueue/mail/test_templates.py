from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailqueue.mail.errors import TemplateNotFoundError, TemplateRenderError
from mailqueue.mail.templates import BUILTIN_TEMPLATES, TemplateRenderer

VARIABLES: dict[str, dict[str, Any]] = {
    "welcome": {"name": "Ada"},
    "newsletter": {"campaign": "Issue 7", "articles": [{"title": "T", "summary": "S"}]},
    "reset-password": {"reset_url": "https://example.com/reset?t=1"},
    "notification": {"title": "Disk full", "message": "Free some space"},
}


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_every_builtin_template_renders_subject_html_and_text(name: str) -> None:
    mail = TemplateRenderer().render(name, VARIABLES[name])
    assert mail.subject and "\n" not in mail.subject
    assert mail.html.startswith("<!DOCTYPE html>")
    assert "<link" not in mail.html and "<script" not in mail.html and "<style" not in mail.html
    assert 'style="' in mail.html  # inlined CSS
    assert "<" not in mail.text


@pytest.mark.parametrize("name", ["reset-password", "notification"])
def test_a_missing_variable_is_an_error_naming_it(name: str) -> None:
    with pytest.raises(TemplateRenderError, match="is undefined"):
        TemplateRenderer().render(name, {})


@pytest.mark.parametrize(("name", "subject", "text"), [
    ("welcome", "Welcome to mailqueue!", "Welcome!"),
    ("newsletter", "mailqueue newsletter", "The latest news from mailqueue."),
])
def test_welcome_and_newsletter_need_no_variables(name: str, subject: str, text: str) -> None:
    """The Node version's examples send them with `{to}` alone (issue 10)."""
    for variables in ({}, {"name": ""}):
        mail = TemplateRenderer().render(name, variables)
        assert mail.subject == subject
        assert text in mail.text and "None" not in mail.text and "Welcome, !" not in mail.text


def test_html_is_escaped_and_text_is_not() -> None:
    mail = TemplateRenderer().render("welcome", {"name": "<b>Bob</b> & co"})
    assert "&lt;b&gt;Bob&lt;/b&gt; &amp; co" in mail.html
    assert "<b>Bob</b> & co" in mail.text
    assert mail.subject == "Welcome to mailqueue, <b>Bob</b> & co!"


def test_optional_variables_show_when_given() -> None:
    mail = TemplateRenderer().render(
        "welcome", {"name": "Ada", "action_url": "https://x.example/?a=1&b=2", "app_name": "Acme"}
    )
    assert 'href="https://x.example/?a=1&amp;b=2"' in mail.html
    assert "Get started: https://x.example/?a=1&b=2" in mail.text
    assert mail.subject == "Welcome to Acme, Ada!"


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(TemplateNotFoundError, match="newsletter, notification"):
        TemplateRenderer().render("invoice", {})
    with pytest.raises(TemplateNotFoundError):
        TemplateRenderer().render("../etc/passwd", {})


def test_a_user_directory_overrides_one_file_and_adds_templates(tmp_path: Path) -> None:
    (tmp_path / "welcome").mkdir()
    (tmp_path / "welcome" / "subject.txt").write_text("Hi {{ name }}")
    (tmp_path / "invoice").mkdir()
    (tmp_path / "invoice" / "subject.txt").write_text("Invoice {{ number }}")
    (tmp_path / "invoice" / "body.html").write_text(
        '{% extends "_layout.html" %}{% block content %}#{{ number }}{% endblock %}'
    )
    (tmp_path / "invoice" / "body.txt").write_text("#{{ number }}")
    renderer = TemplateRenderer(tmp_path)
    welcome = renderer.render("welcome", {"name": "Ada"})
    assert welcome.subject == "Hi Ada"
    assert "Welcome, Ada!" in welcome.text  # the body still comes from the package
    invoice = renderer.render("invoice", {"number": 12})
    assert invoice.subject == "Invoice 12" and "#12" in invoice.html
    assert "invoice" in renderer.list_templates()


def test_a_missing_template_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateNotFoundError, match="MAIL_TEMPLATE_DIR"):
        TemplateRenderer(tmp_path / "nope")
