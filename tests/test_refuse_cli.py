"""`run_session.py --refuse`: outputs, reports, failures per stack, progress only on a terminal."""
import contextlib
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
import tifffile

from simulators.render_stack import write_rendered_stack
from tests.conftest import REPO_ROOT, rendered, usage_error


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stacks")
    colour = write_rendered_stack(folder / "colour.ome.tif", rendered())["stack"]
    mono12 = write_rendered_stack(folder / "mono12.ome.tif",
                                  rendered("gravel", "steps", color=False, bit_depth=12))["stack"]
    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(colour.read_bytes()[:5000])
    return {"colour": colour, "mono12": mono12, "corrupt": corrupt}


@pytest.mark.slow
def test_refusion_writes_fused_depth_and_report(stacks, tmp_path):
    done = run_cli("--refuse", stacks["colour"], stacks["mono12"], "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("colour", "mono12"):
        slices = tifffile.imread(stacks[name])
        fused = tifffile.imread(tmp_path / f"{name}.fused.tif")
        depth = tifffile.imread(tmp_path / f"{name}.depth.tif")
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert fused.shape == slices.shape[1:] and fused.dtype == slices.dtype
        assert depth.shape == slices.shape[1:3] and depth.dtype == np.float32
        assert report["method"] == "sf" and report["n_slices"] == len(slices)
        assert len(report["focus_scores"]) == len(slices)
        assert {"read", "measure", "compose", "write", "total"} <= set(report["seconds"])
        assert report["depth_unit"] == "um"
        # z positions came from the OME metadata, so the depth map is in micrometres; NaN where
        # the specimen has no texture to tell depth by, and the report says how much has a depth.
        assert np.nanmin(depth) >= min(report["z_positions_um"]) and np.nanmax(depth) <= max(report["z_positions_um"])
        assert report["depth_defined_fraction"] == pytest.approx(np.isfinite(depth).mean(), abs=1e-4)
        assert report["depth_defined_fraction"] > 0.5
    assert fused.max() <= 4095  # 12-bit data stays 12-bit


@pytest.mark.slow
def test_one_bad_stack_does_not_stop_the_others(stacks, tmp_path):
    done = run_cli("--refuse", stacks["corrupt"], tmp_path / "missing", stacks["colour"], "--out", tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "corrupt.tif" in errors[0] and "missing: no such file" in errors[1]
    assert (tmp_path / "colour.fused.tif").exists()
    assert "\r" not in done.stderr  # piped: no progress bar


@pytest.mark.slow
def test_method_and_composition_are_recorded(stacks, tmp_path):
    done = run_cli("--refuse", stacks["colour"], "--out", tmp_path, "--method", "laplacian",
                   "--composition", "pick", "--feather-px", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "colour.json").read_text())
    assert report["method"] == "laplacian" and report["settings"]["composition"] == "pick"


def test_bad_options_are_usage_errors(stacks, tmp_path, capsys):
    assert "invalid choice: 'sharpest'" in usage_error(capsys, "--refuse", stacks["colour"], "--out", tmp_path,
                                                       "--method", "sharpest")
    assert "focus window must be at least 1 pixel" in usage_error(capsys, "--refuse", stacks["colour"], "--out",
                                                                  tmp_path, "--window-px", "0")
    (tmp_path / "a.tif").write_bytes(b"")  # --out naming a file (a stack, say): not "[Errno 17] File exists"
    assert f"--out {tmp_path / 'a.tif'} is a file; give a folder" in usage_error(capsys, "--refuse", stacks["colour"],
                                                                                "--out", tmp_path / "a.tif")


def test_refusion_options_in_a_live_session_are_usage_errors(tmp_path, capsys):
    assert "--workers, --resume: only with --refuse" in usage_error(capsys, "--out", tmp_path, "--workers", "2",
                                                                    "--resume")
    assert not any(tmp_path.iterdir())  # nothing acquired, nothing written


@pytest.mark.slow
def test_options_the_composition_does_not_use_are_named_in_a_warning(stacks, tmp_path):
    done = run_cli("--refuse", stacks["mono12"], "--out", tmp_path, "--window-px", "7", "--sharpness", "2")
    assert done.returncode == 0, done.stderr
    assert "warning: --window-px applies to --composition blend and pick; the pyramid composition" in done.stderr
    assert "warning: --sharpness applies to --composition blend; the pyramid composition" in done.stderr
    done = run_cli("--refuse", stacks["mono12"], "--out", tmp_path, "--composition", "blend", "--sharpness", "2")
    assert done.returncode == 0 and "warning: --sharpness" not in done.stderr


def test_a_second_run_in_one_process_reports_only_its_own_warnings(stacks, tmp_path, capsys):
    import run_session

    assert run_session.main(["--refuse", str(stacks["colour"]), "--out", str(tmp_path / "a"), "--window-px", "7"]) == 0
    first = json.loads((tmp_path / "a" / "summary.json").read_text())["warnings"]
    assert any(warning.startswith("--window-px applies to") for warning in first)
    assert run_session.main(["--refuse", str(stacks["colour"]), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["warnings"] == []
    capsys.readouterr()


@pytest.mark.slow
def test_progress_bar_on_a_terminal(stacks, tmp_path):
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", str(stacks["colour"]),
         "--out", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=terminal, cwd=REPO_ROOT)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    os.close(controller)
    assert b"slice" in output and b"colour" in output


def test_a_truncated_multipage_tiff_is_one_clear_error_line(tmp_path):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.zeros((8, 64, 64), np.uint8), metadata={"axes": "ZYX"})
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    done = run_cli("--refuse", cut, "--out", tmp_path / "out")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(line.startswith(f"error: {cut}: truncated or corrupt") for line in errors), done.stderr
    assert not any("tifffile" in line or "Traceback" in line or "list index" in line for line in errors), done.stderr


@pytest.mark.parametrize("mode", ["refuse", "live"])
def test_live_view_options_out_of_range_are_usage_errors_before_anything_moves(tmp_path, capsys, mode):
    given = ["--refuse", tmp_path / "s.tif"] if mode == "refuse" else []
    for option, value, why in [("--port", "99999", "99999 is not a port number (0 to 65535"),
                               ("--port", "-1", "-1 is not a port number (0 to 65535"),
                               ("--view-linger-s", "1e308", "'1e308': give a number of seconds from 0 to 3600"),
                               ("--view-linger-s", "nan", "'nan': give a number of seconds from 0 to 3600")]:
        stderr = usage_error(capsys, *given, "--out", tmp_path / "out", "--view", option, value)
        assert f"error: argument {option}: {why}" in stderr, stderr
        assert not (tmp_path / "out").exists()  # nothing acquired, fused or written


def test_options_that_have_no_effect_say_so(tmp_path):
    from tests.test_batch import write_stack

    stack = write_stack(tmp_path / "s.tif", 6)
    done = run_cli("--refuse", stack, "--out", tmp_path / "out", "--align", "off", "--align-model", "affine",
                   "--port", "9000", "--view-linger-s", "1", "--view-host", "127.0.0.2", "--device", "cuda")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "has no effect" in line]
    assert warnings == [
        "warning: --port has no effect without --view (no live view is served)",
        "warning: --view-host has no effect without --view (no live view is served)",
        "warning: --view-linger-s has no effect without --view (no live view is served)",
        "warning: --align-model has no effect: alignment is off (--align auto or on uses it)",
        # The default measure (sf) has no torch device: --device cuda was taken in silence.
        "warning: --device has no effect: it applies to --method ums; the sf measure runs without torch, "
        "on the CPU"], done.stderr


