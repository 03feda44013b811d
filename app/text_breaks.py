"""Break opportunities (<wbr>) inside very long unbroken runs of untrusted text.

CSS `overflow-wrap: anywhere` keeps a 200,000-character word inside its card, but Chromium pays
for it: with a kerning font (DejaVu Sans, what `system-ui` is on Debian) or a joining script
(Arabic) it reshapes the run for every line it breaks, and one such completion froze the ranking
page for tens of seconds (docs/reliability.md, "2. Untrusted content"). A <wbr> every
MAX_RUN characters hands the line breaker short pieces: the same page lays out in well under a
second, and the text itself is unchanged (<wbr> adds no character: copy, find-in-page and
textContent see the original).

Hidden and bidirectional characters become visible markers here too (app/hidden_chars.py): every
piece of untrusted text shown as HTML comes through `breakable` or the markdown renderer."""

from __future__ import annotations

import re
from collections.abc import Callable

from markdown_it.common.utils import escapeHtml
from markupsafe import Markup, escape

from app import hidden_chars

MAX_RUN = 64
"""Longest run of non-space characters left without a break opportunity."""

_LONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")
_WBR = Markup("<wbr>")


def breakable(text: object, escape: Callable[[str], str] = escape) -> Markup:
    """`text` HTML-escaped for element content, with <wbr> after every MAX_RUN characters of a
    longer unbroken run and each hidden character run as a marker. Also the Jinja filter
    `breakable`."""
    text, runs = hidden_chars.cap("" if text is None else str(text), hidden_chars.MAX_MARKERS)
    if not runs:
        return Markup(_with_breaks(text, escape))
    return Markup(
        "".join(
            str(hidden_chars.marker(piece)) if hidden else _with_breaks(piece, escape)
            for piece, hidden in hidden_chars.split(text)
        )
    )


def _with_breaks(text: str, escape: Callable[[str], str]) -> str:
    pieces, last = [], 0
    for match in _LONG_RUN.finditer(text):
        run = match.group()
        pieces.append(escape(text[last : match.start()]))
        pieces.append(_WBR.join(escape(run[i : i + MAX_RUN]) for i in range(0, len(run), MAX_RUN)))
        last = match.end()
    pieces.append(escape(text[last:]))
    return "".join(pieces)


def add_to_markdown(md) -> None:
    """Renders markdown-it's text and inline-code tokens through `breakable`, escaped as markdown-it
    escapes them (the same HTML as before wherever no run is long). Code blocks keep their lines:
    they never wrap (they scroll sideways), so they need no breaks."""
    md.add_render_rule("text", lambda _self, tokens, idx, _options, _env: breakable(tokens[idx].content, escapeHtml))
    md.add_render_rule(
        "code_inline",
        lambda _self, tokens, idx, _options, _env: f"<code>{breakable(tokens[idx].content, escapeHtml)}</code>",
    )
