"""The live view under hostile or heavy use: a viewer racing the fusion thread, pages that vanish
mid-answer, requests from other sites (DNS rebinding), and hundreds of viewers."""
from __future__ import annotations

import http.client
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from acquisition.profile import PlanSettings, load_profile
from acquisition.session import run_profile
from tests.conftest import REPO_ROOT
from viewer.server import MAX_STREAMS, LiveViewServer
from viewer.state import LiveViewState


def quick_profile(height_px=384, width_px=512, top_um=44, step_um=2):
    profile = load_profile(REPO_ROOT / "profiles" / "simulated.yaml")
    specimen = profile.camera.specimen.model_copy(update={"height_px": height_px, "width_px": width_px})
    noise = profile.camera.noise.model_copy(update={"full_scale_exposure_ms": 1})  # (quick, not dim)
    camera = profile.camera.model_copy(update={"specimen": specimen, "exposure_ms": 1, "noise": noise})
    plan = PlanSettings.model_validate({"z": {"bottom": -4, "top": top_um, "step": step_um}})
    return profile.model_copy(update={"camera": camera, "plan": plan})


@pytest.mark.slow
@pytest.mark.hardware_sim
def test_a_viewer_reading_while_fusion_folds_in_a_slice_sees_a_whole_one(tmp_path):
    """The page asks for the fused image and depth map while the fusion thread is halfway through
    a slice (its running maps updated, its list of z positions not yet): a real session, paused
    there by a profile hook in the fusion thread while a viewer reads."""
    state = LiveViewState("race")
    reads: list[str] = []
    readers: list[threading.Thread] = []

    def read(done: threading.Event) -> None:
        sys.setprofile(None)
        try:
            state.image("fused")
            state.image("depth")
            state.snapshot()
            reads.append("ok")
        except Exception as error:  # noqa: BLE001 -- any error is the failure under test
            reads.append(repr(error))
        finally:
            done.set()

    armed = [False]

    def pause_halfway(frame, event, arg):
        if frame.f_code.co_name != "_compose" or not Path(frame.f_code.co_filename).match("fusion/engine.py"):
            return
        if event == "call":
            armed[0] = True
        # The first list append in StreamingFusion._compose (called by push) comes after the running
        # maps were updated.
        elif event == "c_call" and armed[0] and getattr(arg, "__name__", "") == "append":
            armed[0] = False
            done = threading.Event()
            readers.append(threading.Thread(target=read, args=(done,), daemon=True))
            readers[-1].start()
            done.wait(0.5)  # a reader that waits for the slice to be whole is released when push ends

    threading.setprofile(pause_halfway)  # threads started from now on: the fusion thread among them
    try:
        outcome = run_profile(quick_profile(96, 128, top_um=8, step_um=4), tmp_path, progress=False, view=state)
    finally:
        threading.setprofile(None)
    for reader in readers:
        reader.join(timeout=60)
    assert outcome.completed
    assert len(readers) == outcome.report.acquired_slices, "the pause point inside push() is gone: update this test"
    assert reads == ["ok"] * len(readers)


def serve(shape: tuple[int, int, int]) -> LiveViewServer:
    """A live view on a free loopback port, showing a noisy slice of ``shape``."""
    state = LiveViewState("served")
    state.begin(3, "um", {"camera": "test"})
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    state.slice_acquired(pixels, 1, {})
    state.attach_fusion(lambda: pixels[:600, :800], lambda: np.linspace(0, 1, 480000, dtype=np.float32)
                        .reshape(600, 800), lambda: [(0.0, 1.0)])
    return LiveViewServer(state, "127.0.0.1", 0).start()


@pytest.fixture
def served():
    server = serve((600, 800, 3))
    yield server
    server.stop()


@pytest.fixture
def served_large():
    """The slice's PNG is tens of MB: more than a socket buffers, so the server is mid-answer for long."""
    server = serve((3000, 4000, 3))
    yield server
    server.stop()


