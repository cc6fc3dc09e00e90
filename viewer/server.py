"""A small HTTP server for the live view: the page, its event stream, and its images.

It binds to 127.0.0.1 unless another interface is asked for explicitly (with a warning),
answers only its own paths (``/``, ``/events``, ``/image/{slice,fused,depth}.png``), and
stops with the session. It answers only requests addressed to a loopback name (or to the
``--view-host`` it was given), so that a web page elsewhere cannot read the session through
DNS rebinding; every answer forbids framing, sniffing and foreign scripts. Viewing never
multiplies work: at most ``max_streams`` pages follow the event stream, each at most
``1 / MIN_EVENT_INTERVAL_S`` times a second, and images are encoded once per version.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import re
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from viewer.state import LiveViewState

PAGE = Path(__file__).parent / "static" / "index.html"
IMAGES = ("slice", "fused", "depth")
KEEPALIVE_S = 10.0
MAX_STREAMS = 8              # pages following the event stream at once; more are told to retry
MIN_EVENT_INTERVAL_S = 0.1   # one page gets at most ten updates a second, however fast slices come
IMAGES_IN_FLIGHT_WAIT_S = 10.0  # how long stop() waits for images being made (a 5 MP PNG takes about 0.3 s)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def reachable_address() -> str | None:
    """An address of this machine that others on its network may reach it by: the one its route to the outside
    leaves from (found without sending anything), else its name's; None where it has only loopback ones."""
    candidates = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): a UDP "connect" only picks the interface
        candidates.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    usable = [a for a in candidates if not _is_loopback(a) and a not in WILDCARD_HOSTS]
    return usable[0] if usable else None


def host_name(header: str | None) -> str | None:
    """The name in a Host header, without its port or IPv6 brackets; None when malformed."""
    if not header:
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::\d+)?|([^:\[\]]+)(?::\d+)?", header.strip())
    if match is None:
        return None
    return (match.group(1) or match.group(2)).lower().rstrip(".")


def _content_security_policy(page: bytes) -> str:
    """Only the page's own inline script and style (by hash), images and events from this server."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), page, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(block).digest()).decode()}'" for block in blocks)

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    view: LiveViewServer

    def handle_error(self, request, client_address) -> None:
        """A page closed mid-answer is normal; anything else is one line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipeError, ConnectionResetError, ...
            self.view.client_gone()
            return
        print(f"live view: answering {client_address[0]} failed: {type(error).__name__}: {error}", file=sys.stderr)


