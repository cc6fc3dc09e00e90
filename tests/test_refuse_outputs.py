"""How a refusion writes its outputs and ends: two runs writing one stack at once, a disk that fills during a
write, a summary that cannot be written, a terminal that hangs up."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import multiprocessing
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import REPO_ROOT, small_tmpfs, with_default_sigint
from tests.test_refuse_bad_inputs import error_lines, run_cli, write_stack
from tests.test_refuse_signals import _wchan

# ---- the staging folder: tests put a trap (/dev/full, a named pipe) in a writer's own folder ----

# Runs run_session.py with each staging folder made as usual, then given ``name``: a symbolic link to ``target``, or
# (target "fifo") a named pipe. Arguments: name, target, then run_session.py's own.
_RUN_WITH_TRAP = """
import os, runpy, sys
from fusion.staged_outputs import StagedOutputs
name, target = sys.argv[1:3]
del sys.argv[1:3]
made = StagedOutputs.new_folder
def new_folder(self):
    folder = made(self)
    if target == "fifo":
        os.mkfifo(folder / name)
    else:
        (folder / name).symlink_to(target)
    return folder
StagedOutputs.new_folder = new_folder
sys.argv[0] = "run_session.py"
runpy.run_path("run_session.py", run_name="__main__")
"""


def cli_with_trap(name: str, target: str, *args) -> list[str]:
    """The command line of run_session.py ``args`` whose staging folders each hold ``name``: a link to ``target``
    (/dev/full: every write fails with ENOSPC), or a named pipe (``target`` "fifo": a write there waits for ever)."""
    return [sys.executable, "-c", _RUN_WITH_TRAP, name, target, *map(str, args)]


def trap_staging(monkeypatch, name: str, target: str) -> None:
    """As ``cli_with_trap``, in this process."""
    from fusion.staged_outputs import StagedOutputs

    made = StagedOutputs.new_folder

    def new_folder(self):
        folder = made(self)
        (folder / name).symlink_to(target)
        return folder

    monkeypatch.setattr(StagedOutputs, "new_folder", new_folder)


# ---- 1: two runs writing the same stack into the same folder at once ----

def _refuse_meeting_the_other(stack: str, out: str, window_px: int, met, said) -> None:
    """Fuse ``stack`` with ``window_px``; once its fused image and depth map are written (aside), wait for the other
    run to have written its own: both then write their reports and move their sets at once."""
    import fusion.refuse
    from fusion.engine import FusionSettings

    write_depth = fusion.refuse.write_depth_tiff

    def depth_then_meet(*args, **kwargs):
        write_depth(*args, **kwargs)
        met.wait(timeout=120)

    fusion.refuse.write_depth_tiff = depth_then_meet
    try:
        fusion.refuse.refuse_stack(stack, out, FusionSettings(composition="pick", window_px=window_px), progress=False)
    except Exception as error:
        said.put(f"window {window_px}: {error}")
    else:
        said.put(None)


@pytest.mark.slow
def test_two_runs_writing_one_stack_at_once_each_finish_and_leave_one_runs_whole_set(tmp_path):
    """Both runs used the one hidden folder .s.partial: one failed ("cannot write s.fused.tif into ...: No such file
    or directory"), or the set left mixed one run's report with the other's images, which --resume then kept."""
    from fusion.engine import FusionSettings
    from fusion.refuse import refuse_stack

    stack = write_depth_stack(tmp_path / "s.tif")
    expected = {}
    for window_px in (9, 31):  # each run's outputs, made alone
        refuse_stack(stack, tmp_path / f"w{window_px}", FusionSettings(composition="pick", window_px=window_px),
                     progress=False)
        expected[window_px] = {kind: tifffile.imread(tmp_path / f"w{window_px}" / f"s.{kind}.tif")
                               for kind in ("fused", "depth")}
    for kind in ("fused", "depth"):  # (which run's image it is shows)
        assert not np.array_equal(expected[9][kind], expected[31][kind], equal_nan=True)

    out = tmp_path / "out"
    out.mkdir()
    context = multiprocessing.get_context("spawn")
    met, said = context.Barrier(2), context.Queue()
    runs = [context.Process(target=_refuse_meeting_the_other, args=(str(stack), str(out), window_px, met, said))
            for window_px in (9, 31)]
    for run in runs:
        run.start()
    errors = [said.get(timeout=300) for _ in runs]
    for run in runs:
        run.join(timeout=60)
    assert errors == [None, None]
    assert sorted(p.name for p in out.iterdir()) == ["s.depth.tif", "s.fused.tif", "s.json"]  # no folder, no lock
    window_px = json.loads((out / "s.json").read_text())["settings"]["window_px"]
    for kind in ("fused", "depth"):
        np.testing.assert_array_equal(tifffile.imread(out / f"s.{kind}.tif"), expected[window_px][kind])


def write_depth_stack(path: Path, n_slices: int = 6, shape=(96, 128)) -> Path:
    """A stack whose slice k is sharp in the k-th band of columns and blurred more the farther a band is from it:
    its depth map steps across the image, and the window of the focus measure moves the steps."""
    from scipy import ndimage

    texture = ndimage.gaussian_filter(np.random.default_rng(3).random(shape), 1.0)
    band = np.arange(shape[1]) * n_slices // shape[1]
    planes = []
    for k in range(n_slices):
        blurred = [ndimage.gaussian_filter(texture, 0.1 + 1.5 * distance) for distance in range(n_slices)]
        planes.append(np.stack([blurred[abs(b - k)][:, column] for column, b in enumerate(band)], axis=1))
    tifffile.imwrite(path, (np.stack(planes) * 255).astype(np.uint8), photometric="minisblack",
                     metadata={"axes": "ZYX"})
    return path


def test_another_live_writers_folder_is_left_alone_and_a_dead_ones_removed(tmp_path):
    from fusion.output_names import refusion_outputs
    from fusion.outputs import write_json
    from fusion.staged_outputs import StagedOutputs

    out = tmp_path / "out"
    out.mkdir()
    live = StagedOutputs(refusion_outputs(out, "s"), tmp_path / "s.tif")
    live.write("report", lambda path: write_json(path, {"from": "live"}))
    dead = out / ".s.partial" / "1-dead"  # a writer killed mid-write: its folder, nobody holding its lock
    dead.mkdir()
    (dead / ".writer").touch()
    (dead / "s.fused.tif").write_bytes(b"II*\0")
    other = StagedOutputs(refusion_outputs(out, "s"), tmp_path / "s.tif")
    other.write("report", lambda path: write_json(path, {"from": "other"}))
    assert not dead.exists()
    assert json.loads((live.folder / "s.json").read_text()) == {"from": "live"}  # (untouched)
    other.discard()
    assert live.folder.is_dir()
    live.discard()
    assert sorted(p.name for p in out.iterdir()) == []


# ---- 2: a disk that fills during a write ----

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


def fill(disk: Path, leave_bytes: int) -> None:
    """``disk`` filled but for about ``leave_bytes``."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - leave_bytes))


def test_a_disk_that_fills_during_a_tiff_write_is_said_to_be_full(tmp_path, small_disk):
    """It said "cannot write s.depth.tif into DIR: 147456 requested and 76716 written": numpy's short write, under
    tifffile, carries no errno."""
    stack = write_stack(tmp_path / "s.tif", 6, shape=(192, 192))  # fused image 37 kB, depth map 148 kB
    out = small_disk / "out"
    out.mkdir()
    fill(small_disk, 100_000)
    done = run_cli("--refuse", stack, "--out", out)
    assert done.returncode == 1, done.stderr
    assert error_lines(done.stderr) == [f"error: {stack}: cannot write s.depth.tif into {out}: No space left on "
                                        "device; free some space there or write elsewhere"], done.stderr
    assert sorted(p.name for p in out.iterdir() if p.name != "summary.json") == []  # none of the stack's outputs


def test_a_short_write_with_room_left_on_the_disk_is_not_called_a_full_disk(tmp_path):
    """A file size limit (or a quota) cuts the depth map short while the disk has room: said so, not as a full
    disk, nor as numpy's "36864 requested and 7100 written"."""
    stack = write_stack(tmp_path / "s.tif", 6, shape=(192, 192))  # fused image 37 kB, depth map 148 kB
    out = tmp_path / "out"
    out.mkdir()

    def limit_files_to_100_kb():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

    done = run_cli("--refuse", stack, "--out", out, preexec_fn=limit_files_to_100_kb)
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert errors[0].startswith(f"error: {stack}: cannot write s.depth.tif into {out}: the write came short ("), errors
    assert errors[0].endswith(" written) with room left on that disk: a disk quota or a file size limit "
                              "(ulimit -f) may have been reached"), errors
    assert not list(out.glob("s.*"))


# ---- 3: a summary that cannot be written ----

@pytest.mark.slow
def test_a_summary_that_cannot_be_written_still_shows_the_table_and_each_stacks_error(tmp_path):
    """Only "error: cannot write summary.json into ..." was printed: no table, no stack's error, no count."""
    good = write_stack(tmp_path / "good.tif", 6)
    bad = tmp_path / "bad.tif"
    bad.write_text("not a TIFF")
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)  # as a full disk would, it takes no summary
    done = run_cli("--refuse", good, bad, "--out", out, "--workers", "1", "--align", "off")
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line.split()[-1] for line in done.stdout.splitlines()[1:]}
    assert rows == {"good": "done", "bad": "failed"}, done.stdout
    assert "summary:" not in done.stdout
    lines = done.stderr.splitlines()
    assert lines[-3].startswith(f"error: {bad}: ")
    assert lines[-2:] == ["1 of 2 stacks failed", f"error: cannot write summary.json into {out}: Is a directory"]
    assert (out / "good.fused.tif").is_file()