def request(server, path: str, host: str | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    port = server._server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", f"127.0.0.1:{port}" if host is None else host)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read() if path != "/events" or response.status != 200 or method == "HEAD" else b""
    headers = {name.lower(): value for name, value in response.getheaders()}
    connection.close()
    return response.status, headers, body


def test_a_page_closed_mid_answer_is_no_traceback(served_large, capfd):
    served = served_large
    port = served._server.server_address[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(f"GET /image/slice.png?full=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert client.recv(64).startswith(b"HTTP/1.0 200")  # the server is sending the image...
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # ... and the page goes away (a reset, as a closed tab)
    assert served.wait_for_clients_gone(1, timeout_s=60)
    assert request(served, "/")[0] == 200  # still serving
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("path", ["/", "/events", "/image/fused.png"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", ""])
def test_requests_addressed_to_another_site_are_refused(served, path, host):
    status, headers, body = request(served, path, host)
    assert status == 421 and b"ums" not in body.lower()
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:1234", "[::1]:8765", "127.0.0.2"])
def test_loopback_names_are_served_with_protective_headers(served, host):
    status, headers, body = request(served, "/", host)
    assert status == 200 and b"EventSource" in body
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert headers["server"] == "live-view"  # no Python or library version
    assert request(served, "/nothing", host)[1]["x-content-type-options"] == "nosniff"  # errors too


def test_the_configured_view_host_is_accepted():
    server = LiveViewServer(LiveViewState("named"), "localhost", 0)
    assert server.accepts_host("localhost:8765") and not server.accepts_host("example.org")
    with pytest.warns(UserWarning, match="anyone who can reach this machine"):
        everywhere = LiveViewServer(LiveViewState("everywhere"), "0.0.0.0", 0)
    # Listening everywhere: addresses are fine (DNS rebinding needs a name), names are not.
    assert everywhere.accepts_host("192.168.1.20:8765") and not everywhere.accepts_host("evil.example")


def test_a_view_on_every_interface_names_an_address_a_remote_browser_can_use():
    """0.0.0.0 is where it listens, not where anyone can look: the start-up line and the refusal of a name
    give this machine's reachable address where one is known."""
    from viewer.server import reachable_address

    with pytest.warns(UserWarning, match="anyone who can reach this machine"):
        everywhere = LiveViewServer(LiveViewState("everywhere"), "0.0.0.0", 0).start()
    try:
        address, port = reachable_address(), everywhere._server.server_address[1]
        assert everywhere.url == f"http://{address or '0.0.0.0'}:{port}/"
        status, _, body = request(everywhere, "/", f"{socket.gethostname()}.example:{port}")
        assert status == 421 and everywhere.url.encode() in body and b"written as numbers" in body
        if address is not None:
            assert "0.0.0.0" not in everywhere.url and request(everywhere, "/", f"{address}:{port}")[0] == 200
    finally:
        everywhere.stop()


def test_a_host_the_view_cannot_listen_on_is_one_error_without_a_warning_before_it():
    import warnings

    with warnings.catch_warnings(record=True) as caught, pytest.raises(OSError):
        warnings.simplefilter("always")
        LiveViewServer(LiveViewState("nowhere"), "256.1.1.1", 0)
    assert not [w for w in caught if "anyone who can reach" in str(w.message)]


def test_event_streams_are_capped(served):
    port = served._server.server_address[1]
    clients = []
    statuses = []
    try:
        for _ in range(MAX_STREAMS + 5):
            client = socket.create_connection(("127.0.0.1", port), timeout=60)
            client.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            statuses.append(client.recv(12)[9:12])
            clients.append(client)
    finally:
        for client in clients:
            client.close()
    assert statuses.count(b"200") == MAX_STREAMS and statuses.count(b"503") == 5


def test_many_viewers_cost_one_encoding_per_image_version(served):
    state = served.state
    before = state.encodes
    answers: list[int] = []

    def fetch():
        answers.append(request(served, "/image/fused.png")[0])

    threads = [threading.Thread(target=fetch) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == [200] * 40
    assert state.encodes == before + 1
    state.slice_acquired(state.image("slice"), 2, {})  # a new version: encoded once more
    assert request(served, "/image/fused.png")[0] == 200 and state.encodes == before + 2


def test_a_page_gets_at_most_ten_updates_a_second_however_fast_the_state_changes(served):
    from viewer.server import MIN_EVENT_INTERVAL_S

    port = served._server.server_address[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    client.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    received = b""
    while b"data: " not in received:  # the first update: the stream is open
        received += client.recv(65536)
    started = time.monotonic()
    for _ in range(300):
        served.state.slice_acquired(served.state.image("slice"), 1, {})
    changing_s = time.monotonic() - started
    served.state.end("done")
    while b'"status": "done"' not in received:  # wait for the last state, whatever the machine's speed
        received += client.recv(65536)
    client.close()
    events = received.count(b"data: ")
    # 302 changes; a page is sent the first, then at most one per interval, then the last.
    assert events <= 4 + changing_s / MIN_EVENT_INTERVAL_S, (events, changing_s)
    assert events < 302


def test_nothing_is_encoded_while_nobody_looks(tmp_path):
    from acquisition.session import run_profile

    state = LiveViewState("unwatched")
    outcome = run_profile(quick_profile(96, 128, top_um=8, step_um=4), tmp_path, progress=False, view=state)
    assert outcome.completed and state.encodes == 0


def test_stopping_waits_for_an_image_a_page_asked_for():
    """A page asked for the final images as the session ended (--view-linger-s 0): the process exited under the
    threads making them and aborted ("terminate called without an active exception", exit 134) after a session
    that had succeeded (a hostile round: 2 runs in 11). stop() now waits for them. The MOCK: an encoder held at work
    until released."""
    import urllib.request

    state = LiveViewState("slow")
    started, release = threading.Event(), threading.Event()

    def encoder_at_work(name, full):
        started.set()
        release.wait(30)
        return b"\x89PNG"

    state.png = encoder_at_work
    server = LiveViewServer(state, "127.0.0.1", 0).start()
    fetched = []
    page = threading.Thread(target=lambda: fetched.append(urllib.request.urlopen(server.url + "image/fused.png",
                                                                                  timeout=60).read()), daemon=True)
    page.start()
    assert started.wait(30)
    stopped = threading.Event()
    threading.Thread(target=lambda: (server.stop(), stopped.set()), daemon=True).start()
    assert not stopped.wait(0.5)   # (it cannot end before the image is made: the encoder waits to be released)
    release.set()
    assert stopped.wait(30)
    page.join(30)
    assert fetched == [b"\x89PNG"]


@pytest.mark.parametrize("path", ["/", "/image/fused.png", "/image/depth.png?full=1", "/events", "/nowhere"])
def test_head_is_answered_as_get_without_a_body(served, path):
    """HEAD (curl -I, a link checker, a proxy's health check) was answered 501 Unsupported method."""
    got_status, got_headers, _ = request(served, path)
    status, headers, body = request(served, path, method="HEAD")
    assert (status, body) == (got_status, b"")
    assert headers["content-type"] == got_headers["content-type"]
    assert headers.get("content-length") == got_headers.get("content-length")
    assert headers["x-frame-options"] == "DENY"
