"""The live view in a real browser: images update during a simulated session, the result appears."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.browser import chromium_or_skip
from tests.conftest import REPO_ROOT, with_default_sigint

SCREENSHOTS = REPO_ROOT / "tests" / "screenshots"


def slow_profile(tmp_path: Path, **camera) -> Path:
    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["camera"].update({"exposure_ms": 250, **camera})
    data["camera"]["noise"]["full_scale_exposure_ms"] = data["camera"]["exposure_ms"]  # (slow, not saturated)
    data["camera"]["specimen"].update(height_px=240, width_px=320)
    data["plan"] = {"z": {"bottom": 0, "top": 36, "step": 3}}
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), *args, "--view", "--port", "0",
                                "--view-linger-s", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)  # (tests Ctrl-C it: see with_default_sigint)
    assert process.stdout is not None and process.stderr is not None  # PIPE
    first = process.stdout.readline()
    assert first.startswith("live view: http://127.0.0.1:"), first + process.stderr.read()
    return process, first.split()[-1]


def final_state(url: str, timeout_s: float = 120.0) -> dict:
    """What the page is told last: the event stream's state once the run has ended (its status is no longer
    starting or running)."""
    deadline = time.monotonic() + timeout_s
    with urllib.request.urlopen(url + "events", timeout=30) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                state = json.loads(line.removeprefix("data: "))
                if state["status"] not in ("starting", "running"):
                    return state
            assert time.monotonic() < deadline, "the live view never said the run ended"
    raise AssertionError("the event stream closed before the run ended")


def profile_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    return path


def image_state(browser, name: str) -> tuple[str, int]:
    return browser.execute_script(
        f"const i = document.getElementById('{name}'); return [i.getAttribute('src') || '', i.naturalWidth];")


def wait_for_image(browser, name: str, timeout_s: float = 15.0) -> tuple[str, int]:
    """The image once the browser has loaded its latest version (the last update may still be in flight)."""
    deadline = time.monotonic() + timeout_s
    src, width = image_state(browser, name)
    while time.monotonic() < deadline:
        complete = browser.execute_script(f"return document.getElementById('{name}').complete")
        src, width = image_state(browser, name)
        if complete and width > 0:
            break
        time.sleep(0.1)
    return src, width


# Injected before the page's own script: records every image the page shows and the status it
# shows it under, so that the test counts what happened instead of sampling the page now and then.
RECORD_IMAGE_CHANGES = """
window.__shown = [];
new MutationObserver(records => {
  for (const r of records) {
    if (r.attributeName === "src" && r.target.tagName === "IMG") {
      const status = document.getElementById("status");
      window.__shown.push([r.target.id, r.target.getAttribute("src"), status ? status.textContent : ""]);
    }
  }
}).observe(document, {attributes: true, attributeFilter: ["src"], subtree: true});
"""


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.hardware_sim
def test_page_updates_during_a_session_and_shows_the_result(tmp_path):
    browser = chromium_or_skip()
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_IMAGE_CHANGES})
    process, url = start(["--profile", str(slow_profile(tmp_path)), "--out", str(tmp_path / "sessions")])
    try:
        browser.get(url)
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and status not in ("done", "failed"):
            status = browser.find_element("id", "status").text
            time.sleep(0.1)
        assert status == "done"
        shown = browser.execute_script("return window.__shown")
        # The images changed while slices arrived, without reloading the page.
        while_running = {name: {src for image, src, at in shown if image == name and at == "running"}
                         for name in ("slice", "fused")}
        assert len(while_running["slice"]) >= 2 and len(while_running["fused"]) >= 2, shown
        assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
        src, width = wait_for_image(browser, "fused")
        assert width > 0 and "v=" in src
        assert "µm" in browser.find_element("id", "depth-high").text
        assert "13 of 13 slices" in browser.find_element("id", "count").text
        assert not [entry for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
        SCREENSHOTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "live-view-session.png"))
        browser.save_screenshot(str(tmp_path / "live-view-session.png"))
    finally:
        browser.quit()
        process.wait(timeout=60)
    assert process.returncode == 0


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.hardware_sim
def test_page_says_what_failed_and_what_was_saved(tmp_path):
    browser = chromium_or_skip()
    # A camera that loses every frame: the session ends after three lost in a row.
    profile = slow_profile(tmp_path, timeout_s=0.2, exposure_ms=400)
    profile.write_text(profile.read_text() + "faults: {camera: {silent: true}}\n")
    process, url = start(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    try:
        browser.get(url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and browser.find_element("id", "status").text != "failed":
            time.sleep(0.1)
        message = browser.find_element("id", "message").text
        assert "ended early" in message and "no frame within 0.6 s" in message
        assert "Saved" in message
        browser.save_screenshot(str(tmp_path / "live-view-failed.png"))
    finally:
        browser.quit()
        process.wait(timeout=60)
    assert process.returncode == 1


@pytest.mark.slow
@pytest.mark.browser
def test_refuse_view_shows_each_stack_as_it_completes(tmp_path):
    from simulators.render_stack import write_rendered_stack
    from tests.conftest import rendered

    browser = chromium_or_skip()
    stacks = [write_rendered_stack(tmp_path / f"{name}.ome.tif", rendered(texture, shape=(192, 256)))["stack"]
              for name, texture in (("coffee-dome", "coffee"), ("gravel-dome", "gravel"))]
    process, url = start(["--refuse", *map(str, stacks), str(tmp_path / "missing"), "--out", str(tmp_path / "out"),
                          "--workers", "1"])
    try:
        browser.get(url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and browser.find_element("id", "status").text not in ("done", "failed"):
            time.sleep(0.2)
        rows = browser.find_element("id", "stacks").text
        assert "coffee-dome" in rows and "gravel-dome" in rows and "failed" in rows
        assert wait_for_image(browser, "fused")[1] > 0
        browser.save_screenshot(str(tmp_path / "live-view-refuse.png"))
    finally:
        browser.quit()
        process.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.hardware_sim
def test_server_listens_on_loopback_only_and_serves_only_its_own_paths(tmp_path):
    process, url = start(["--profile", str(slow_profile(tmp_path)), "--out", str(tmp_path / "sessions")])
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"EventSource" in page.read()
        for path in ("../pyproject.toml", "static/index.html", "image/other.png", "run_session.py"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(url + path, timeout=10)
            assert caught.value.code == 404
        # Not reachable on another interface of this machine.
        addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for address in addresses - {"127.0.0.1"}:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=1).close()
    finally:
        process.wait(timeout=120)
    # ... and it stops with the session.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def session_to_its_end(profile, tmp_path) -> tuple[dict, str, int]:
    """Run the live session of ``profile`` with its page: the page's final state, stderr and the exit status."""
    process, url = start(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    try:
        state = final_state(url)
    finally:
        _, stderr = process.communicate(timeout=60)
    return state, stderr, process.returncode


@pytest.mark.hardware_sim
def test_page_says_what_failed_before_the_first_slice(tmp_path):
    # It said only "failed: stopped before the end" while the terminal said what was wrong.
    profile = profile_text(tmp_path, "camera: {driver: simulated, specimen: {height_px: 96, width_px: 128}}\n"
                                     "focus: {driver: simulated, limits: [-1000, 1000]}\n"
                                     "plan: {z: {bottom: 900, top: 1100, step: 50}}\n")
    state, stderr, status = session_to_its_end(profile, tmp_path)
    said = "error: simulated stage: the plan goes to 1100 um, outside the limits -1000..1000 um (focus.limits)"
    assert said in stderr.splitlines() and status == 1
    assert state["status"] == "failed" and state["message"] == said


@pytest.mark.hardware_sim
def test_page_ends_failed_with_the_terminals_error_when_a_slice_was_lost(tmp_path):
    # It ended "done" with no message while the terminal said a slice was lost and the exit status was 1.
    profile = profile_text(tmp_path, "camera: {driver: simulated, timeout_s: 0.3, specimen: {height_px: 96, "
                                     "width_px: 128}}\nfocus: {driver: simulated}\n"
                                     "plan: {z: {bottom: 0, top: 8, step: 1}}\n"
                                     "faults: {camera: {drop_frames: 3, after_slices: 2}}\n")
    state, stderr, status = session_to_its_end(profile, tmp_path)
    said = ("error: 1 planned slice was lost after the retries (z 2 µm): the stack and the fused image lack them "
            "(see session.json)")
    assert said in stderr.splitlines() and status == 1
    assert state["status"] == "failed" and said in state["message"].splitlines()
    assert state["saved"]["fused"]
    # Where the devices ended (it said "at 8 µm", the last slice's, though the stage had gone back to 0).
    assert state["devices"]["focus"] == "simulated stage: back at 0 µm"
    assert state["devices"]["camera"] == "simulated camera: stopped after 8 slices"
    assert state["devices"]["dropped frames"] == "1"


@pytest.mark.hardware_sim
def test_page_says_a_stage_that_vanished_was_not_sent_back_and_where_it_was_last(tmp_path):
    profile = profile_text(tmp_path, "camera: {driver: simulated, specimen: {height_px: 96, width_px: 128}}\n"
                                     "focus: {driver: simulated}\nplan: {z: {bottom: 0, top: 8, step: 1}}\n"
                                     "faults: {focus: {disconnect: true, after_slices: 4}}\n")
    state, _, status = session_to_its_end(profile, tmp_path)
    assert status == 1 and state["status"] == "failed"
    focus = state["devices"]["focus"]
    assert focus.startswith("simulated stage: could not be sent back (") and "the stage is gone" in focus
    assert focus.endswith("; last at 3 µm, as of the last slice")


def test_a_view_host_that_cannot_be_listened_on_points_at_view_host_and_a_taken_port_at_port(tmp_path, capsys):
    import run_session

    # The option to change was always --port, also where the host was the problem.
    args = ["--profile", str(REPO_ROOT / "profiles" / "simulated.yaml"), "--out", str(tmp_path / "out"), "--view"]
    assert run_session.main([*args, "--view-host", "nosuchhost.invalid", "--port", "0"]) == 1
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "cannot listen on nosuchhost.invalid:0" in said[0]
    assert "give a --view-host that names this machine" in said[0] and "--port" not in said[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_session.main([*args, "--port", str(port)]) == 1
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and f"cannot listen on 127.0.0.1:{port}" in said[0]
    assert said[0].endswith("choose another --port (0 takes any free one)") and "--view-host" not in said[0]
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.hardware_sim
def test_the_terminal_says_the_page_stays_up_after_the_end_and_ctrl_c_closes_it(tmp_path):
    """The terminal was silent while the page lingered (--view-linger-s): the run looked hung. It now says, once,
    that the session has ended and for how long the page stays up, and a ctrl-c then ends the lingering only."""
    import signal

    profile = profile_text(tmp_path, "camera: {driver: simulated, specimen: {height_px: 96, width_px: 128}}\n"
                                     "focus: {driver: simulated}\nplan: {z: {bottom: 0, top: 4, step: 2}}\n")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(profile),
                                "--out", str(tmp_path / "sessions"), "--view", "--port", "0", "--view-linger-s", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)  # (tests Ctrl-C it: see with_default_sigint)
    lines = lines_until_the_page_stays_up(process)
    url = lines[0].split()[-1]
    assert lines[-1] == (f"live view: the session has ended (done); the page stays up 60 s more at {url} "
                         "(ctrl-c closes it sooner)\n"), lines
    # The summary is printed as the session ends, before the lingering (it came only after it).
    assert lines[1].startswith("session: 3 of 3 slices") and any(line.startswith("  fused: ") for line in lines)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err  # (the session had succeeded: the ctrl-c ended the lingering only)
    assert out == ""


@pytest.mark.hardware_sim
def test_an_interrupted_run_does_not_keep_its_page_up_the_whole_linger(tmp_path):
    """After a Ctrl-C, the page stayed up the whole --view-linger-s (600 s) and a second Ctrl-C was needed: it stays
    up a few seconds, for the page to show the interruption, says so, and the run ends by itself."""
    import signal

    # (A camera that stops answering after the first slice, and is waited for long: the run cannot end by itself
    # before the Ctrl-C.)
    profile = profile_text(tmp_path, "camera: {driver: simulated, timeout_s: 600, give_up_after_s: 600, specimen: "
                                     "{height_px: 96, width_px: 128}}\nfocus: {driver: simulated}\n"
                                     "plan: {z: {bottom: 0, top: 8, step: 2}}\n"
                                     "faults: {camera: {silent: true, after_slices: 1}}\n")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(profile),
                                "--out", str(tmp_path / "sessions"), "--view", "--port", "0", "--view-linger-s", "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)  # (tests Ctrl-C it: see with_default_sigint)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        process.send_signal(signal.SIGINT)
        lines = lines_until_the_page_stays_up(process)
        assert lines[-1] == (f"live view: the session was interrupted; the page stays up 3 s more at "
                             f"{url}, for it to show where the session stopped (not the --view-linger-s, "
                             "which is for a run that ends by itself)\n"), lines
        out, err = process.communicate(timeout=120)  # (no second Ctrl-C)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert out == ""


def lines_until_the_page_stays_up(process: subprocess.Popen, timeout_s: float = 300) -> list[str]:
    """What the run prints on stdout up to the line that says the page stays up, which ends the list. A run that
    has not said it within ``timeout_s`` is killed (its profile may wait minutes for a silent camera)."""
    assert process.stdout is not None
    lines = []
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:  # (the old code lingered its 60 s in silence, and the loop ended with the program)
            lines.append(line)
            if "stays up" in line:
                break
    finally:
        watchdog.cancel()
    return lines


def test_a_refusion_s_rows_and_summary_are_printed_before_the_page_lingers(tmp_path):
    """With --view-linger-s the refusion's rows and its summary.json line came only after the lingering: they are
    printed as the refusion ends, then the page stays up."""
    import signal

    import tifffile

    from tests.conftest import rendered

    slices = rendered(color=False, shape=(64, 80)).slices
    tifffile.imwrite(tmp_path / "small.tif", np.stack(slices), photometric="minisblack")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse",
                                str(tmp_path / "small.tif"), "--out", str(tmp_path / "out"), "--view", "--port", "0",
                                "--view-linger-s", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)  # (tests Ctrl-C it: see with_default_sigint)
    lines = lines_until_the_page_stays_up(process)
    assert lines[-1].startswith("live view: the refusion has ended (done); the page stays up 60 s more"), lines
    assert any(line.split()[:2] == ["small", str(len(slices))] for line in lines), lines  # (its row)
    assert f"summary: {tmp_path / 'out' / 'summary.json'}\n" in lines
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out == "", err


