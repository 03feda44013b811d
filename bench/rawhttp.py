"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load benchmarks.

The load generator runs on the same 2 cores as the server it measures. httpx's own CPU per
request there was a large share of what the server spends on a labeling request, so with it the
benchmark partly measures its own client (docs/labeling-performance.md, "How to reproduce").
This one does only what the benchmark needs: one persistent connection, Content-Length or
chunked bodies, cookies from Set-Cookie. It speaks real HTTP over a real socket, so the server
side (uvicorn, httptools) is measured in full.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit


class HttpError(Exception):
    pass


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode()

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


class Connection:
    """One keep-alive connection; requests on it run one after another (like a browser tab)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    @property
    def local_port(self) -> int | None:
        """This end's port while connected (to tell which server process holds the connection)."""
        return self._writer.get_extra_info("sockname")[1] if self._writer is not None else None

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, headers)

    async def post_form(
        self, path: str, form: dict[str, str | list[str]], headers: dict[str, str] | None = None
    ) -> Response:
        body = urlencode(form, doseq=True).encode()
        return await self.request(
            "POST", path, {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}, body
        )

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        return await asyncio.wait_for(self._request(method, path, headers or {}, body), self.timeout)

    async def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        reused = self._writer is not None
        try:
            return await self._send(method, path, headers, body)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            # The server closes a keep-alive connection after it sat idle (uvicorn: 5 s). Then
            # nothing of this request was read, so it is sent again on a new connection.
            await self.close()
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._send(method, path, headers, body)

    async def _send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        response = await self._read_response()
        if (response.header("connection") or "").lower() == "close":
            await self.close()
        return response

    async def _read_response(self) -> Response:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x response: {status_line!r}")
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
            if name.lower() == "set-cookie":
                cookie_name, _, rest = value.strip().partition("=")
                cookie_value = rest.split(";", 1)[0]
                if "max-age=0" in rest.lower() or not cookie_value.strip('"'):
                    self.cookies.pop(cookie_name, None)
                else:
                    self.cookies[cookie_name] = cookie_value
        response = Response(int(parts[1]), headers, b"")
        length = response.header("content-length")
        if length is not None:
            response.body = await self._reader.readexactly(int(length))
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body = await self._read_chunked()
        return response

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")  # no trailers are sent to us
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