# ---- 4: SIGHUP: a terminal that closes, an ssh session that drops ----

def _refusion_waiting_on_a_pipe(tmp_path, stacks=(), options=(), **popen) -> tuple[subprocess.Popen, Path, Path]:
    """A refusion of ``stacks`` and a stack that is a named pipe, with ``options``, started: opening the pipe waits
    for a writer that never comes, so the refusion is certainly still running when a signal comes."""
    waiting = tmp_path / "waiting.tif"
    os.mkfifo(waiting)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", *map(str, stacks),
                                str(waiting), "--out", str(out), *options], cwd=REPO_ROOT, **popen)
    return process, waiting, out


def _wait_until_blocked_on_the_pipe(process) -> None:
    deadline = time.monotonic() + 120
    while process.poll() is None and _wchan(process.pid) != "wait_for_partner":
        assert time.monotonic() < deadline, "the refusion never opened the stack"
        time.sleep(0.01)


@pytest.mark.slow
def test_sighup_during_a_batch_ends_it_as_sigterm_does(tmp_path):
    """It died of the signal (exit 129, no message, no summary), and the resource tracker warned of leaked
    semaphores: the cluster was never closed."""
    good = write_stack(tmp_path / "good.tif", 6)
    process, waiting, out = _refusion_waiting_on_a_pipe(
        tmp_path, [good], ["--workers", "1", "--align", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=with_default_sigint)
    deadline = time.monotonic() + 180
    while not (out / "good.json").exists():  # the cluster runs: its one worker has fused the good stack
        assert time.monotonic() < deadline and process.poll() is None, "the batch never fused its good stack"
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        with_a_writer_that_goes(waiting)  # the worker waiting on the pipe reads an empty stream: the cluster closes
        time.sleep(0.1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 129, stderr
    assert (f"hung up (SIGHUP): run the same command with --resume to finish the stacks left in {out} "
            f"({out / 'summary.json'} says which finished)") in stderr.splitlines()
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert {row["name"]: row["status"] for row in summary["stacks"]} == {"good": "done", "waiting": "interrupted"}


def with_a_writer_that_goes(fifo: Path) -> None:
    """Open the pipe for writing and close it: a reader blocked opening it reads an empty stream."""
    with contextlib.suppress(OSError):  # nobody has it open for reading (yet, or any more)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_terminal_that_hangs_up_ends_a_refusion_with_its_summary_and_status_129(tmp_path):
    """The program's terminal closes (an ssh session drops): every write to it fails from then on (EIO), which
    must not cut the summary short nor change the exit status."""
    terminal, program_side = pty.openpty()

    def on_that_terminal():
        with_default_sigint()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # (start_new_session: the program leads a session of its own)

    process, _, out = _refusion_waiting_on_a_pipe(tmp_path, stdin=program_side, stdout=program_side,
                                                  stderr=program_side, start_new_session=True,
                                                  preexec_fn=on_that_terminal)
    os.close(program_side)
    try:
        _wait_until_blocked_on_the_pipe(process)
    finally:
        _drain(terminal)
        os.close(terminal)  # the hang-up: SIGHUP to the program, and its terminal gone
    assert process.wait(timeout=120) == 129
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["interrupted"] == 1


def _drain(terminal: int) -> None:
    """What the program wrote so far read (a full terminal would hold its writes)."""
    while select.select([terminal], [], [], 0)[0]:
        try:
            if not os.read(terminal, 65536):
                return
        except OSError as error:
            assert error.errno == errno.EIO
            return


def test_sighup_ignored_by_nohup_stays_ignored(tmp_path):
    def as_nohup_starts_it():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    process, _, _ = _refusion_waiting_on_a_pipe(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                preexec_fn=as_nohup_starts_it)
    _wait_until_blocked_on_the_pipe(process)
    process.send_signal(signal.SIGHUP)  # (had it stopped the run, the exit status would say SIGHUP's 129)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM): run the same command with --resume" in stderr and "hung up" not in stderr


def test_stacks_fused_side_by_side_in_threads_each_keep_their_own_warnings(tmp_path):
    # A `dask worker` with several threads fuses stacks side by side: warnings.catch_warnings is the process's, so
    # some stacks lost their warnings or got another's.
    from concurrent.futures import ThreadPoolExecutor

    import tifffile

    from fusion.refuse import refuse_stack

    rng = np.random.default_rng(0)
    stacks = []
    for index in range(8):
        path = tmp_path / f"s{index}.tif"
        tifffile.imwrite(path, (rng.random((4, 48, 64)) * 255).astype(np.uint8), photometric="minisblack")
        stacks.append(path)
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda path: refuse_stack(path, tmp_path / "out", progress=False), stacks))
    for path, report in zip(stacks, reports):
        assert report.warnings and all(warning.startswith(f"{path}:") for warning in report.warnings), \
            (path, report.warnings)