class LiveViewServer:
    def __init__(self, state: LiveViewState, host: str = "127.0.0.1", port: int = 0, max_streams: int = MAX_STREAMS):
        self.state = state
        self.host = host
        self._stopping = threading.Event()
        self._images_in_flight = 0   # images being made for a page: stop() waits for them (``_image``)
        self._in_flight = threading.Condition()
        self._streams = threading.BoundedSemaphore(max_streams)
        self._gone = threading.Condition()
        self.clients_gone = 0   # answers cut short because the page went away
        self.page = PAGE.read_bytes()
        self.security_headers = {
            "Content-Security-Policy": _content_security_policy(self.page),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        handler = type("Handler", (_Handler,), {"view": self})
        self._server = _Server((host, port), handler)
        self._server.view = self
        if not _is_loopback(host):  # (once it listens: a host it cannot listen on is the one error, not this too)
            warnings.warn(f"the live view listens on {host}: anyone who can reach this machine can see it",
                          stacklevel=2)
        # Polling every 0.1 s: stop() waits for the next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="live view",
                                        daemon=True)

    @property
    def url(self) -> str:
        """Where a browser finds the view: on every interface (0.0.0.0), at an address of this machine that
        others can reach (0.0.0.0 is none), where one is known."""
        host, port = self._server.server_address[:2]
        host = str(host)
        if host in WILDCARD_HOSTS:
            host = reachable_address() or host
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def refusal(self) -> str:
        """Why a request addressed to another name is not answered, and where to look instead."""
        if self.host in WILDCARD_HOSTS:  # (names are refused: DNS rebinding needs one)
            return f"this live view answers only to this machine's addresses written as numbers, such as {self.url}"
        return f"this live view answers only to {self.url}"

    def start(self) -> LiveViewServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._in_flight:
            self._stopping.set()
        with self.state._changed:
            self.state._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        # Images being made for a page (in OpenCV's and numba's threads) are waited for, a while: the process left
        # under them aborted ("terminate called without an active exception", exit 134) after a session that had
        # succeeded, when the page asked for the final images as the session ended (--view-linger-s 0).
        with self._in_flight:
            self._in_flight.wait_for(lambda: self._images_in_flight == 0, timeout=IMAGES_IN_FLIGHT_WAIT_S)

    @contextlib.contextmanager
    def making_an_image(self) -> Iterator[bool]:
        """Counts an image being made for a page while ``stop()`` has not begun; yields False once it has."""
        with self._in_flight:
            counted = not self._stopping.is_set()
            self._images_in_flight += counted
        try:
            yield counted
        finally:
            if counted:
                with self._in_flight:
                    self._images_in_flight -= 1
                    self._in_flight.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def accepts_host(self, header: str | None) -> bool:
        """Whether a request with this Host header is addressed to us (DNS rebinding uses other names)."""
        name = host_name(header)
        if name is None:
            return False
        if _is_loopback(name) or name == self.host.lower():
            return True
        # Listening on every interface: any of this machine's addresses, written as an address.
        return self.host in WILDCARD_HOSTS and _is_ip_literal(name)

    def client_gone(self) -> None:
        with self._gone:
            self.clients_gone += 1
            self._gone.notify_all()

    def wait_for_clients_gone(self, count: int, timeout_s: float) -> bool:
        """True once ``count`` answers have been cut short by pages going away."""
        with self._gone:
            return self._gone.wait_for(lambda: self.clients_gone >= count, timeout=timeout_s)


class _Handler(BaseHTTPRequestHandler):
    view: LiveViewServer
    server_version = "live-view"  # and no Python version: it tells an attacker nothing useful
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # the terminal belongs to the session's own output
        pass

    def end_headers(self) -> None:
        for name, value in self.view.security_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def do_HEAD(self):
        """As GET, without the body (a link checker, curl -I): an event stream's headers, and no stream."""
        self.do_GET()

    def _write_body(self, body: bytes) -> None:
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if not self.view.accepts_host(self.headers.get("Host")):
            return self.send_error(HTTPStatus.MISDIRECTED_REQUEST, self.view.refusal())
        url = urlparse(self.path)
        if url.path == "/":
            return self._send(self.view.page, "text/html; charset=utf-8")
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
        self._write_body(body)

    def _image(self, name: str, full: bool) -> None:
        with self.view.making_an_image() as allowed:
            if not allowed:
                return self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "the live view is closing")
            body = self.view.state.png(name, full)
        if body is None:
            return self.send_error(HTTPStatus.NOT_FOUND, "no image yet")
        self._send(body, "image/png")

    def _events(self) -> None:
        if not self.view._streams.acquire(blocking=False):
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Retry-After", "10")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self._write_body(b"too many pages are following this live view; close one and reload\n")
            return
        try:
            self._stream_events()
        finally:
            self.view._streams.release()

    def _stream_events(self) -> None:
        """Server-sent events: the state whenever it changes (and a keep-alive now and then)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command == "HEAD":
            return
        state, seen = self.view.state, -1
        try:
            while not self.view.stopping:
                version = state.version
                if version != seen:
                    seen = version
                    self.wfile.write(f"data: {state.snapshot_json()}\n\n".encode())
                    self.wfile.flush()
                    # Updates that come faster are folded into the next one.
                    self.view._stopping.wait(MIN_EVENT_INTERVAL_S)
                    continue
                if state.wait_for_change(seen, KEEPALIVE_S) == seen:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
        except ConnectionError:  # the page was closed
            self.view.client_gone()
