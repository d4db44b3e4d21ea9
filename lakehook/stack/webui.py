"""Serves the Marquez web UI's built bundle and proxies ``/api/`` to the Marquez API.

What the UI's own ``setupProxy.js`` (Express) does, without keeping its 700 MB of
``node_modules`` after the build: files from the bundle directory, ``index.html`` for the
single-page app's routes (``/lineage/...``, ``/datasets``, ...), ``/api/...`` forwarded to the
API, ``/healthcheck`` answering ``OK``::

    python -m lakehook.stack.webui --root DIR --listen 127.0.0.1:3000 --api http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import http.client
import mimetypes
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PROXIED_PREFIX = "/api/"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


class WebUIHandler(BaseHTTPRequestHandler):
    """Static files from ``root`` (``index.html`` for unknown paths), ``/api/`` proxied."""

    server_version = "lakehook-marquez-web"

    def __init__(self, *args: object, root: Path, api: str, **kwargs: object) -> None:
        self.root = root
        self.api = urlsplit(api)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        """Quiet: the UI loads dozens of files per page."""

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(PROXIED_PREFIX):
            self._proxy()
        elif path == "/healthcheck":
            self._send(200, b"OK", "text/plain")
        elif self.command in {"GET", "HEAD"}:
            self._static(path)
        else:
            self._send(405, b"method not allowed", "text/plain")

    def _static(self, path: str) -> None:
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            target = self.root / "index.html"  # a route of the single-page app
        body = target.read_bytes()
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(200, body, kind)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(
            self.api.hostname or "127.0.0.1", self.api.port or 80, timeout=30
        )
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as err:
            self._send(502, f"Marquez API did not answer: {err}".encode(), "text/plain")
            return
        finally:
            connection.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(root: Path, listen: str, api: str) -> None:
    host, _, port = listen.rpartition(":")
    handler = partial(WebUIHandler, root=root.resolve(), api=api)
    with ThreadingHTTPServer((host, int(port)), handler) as server:
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the built bundle (index.html)")
    parser.add_argument("--listen", default="127.0.0.1:3000", help="host:port")
    parser.add_argument("--api", default="http://127.0.0.1:5000", help="the Marquez API")
    args = parser.parse_args(argv)
    serve(args.root, args.listen, args.api)


if __name__ == "__main__":
    main()
