"""Markdown → HTML for prompts and completions: the one renderer, used at display and at ingestion.

Model output and uploaded texts are untrusted: raw HTML in markdown is escaped (html=False), and
markdown-it's validateLink refuses javascript:/vbscript:/data: links. Images are not rendered
(`![x](url)` shows as a link): a remote image would be fetched by every labeler's browser (the
CSP blocks it anyway). Long unbroken runs get break opportunities (app/text_breaks.py).

Completions are rendered once when stored (rendering was the largest part of showing a task with
real-sized completions: docs/labeling-performance.md, "A second pass", step 5):
`completions.text_html` keeps the HTML with the RENDERER_VERSION that made it. Raise the version
whenever the output changes (a safety fix above all): stored HTML of another version is never
shown, the text is rendered again instead.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup

from app.text_breaks import add_to_markdown

RENDERER_VERSION = 1

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_markdown.disable("image")
add_to_markdown(_markdown)

# Prompts and completions never change once stored and each is shown many times (every labeler,
# every refresh), so renders at display time are cached too. Bounded: at most
# MARKDOWN_CACHE_ENTRIES entries of at most MARKDOWN_CACHE_MAX_CHARS characters each (~100 MB worst case).
MARKDOWN_CACHE_ENTRIES = 2048
MARKDOWN_CACHE_MAX_CHARS = 20_000


def html_columns(text: str | None) -> dict[str, object]:
    """Completion.text_html and html_renderer for a completion about to be stored."""
    return {"text_html": _markdown.render(text or ""), "html_renderer": RENDERER_VERSION}


@lru_cache(maxsize=MARKDOWN_CACHE_ENTRIES)
def _render_cached(text: str) -> Markup:
    return Markup(_markdown.render(text))


def render_markdown(text: str | None) -> Markup:
    text = text or ""
    if len(text) > MARKDOWN_CACHE_MAX_CHARS:
        return Markup(_markdown.render(text))
    return _render_cached(text)


def stored_or_rendered(text: str | None, html: str | None, version: int | None) -> Markup:
    """The stored HTML if this renderer version made it, else the text rendered now."""
    if html is not None and version == RENDERER_VERSION:
        return Markup(html)
    return render_markdown(text)
