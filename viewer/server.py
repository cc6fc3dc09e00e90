"""A small HTTP server for the live view: the page, its event stream, and its images.

It binds to 127.0.0.1 unless another interface is asked for explicitly (with a warning),
answers only its own paths (``/``, ``/events``, ``/image/{slice,fused,depth}.png``),
and stops with the session.
"""
from __future__ import annotations

import ipaddress
import json
import threading
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from viewer.images import depth_png_bytes, png_bytes
from viewer.state import LiveViewState

PAGE = Path(__file__).parent / "static" / "index.html"
IMAGES = ("slice", "fused", "depth")
KEEPALIVE_S = 10.0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class LiveViewServer:
    def __init__(self, state: LiveViewState, host: str = "127.0.0.1", port: int = 0):
        if not _is_loopback(host):
            warnings.warn(f"the live view listens on {host}: anyone who can reach this machine can see it",
                          stacklevel=2)
        self.state = state
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"view": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="live view", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "LiveViewServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.state._changed:
            self.state._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


class _Handler(BaseHTTPRequestHandler):
    view: LiveViewServer

    def log_message(self, format, *args):  # the terminal belongs to the session's own output
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            return self._send(PAGE.read_bytes(), "text/html; charset=utf-8")
        if url.path == "/events":
            return self._events()
        if url.path.startswith("/image/") and url.path.endswith(".png") and url.path[7:-4] in IMAGES:
            return self._image(url.path[7:-4], "full" in parse_qs(url.query))
        self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _image(self, name: str, full: bool) -> None:
        state = self.view.state
        pixels = state.image(name)
        if pixels is None:
            return self.send_error(HTTPStatus.NOT_FOUND, "no image yet")
        width = None if full else 960
        if name == "depth":
            low, high = state.snapshot()["depth_range"] or (0.0, 1.0)
            body = depth_png_bytes(pixels, low, high, width)
        else:
            body = png_bytes(pixels, width)
        self._send(body, "image/png")

    def _events(self) -> None:
        """Server-sent events: the state whenever it changes (and a keep-alive now and then)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        state, seen = self.view.state, -1
        try:
            while not self.view.stopping:
                version = state.version
                if version != seen:
                    seen = version
                    self.wfile.write(f"data: {json.dumps(state.snapshot())}\n\n".encode())
                    self.wfile.flush()
                if state.wait_for_change(seen, KEEPALIVE_S) == seen:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page was closed