def a_closed_port() -> int:
    """A loopback port that nothing listens on (just let go by the system)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_that_refuses_is_one_line_naming_it_and_what_to_check(tmp_path):
    """dask retried a refused connection for 30 s, then said "Timed out trying to connect" and nothing more."""
    from tests.test_batch import write_stack

    stack = write_stack(tmp_path / "s.tif", 6)
    address = f"tcp://127.0.0.1:{a_closed_port()}"
    done = run_cli("--refuse", stack, "--out", tmp_path / "out", "--scheduler", address)
    assert done.returncode == 1 and "Timed out" not in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: --scheduler {address}: cannot reach a dask scheduler there: the connection "
                                "was refused: nothing listens on port")
    assert "check that the scheduler is running" in errors[0] and "leave --scheduler out" in errors[0]
    assert not list((tmp_path / "out").glob("*.fused.tif"))


@pytest.mark.parametrize("address, said", [
    ("http://127.0.0.1:8787", "--scheduler http://127.0.0.1:8787: not a scheduler address: dask does not speak http:// "
                              "(the dashboard's page is not the scheduler)"),
    ("tcp://127.0.0.1:99999", "--scheduler tcp://127.0.0.1:99999: 99999 is not a port (1 to 65535)"),
    ("tcp://127.0.0.1:x86", "--scheduler tcp://127.0.0.1:x86: 'x86' is not a port (1 to 65535)"),
    ("", "--scheduler is empty"),
    ("tcp://:8786", "--scheduler tcp://:8786: names no host"),
])
def test_a_scheduler_address_that_names_no_scheduler_says_what_is_wrong_with_it(tmp_path, address, said):
    """dask said "unknown address scheme 'http' (known schemes: [...])"; port 99999 was "nothing listens on port
    99999"; an empty address "the host '' is not known here"."""
    from tests.test_batch import write_stack

    stack = write_stack(tmp_path / "s.tif", 6)
    done = run_cli("--refuse", stack, "--out", tmp_path / "out", "--scheduler", address)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: {said}; give the address `dask scheduler` printed, tcp://HOST:PORT"), errors
    assert "leave --scheduler out" in errors[0] and "known schemes" not in errors[0]
    assert not list((tmp_path / "out").glob("*.fused.tif"))


