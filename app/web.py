"""Templates and rendering helpers for the server-rendered UI."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from markdown_it import MarkdownIt
from markupsafe import Markup

from app.settings import ROOT
from app.text_breaks import add_to_markdown, breakable

# Model output and uploaded prompts are untrusted: raw HTML in markdown is escaped (html=False),
# and markdown-it's validateLink refuses javascript:/vbscript:/data: links. Images are not
# rendered (`![x](url)` shows as a link): a remote image would be fetched by every labeler's
# browser (the CSP blocks it anyway). Long unbroken runs get break opportunities (app/text_breaks.py).
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_markdown.disable("image")
add_to_markdown(_markdown)


# Prompts and completions never change once stored and each is shown many times (every labeler,
# every refresh, the page after each submit), so their rendering is cached. Bounded: at most
# MARKDOWN_CACHE_ENTRIES entries of at most MARKDOWN_CACHE_MAX_CHARS characters each (~100 MB worst case).
MARKDOWN_CACHE_ENTRIES = 2048
MARKDOWN_CACHE_MAX_CHARS = 20_000


@lru_cache(maxsize=MARKDOWN_CACHE_ENTRIES)
def _render_cached(text: str) -> Markup:
    return Markup(_markdown.render(text))


def render_markdown(text: str | None) -> Markup:
    text = text or ""
    if len(text) > MARKDOWN_CACHE_MAX_CHARS:
        return Markup(_markdown.render(text))
    return _render_cached(text)


templates = Jinja2Blocks(directory=str(ROOT / "templates"))
templates.env.filters["markdown"] = render_markdown
templates.env.filters["breakable"] = breakable


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def page(request: Request, name: str, context: dict[str, Any], *, block: str | None = None, status_code: int = 200):
    """Renders a whole page, or only `block` when htmx asks for it (same URL, `Vary: HX-Request`)."""
    ctx = {"request": request, "user": getattr(request.state, "user", None),
           "csrf_token": getattr(request.state, "csrf_token", ""), **context}
    response = templates.TemplateResponse(request, name, ctx, block_name=block if block and is_htmx(request) else None,
                                          status_code=status_code)
    response.headers["Vary"] = "HX-Request"
    return response
