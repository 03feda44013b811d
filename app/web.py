"""Templates and rendering helpers for the server-rendered UI."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks

from app.markdown import render_markdown
from app.settings import ROOT
from app.text_breaks import breakable

templates = Jinja2Blocks(directory=str(ROOT / "templates"))
templates.env.filters["markdown"] = render_markdown
templates.env.filters["breakable"] = breakable


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def page(request: Request, name: str, context: dict[str, Any], *, block: str | None = None, status_code: int = 200):
    """Renders a whole page, or only `block` when htmx asks for it (same URL, `Vary: HX-Request`)."""
    ctx = {
        "request": request,
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        **context,
    }
    response = templates.TemplateResponse(
        request, name, ctx, block_name=block if block and is_htmx(request) else None, status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response