def test_something_else_listening_at_the_scheduler_address_is_said_after_dasks_connect_timeout():
    """A listener that never answers (as the dashboard's HTTP port does to dask's handshake): dask waited for ever."""
    import socket

    import dask
    import distributed  # noqa: F401  (its config defaults first: leaving dask.config.set would drop them)

    from fusion.scheduler_check import check_scheduler

    with socket.socket() as deaf:
        deaf.bind(("127.0.0.1", 0))
        deaf.listen(4)  # connections complete in the backlog; nothing reads or answers them
        address = f"tcp://127.0.0.1:{deaf.getsockname()[1]}"
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
                pytest.raises(OSError, match=rf"^--scheduler {address}: something listens on port \d+ of 127.0.0.1, "
                                             r"but it did not answer as a dask scheduler within 1 s"):
            check_scheduler(address)


def test_a_server_that_answers_in_another_protocol_at_the_scheduler_address_is_one_error_line():
    """An HTTP server's answer, read by dask as a frame length, asked numpy for 3 EiB: a traceback."""
    import socket
    import threading

    from fusion.scheduler_check import check_scheduler

    answered = []
    done = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(0.1)  # accept() wakes to see ``done``

        def answer() -> None:
            # Every connection: the first is check_scheduler's TCP probe, dask's handshake the second (answering one
            # only left dask's unanswered, to wait out its 30 s connect timeout: the case of the test above).
            while not done.is_set():
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 8)
                    answered.append(True)
                    with contextlib.suppress(OSError):
                        connection.recv(1024)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        try:
            with pytest.raises(OSError, match=rf"^--scheduler {address}: something listens on port \d+ of 127.0.0.1, "
                                              r"but it did not answer as a dask scheduler"):
                check_scheduler(address)
        finally:
            done.set()
            thread.join(timeout=10)
    assert len(answered) >= 2  # dask's own connection was answered in HTTP, not left waiting


