"""The Content-Security-Policy and its companions on every answer, and templates that need no
exception to it (no inline script, event handler or style). Enforcement in a browser is tested in
tests/browser/test_untrusted_content.py; this checks the headers and keeps the templates honest."""

from __future__ import annotations

import re

import pytest

from app.security_headers import CONTENT_SECURITY_POLICY
from app.settings import ROOT
from app.text_breaks import MAX_RUN, breakable
from app.web import render_markdown

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # headers do not depend on the database


@SQLITE
def test_pages_api_static_and_errors_carry_the_csp(client):
    answers = [
        client.get("/login"),
        client.get("/static/css/app.css"),
        client.get("/api/v1/projects"),
        client.get("/no/such/page"),
        client.post("/api/v1/projects", content=b"x" * (10 * 1024 * 1024 + 1)),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 413]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "same-origin"
    policy = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == policy["style-src"] == policy["img-src"] == "'self'"
    assert policy["object-src"] == policy["base-uri"] == policy["frame-ancestors"] == "'none'"


@SQLITE
def test_swagger_ui_is_left_without_the_csp(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-content-type-options"] == "nosniff"


def test_templates_have_no_inline_script_handler_or_style():
    offences = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        html = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)  # Jinja comments may name what is banned
        offences += [f"{path.name}: {m}" for m in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)]
        offences += [f"{path.name}: {m}" for m in re.findall(r"\s(on[a-z]+|style)\s*=", html)]
        offences += [f"{path.name}: {m}" for m in re.findall(r"<style\b|javascript:|hx-on", html)]
    assert offences == []


def test_long_runs_get_break_opportunities_and_keep_their_text():
    text = "short words stay " + "A" * (MAX_RUN * 3 + 5) + " <b>&"
    html = str(breakable(text))
    assert html.count("<wbr>") == 3 and "&lt;b&gt;&amp;" in html
    assert re.sub("<wbr>", "", html).replace("&lt;b&gt;&amp;", "<b>&") == text
    rendered = str(render_markdown("`" + "c" * 100 + "` ![pixel](http://evil.example/p.png) " + "w" * 70))
    assert "<code>" + "c" * MAX_RUN + "<wbr>" in rendered and "<img" not in rendered
    assert '!<a href="http://evil.example/p.png">pixel</a>' in rendered  # shown as a link, never fetched
    fenced = str(render_markdown("```\n" + "x" * 200 + "\n```"))
    assert "<wbr>" not in fenced  # code keeps its lines (it scrolls instead)
