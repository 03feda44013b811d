"""Markdown → HTML for prompts and completions: the one renderer, used at display and at ingestion.

Model output and uploaded texts are untrusted: raw HTML in markdown is escaped (html=False), and
markdown-it's validateLink refuses javascript:/vbscript:/data: links. Images are not rendered
(`![x](url)` shows as a link): a remote image would be fetched by every labeler's browser (the
CSP blocks it anyway). Long unbroken runs get break opportunities (app/text_breaks.py). Hidden and
bidirectional characters are shown as markers, in code too, and a text holding any starts with a
notice (app/hidden_chars.py); in attribute values (a link's title, a code block's language) they
are spelled out as plain text.

Completions are rendered once when stored (rendering was the largest part of showing a task with
real-sized completions: docs/labeling-performance.md, "A second pass", step 5):
`completions.text_html` keeps the HTML with the RENDERER_VERSION that made it. Raise the version
whenever the output changes (a safety fix above all): stored HTML of another version is never
shown, the text is rendered again instead.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_core import StateCore
from markupsafe import Markup

from app import hidden_chars
from app.text_breaks import add_to_markdown

RENDERER_VERSION = 2
"""2: hidden and bidirectional characters as markers, with a notice (app/hidden_chars.py)."""

_RUNS = "hidden_runs"
"""In markdown-it's env: how many hidden runs the text shows (markers, then OVERFLOW)."""
_SHOWN_AS_TEXT = ("text", "code_inline", "code_block", "fence")


def _find_hidden(state: StateCore) -> None:
    """Core rule: count the hidden runs of the shown text in reading order, leaving the first
    MAX_MARKERS for the render rules to mark and turning later ones into OVERFLOW; spell runs out
    in attribute values."""
    runs = 0
    for block in state.tokens:
        for token in [block, *(block.children or [])]:
            if token.type in _SHOWN_AS_TEXT:
                token.content, found = hidden_chars.cap(token.content, hidden_chars.MAX_MARKERS - runs)
                runs += found
            if token.info:
                token.info = hidden_chars.spelled_out(token.info)
            for name, value in token.attrs.items():
                if isinstance(value, str):
                    token.attrs[name] = hidden_chars.spelled_out(value)
    state.env[_RUNS] = runs


def _code_block(_self, tokens, idx, _options, _env) -> str:
    token = tokens[idx]
    return f"<pre{_self.renderAttrs(token)}><code>{hidden_chars.mark(token.content, escapeHtml)}</code></pre>\n"


_markdown = MarkdownIt(
    "commonmark",
    {
        "html": False,
        "linkify": False,
        "typographer": False,
        # Fenced code: markers in place of hidden runs, otherwise the default escaping.
        "highlight": lambda content, _lang, _attrs: hidden_chars.mark(content, escapeHtml),
    },
).enable("table")
_markdown.disable("image")
add_to_markdown(_markdown)
_markdown.add_render_rule("code_block", _code_block)
_markdown.core.ruler.push("hidden_chars", _find_hidden)

# Prompts and completions never change once stored and each is shown many times (every labeler,
# every refresh), so renders at display time are cached too. Bounded: at most
# MARKDOWN_CACHE_ENTRIES entries of at most MARKDOWN_CACHE_MAX_CHARS characters each (~100 MB worst case).
MARKDOWN_CACHE_ENTRIES = 2048
MARKDOWN_CACHE_MAX_CHARS = 20_000


def _render(text: str) -> str:
    env: dict[str, Any] = {}
    html = _markdown.render(text, env)
    runs = env.get(_RUNS, 0)
    if not runs:
        return html
    notice = hidden_chars.NOTICE if runs <= hidden_chars.MAX_MARKERS else hidden_chars.NOTICE_OVERFLOW
    return str(notice) + html


def html_columns(text: str | None) -> dict[str, object]:
    """Completion.text_html and html_renderer for a completion about to be stored."""
    return {"text_html": _render(text or ""), "html_renderer": RENDERER_VERSION}


@lru_cache(maxsize=MARKDOWN_CACHE_ENTRIES)
def _render_cached(text: str) -> Markup:
    return Markup(_render(text))


def render_markdown(text: str | None) -> Markup:
    text = text or ""
    if len(text) > MARKDOWN_CACHE_MAX_CHARS:
        return Markup(_render(text))
    return _render_cached(text)


def stored_or_rendered(text: str | None, html: str | None, version: int | None) -> Markup:
    """The stored HTML if this renderer version made it, else the text rendered now."""
    if html is not None and version == RENDERER_VERSION:
        return Markup(html)
    return render_markdown(text)