def small_stack(path, seed: int):
    """A small mono stack of 5 slices, sharp in different places (quick to fuse)."""
    from scipy import ndimage

    texture = ndimage.gaussian_filter(np.random.default_rng(seed).random((96, 128)), 1.0)
    planes = np.stack([(ndimage.gaussian_filter(texture, sigma) * 255).astype(np.uint8) for sigma in (2, 1, 0.1, 1, 2)])
    tifffile.imwrite(path, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    return str(path)


def summary_rows(out) -> dict:
    return {row["name"]: row["status"] for row in json.loads((out / "summary.json").read_text())["stacks"]}


def test_runs_into_one_out_keep_each_others_rows_in_its_summary(tmp_path, capsys):
    # A second run into the same --out (one more stack, --resume) replaced summary.json: the first run's rows were
    # gone. The summary covers every stack the folder holds or a run there tried; this run's row of a stack wins.
    import run_session

    a, b = small_stack(tmp_path / "a.tif", 0), small_stack(tmp_path / "b.tif", 1)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\0not a tiff")
    out = tmp_path / "out"
    assert run_session.main(["--refuse", a, str(broken), "--out", str(out)]) == 1
    assert run_session.main(["--refuse", b, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary_rows(out) == {"b": "done", "a": "done", "broken": "failed"}
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1} and summary["earlier_rows"] == 2
    assert run_session.main(["--refuse", a, b, "--out", str(out), "--resume"]) == 0
    assert summary_rows(out) == {"a": "skipped", "b": "skipped", "broken": "failed"}
    # A finished stack whose outputs were removed since is no longer in the folder: its row goes
    (out / "a.json").unlink()
    assert run_session.main(["--refuse", b, "--out", str(out), "--resume"]) == 0
    assert summary_rows(out) == {"b": "skipped", "broken": "failed"}
    capsys.readouterr()


def test_a_damaged_earlier_summary_is_kept_aside_and_the_run_goes_on(tmp_path, capsys):
    import run_session

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"stacks": [{"name": "a", "st')  # cut short
    (out / "summary.json.damaged").write_text("an earlier one")
    assert run_session.main(["--refuse", small_stack(tmp_path / "b.tif", 1), "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert f"warning: {out / 'summary.json'}: the earlier summary cannot be read" in said, said
    assert f"kept aside as {out / 'summary.json.damaged.1'}" in said, said
    assert (out / "summary.json.damaged.1").read_text() == '{"stacks": [{"name": "a", "st'
    assert (out / "summary.json.damaged").read_text() == "an earlier one"
    summary = json.loads((out / "summary.json").read_text())
    assert summary_rows(out) == {"b": "done"} and summary["earlier_rows"] == 0
    assert any("the earlier summary cannot be read" in warning for warning in summary["warnings"])


def test_a_finished_stack_missing_one_of_its_outputs_loses_its_row_in_the_next_summary(tmp_path, capsys):
    # Only its report was looked for: a stack whose fused image had been removed stayed "done".
    import run_session
    a, b = small_stack(tmp_path / "a.tif", 0), small_stack(tmp_path / "b.tif", 1)
    out = tmp_path / "out"
    assert run_session.main(["--refuse", a, b, "--out", str(out)]) == 0
    (out / "a.fused.tif").unlink()
    assert run_session.main(["--refuse", b, "--out", str(out), "--resume"]) == 0
    assert summary_rows(out) == {"b": "skipped"}
    capsys.readouterr()


def test_two_runs_writing_their_summaries_into_one_out_at_once_keep_each_others_rows(tmp_path, monkeypatch):
    # Each run read the summary there, merged its rows and wrote it back: a run that read before the other wrote
    # put back a summary without the other's rows. The merge is under the summary's lock now. (The first reader is
    # held up after reading, to open the window that a slow disk opens.)
    import threading

    from fusion import batch

    out = tmp_path / "out"
    out.mkdir()
    first_has_read, read = threading.Event(), batch.earlier_summary_rows

    def slow_read(path):
        rows = read(path)
        if threading.current_thread().name == "first":
            first_has_read.set()
            time.sleep(0.5)
        return rows

    monkeypatch.setattr(batch, "earlier_summary_rows", slow_read)

    def run(names):
        outcomes = [batch.StackOutcome(str(tmp_path / f"{name}.tif"), name, "failed", error="x") for name in names]
        batch.write_summary(out, outcomes, 1.0, None)

    first = threading.Thread(target=run, args=(["a", "b"],), name="first")
    first.start()
    first_has_read.wait(timeout=30)
    run(["c", "d"])
    first.join(timeout=60)
    assert set(summary_rows(out)) == {"a", "b", "c", "d"}
