"""Security headers on every response, above all a strict Content-Security-Policy.

Prompts, completions, guidelines, project and model names are attacker-controlled text. Templates
escape them and markdown drops raw HTML and javascript: links; the CSP is the second wall, for the
day a template slips: the browser runs only script files served by us (no inline script, no
event-handler attributes, no eval), applies only our style sheets (no <style>, no style=), loads
nothing from another origin (no tracking pixels in model output), and lets no other site frame us.

So the app's own pages carry no inline script or style: behaviour lives in static/js, styles in
static/css, and htmx is told not to inject its indicator <style> (templates/base.html).

/docs and /redoc are FastAPI's Swagger UI and ReDoc pages: an inline bootstrap script and files
from a CDN. They show only our own OpenAPI schema, never stored text, so they get the other
headers but not the CSP (a CSP there would blank them)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = [
    (b"x-content-type-options", b"nosniff"),  # a JSONL export is never sniffed into HTML
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP level 2
]
CSP_HEADER = (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
NO_CSP_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Adds HEADERS and the CSP to each HTTP response (a header the app already set is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = HEADERS if scope["path"].startswith(NO_CSP_PATHS) else [*HEADERS, CSP_HEADER]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