def states_until_the_end(url: str, timeout_s: float = 120.0) -> list[dict]:
    """Every state the page is told, up to the one that says the run ended."""
    states: list[dict] = []
    deadline = time.monotonic() + timeout_s
    with urllib.request.urlopen(url + "events", timeout=30) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                states.append(json.loads(line.removeprefix("data: ")))
                if states[-1]["status"] not in ("starting", "running"):
                    return states
            assert time.monotonic() < deadline, "the live view never said the run ended"
    raise AssertionError("the event stream closed before the run ended")


@pytest.mark.hardware_sim
def test_page_hears_of_each_failed_try_while_a_device_is_retried(tmp_path):
    """While the camera was retried (seconds without a frame), the page got no event: it looked frozen. Each failed
    try is now news: the page says which slice, which try, and that it tries again; the counts follow."""
    profile = profile_text(tmp_path, "camera: {driver: simulated, timeout_s: 0.3, specimen: {height_px: 96, "
                                     "width_px: 128}}\nfocus: {driver: simulated}\n"
                                     "plan: {z: {bottom: 0, top: 8, step: 1}}\n"
                                     "faults: {camera: {drop_frames: 3, after_slices: 2}}\n")
    process, url = start(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    try:
        states = states_until_the_end(url)
    finally:
        process.communicate(timeout=60)
    while_retried = [s for s in states if s["acquired"] == 2 and s["status"] == "running" and s["notice"]]
    assert while_retried, [(s["acquired"], s["notice"]) for s in states]
    first = while_retried[0]
    assert first["notice"].startswith("slice 3: snap failed (try ") and "no frame within" in first["notice"]
    assert first["devices"]["camera"] == f"simulated camera: {first['notice']}"
    assert any(s["notice"].endswith("; trying again") for s in while_retried)
    assert int(while_retried[-1]["devices"]["retries"]) >= 1
    assert states[-1]["notice"] == "" and states[-1]["devices"]["dropped frames"] == "1"


def refusion_page(tmp_path, stacks: list[Path]):
    """A browser on the live view of ``--refuse stacks``, once it says the refusion ended; and the process."""
    browser = chromium_or_skip()
    process, url = start(["--refuse", *map(str, stacks), "--out", str(tmp_path / "out"), "--workers", "1"])
    browser.get(url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and browser.find_element("id", "status").text not in ("done", "failed"):
        time.sleep(0.2)
    return browser, process


def shown(browser, element_id: str) -> str:
    """The text of a page element as the user sees it ('' where it is hidden)."""
    return browser.execute_script(f"const e = document.getElementById('{element_id}'); "
                                  "return e.offsetParent === null ? '' : e.innerText;")


@pytest.mark.slow
@pytest.mark.browser
def test_refuse_view_where_every_stack_failed_shows_the_failure_not_a_broken_image(tmp_path):
    """Every stack failed, and the page showed a broken fused image (it asked for one that did not exist)."""
    broken = tmp_path / "broken.ome.tif"
    broken.write_bytes(b"not a tiff")
    browser, process = refusion_page(tmp_path, [broken, tmp_path / "missing.ome.tif"])
    try:
        assert browser.find_element("id", "status").text == "failed"
        for name in ("fused", "depth"):  # (it asked for /image/fused.png?v=1, and showed the broken image)
            assert browser.execute_script(f"return document.getElementById('{name}').getAttribute('src')") is None
            assert shown(browser, f"{name}-none") == "none: no stack was fused"
        message = shown(browser, "message").splitlines()
        assert message[0] == "all 2 stacks failed: nothing was fused"
        assert f"error: {tmp_path / 'missing.ome.tif'}: no such file or folder" in message
        browser.save_screenshot(str(tmp_path / "live-view-refuse-all-failed.png"))
    finally:
        browser.quit()
        process.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.browser
def test_refuse_view_shows_the_stacks_warnings_as_warnings(tmp_path):
    """The page showed what the terminal warned of as errors, in the error box; now as warnings, and a refusion
    whose stacks all fused (with warnings) shows no error."""
    import tifffile

    from simulators.render_stack import write_rendered_stack
    from tests.conftest import rendered

    good = write_rendered_stack(tmp_path / "coffee.ome.tif", rendered("coffee", shape=(96, 128)))["stack"]
    one = tmp_path / "single" / "one.ome.tif"
    one.parent.mkdir()
    tifffile.imwrite(one, np.random.default_rng(0).integers(0, 255, (1, 96, 128)).astype(np.uint8),
                     metadata={"axes": "ZYX"})
    browser, process = refusion_page(tmp_path, [good, one])
    try:
        assert browser.find_element("id", "status").text == "done"
        assert shown(browser, "message") == ""
        warnings = shown(browser, "warnings").splitlines()
        assert f"warning: {one}: only one slice; it is returned as it is" in warnings
        assert all(line.startswith("warning: ") for line in warnings)
        assert wait_for_image(browser, "fused")[1] > 0 and shown(browser, "fused-none") == ""
        browser.save_screenshot(str(tmp_path / "live-view-refuse-warnings.png"))
    finally:
        browser.quit()
        process.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.browser
def test_page_clock_runs_while_no_news_comes_and_a_devices_trouble_is_shown(tmp_path):
    """The page's elapsed time came only with events: while a device was retried (no event for seconds) it stood
    still, and the page looked frozen. It now runs on the page, and a failed try shows as a notice at once."""
    from viewer.server import LiveViewServer
    from viewer.state import LiveViewState

    state = LiveViewState("waiting for a camera")
    state.begin(3, "um", {"camera": "test camera: ready"})
    server = LiveViewServer(state, "127.0.0.1", 0).start()
    browser = chromium_or_skip()
    try:
        browser.get(server.url)
        count = lambda: browser.find_element("id", "count").text  # noqa: E731
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "0 of 3 slices" not in count():
            time.sleep(0.1)
        first = count()
        assert first.startswith("0 of 3 slices · ") and first.endswith(" s")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count() == first:  # (no event comes meanwhile)
            time.sleep(0.1)
        assert count() != first, "the page's clock stood still between events"
        said = "slice 1: snap failed (try 1 of 3: no frame within 2 s); trying again"
        state.device_trouble(said, {"camera": f"test camera: {said}", "retries": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not shown(browser, "notice").endswith(said):
            time.sleep(0.1)
        assert shown(browser, "notice").startswith("at ") and shown(browser, "notice").endswith(f" s: {said}")
        assert f"camera: test camera: {said}" in browser.find_element("id", "devices").text
        assert shown(browser, "fused-none") == "none yet"  # (no image, and no broken one)
    finally:
        browser.quit()
        server.stop()


@pytest.mark.slow
@pytest.mark.browser
def test_a_lost_frame_followed_at_once_by_the_next_slice_is_shown_for_a_while(tmp_path, monkeypatch):
    """A lost frame's notice was cleared by the next slice, which came within the page's 0.1 s between updates: the
    page never showed it. It stays shown, with its time, for ``NOTICE_SHOWN_S`` after it happened, then goes."""
    import viewer.state
    from viewer.server import LiveViewServer
    from viewer.state import LiveViewState

    monkeypatch.setattr(viewer.state, "NOTICE_SHOWN_S", 600.0)  # (however slow this machine: till it is made short)
    state = LiveViewState("losing a frame")
    state.begin(5, "um", {"camera": "test camera: ready"})
    server = LiveViewServer(state, "127.0.0.1", 0).start()
    browser = chromium_or_skip()
    frame = np.zeros((32, 32), np.uint8)
    try:
        browser.get(server.url)
        count = lambda: browser.find_element("id", "count").text  # noqa: E731
        wait_until(lambda: count().startswith("0 of 5 slices"))
        said = "slice 1 (at 0 um) lost after its tries: no frame within 2 s; going on without it"
        with state._changed:  # (the page's stream hears nothing until both are done: the slice came within 0.1 s)
            state.device_trouble(said, {"dropped frames": "1"})
            state.slice_acquired(frame, 1, {"camera": "test camera: ok"})
        wait_until(lambda: count().startswith("1 of 5 slices"))
        notice = shown(browser, "notice")
        assert notice.startswith("at ") and notice.endswith(f" s: {said}"), notice
        state.slice_acquired(frame, 2, {})
        wait_until(lambda: count().startswith("2 of 5 slices"))
        assert shown(browser, "notice") == notice  # (a later slice does not clear it)
        monkeypatch.setattr(viewer.state, "NOTICE_SHOWN_S", 0.5)  # (what the page is told with the next event)
        state.slice_acquired(frame, 3, {})
        wait_until(lambda: shown(browser, "notice") == "")  # (gone once its time is up, the run going on)
        assert count().startswith("3 of 5 slices") and state.status == "running"
    finally:
        browser.quit()
        server.stop()


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the page never showed it"
        time.sleep(0.1)
