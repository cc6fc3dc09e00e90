"""Batches on a dask scheduler that others use too, or whose workers die, stop, fill the disk or never come."""
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from distributed.diagnostics.plugin import WorkerPlugin

from fusion.batch import LOCAL_LOST_WORKER_TIMEOUT, StackOutcome
from tests.conftest import REPO_ROOT, small_tmpfs, with_default_sigint


def write_stack(path: Path, n_slices: int, shape=(128, 160), seed=0) -> Path:
    """A mono stack: one texture at a few blur levels, cycled to n_slices."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random(shape), 1.0)
    levels = [ndimage.gaussian_filter(texture, sigma) for sigma in (0.1, 1, 2, 3, 2, 1)]
    planes = np.stack([(levels[i % len(levels)] * 255).astype(np.uint8) for i in range(n_slices)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    return path


def cli(*args, env=None, stderr=subprocess.PIPE) -> subprocess.Popen:
    """run_session.py started, SIGINT at its default (a test may interrupt it)."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO_ROOT, env=env,
                            preexec_fn=with_default_sigint)


@contextlib.contextmanager
def killed_at_the_end(*runs: subprocess.Popen):
    """The runs (and those added to the list it yields) killed where the test ends before they do: a failed
    assertion must not leave one waiting."""
    started = list(runs)
    try:
        yield started
    finally:
        for run in started:
            if run.poll() is None:
                run.kill()
                run.communicate(timeout=60)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def errors_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def one_worker_cluster():
    """A scheduler in this process and one worker process of one thread, as `dask scheduler` and `dask worker`
    on a shared machine would be; a worker dying twice while a task runs gives up on that task. Its nanny restarts a
    worker that dies, for as long as the cluster lives, as a `dask worker`'s does: dask's cluster object also closed
    the nanny where a restart took longer than lost-worker-timeout (on a loaded machine), and the batch then waited
    for a worker for ever."""
    import dask
    from distributed import Client, LocalCluster

    # (lost-worker-timeout is read at each worker's death: set for the cluster's whole life)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.deploy.lost-worker-timeout": LOCAL_LOST_WORKER_TIMEOUT}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.CRITICAL)
        client = Client(cluster, timeout="30s")
        try:
            yield cluster.scheduler_address, client
        finally:
            client.close()
            cluster.close()


def _release(fifo: Path) -> None:
    """Open the pipe for writing and close it: a reader blocked opening it reads an empty stream."""
    with contextlib.suppress(OSError):  # nobody has it open for reading (yet, or any more)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _wanted_refusions(dask_scheduler) -> int:
    """On the scheduler: how many (task, client) pairs wait for a refusion."""
    return sum(len(task.who_wants or ()) for key, task in dask_scheduler.tasks.items() if "refuse" in str(key))


@pytest.mark.slow
def test_two_batches_on_one_scheduler_with_the_same_stack_names_each_fuse_their_own(one_worker_cluster, tmp_path):
    address, client = one_worker_cluster
    # Two days' lists, both 'stack_001'. The first day's is a named pipe: its fusion waits on it until the second
    # batch has submitted, whatever the machine's speed; then it reads an empty stream and fails.
    day1 = tmp_path / "day1" / "stack_001.tif"
    day1.parent.mkdir()
    os.mkfifo(day1)
    day2 = write_stack(tmp_path / "day2" / "stack_001.tif", 6, seed=2)
    first = cli("--refuse", day1, "--out", tmp_path / "out1", "--scheduler", address, "--align", "off")
    with killed_at_the_end(first) as runs:
        deadline = time.monotonic() + 120
        while client.run_on_scheduler(_wanted_refusions) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        second = cli("--refuse", day2, "--out", tmp_path / "out2", "--scheduler", address, "--align", "off")
        runs.append(second)
        while client.run_on_scheduler(_wanted_refusions) < 2 and time.monotonic() < deadline \
                and second.poll() is None:
            time.sleep(0.1)
        while first.poll() is None and time.monotonic() < deadline + 60:
            _release(day1)
            time.sleep(0.1)
        _, first_err = first.communicate(timeout=120)
        _, second_err = second.communicate(timeout=300)
    assert first.returncode == 1 and "day1/stack_001.tif" in "".join(errors_in(first_err))
    # The second batch fused its own stack into its own folder, and says so; nothing of the first's.
    assert second.returncode == 0, second_err
    rows = summary_of(tmp_path / "out2")["stacks"]
    assert [(row["status"], Path(row["stack"])) for row in rows] == [("done", day2)]
    assert tifffile.imread(tmp_path / "out2" / "stack_001.fused.tif").shape == (128, 160)
    assert json.loads((tmp_path / "out2" / "stack_001.json").read_text())["stack"] == str(day2)
    assert "day1" not in second_err
    assert not (tmp_path / "out1" / "stack_001.fused.tif").exists()


def _fusing(dask_worker) -> list:
    """On a worker: the tasks its threads are running."""
    return list(dask_worker.active_threads.values())


@pytest.mark.slow
def test_ctrl_c_with_a_scheduler_stops_the_runs_stacks_on_its_workers(one_worker_cluster, tmp_path):
    address, client = one_worker_cluster
    stacks = [write_stack(tmp_path / "stacks" / f"deep{i}.tif", 80, shape=(384, 512), seed=i) for i in range(2)]
    out = tmp_path / "out"
    run = cli("--refuse", *stacks, "--out", out, "--scheduler", address, "--align", "off")
    with killed_at_the_end(run):
        deadline = time.monotonic() + 120
        while not any(client.run(_fusing).values()) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # well into the first stack (it takes seconds)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    # Nothing of this run is left running on the cluster, nor writes into --out after the program ended.
    assert not any(client.run(_fusing).values())
    assert not client.processing() or not any(client.processing().values())
    summary = summary_of(out)
    assert summary["interrupted"] is True
    assert [row["status"] for row in summary["stacks"]] == ["interrupted", "interrupted"]
    time.sleep(3)
    assert not list(out.glob("*.tif")) and not list(out.glob(".*.partial"))
    # A prompt --resume fuses each stack once.
    again = cli("--refuse", *stacks, "--out", out, "--scheduler", address, "--align", "off", "--resume")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert summary_of(out)["counts"]["done"] == 2


class DiesFusing(WorkerPlugin):
    """A worker plugin that kills its worker process, as the kernel's out-of-memory killer would, whenever it starts
    a task of the stack named ``name``."""

    def __init__(self, name: str):
        self.name = name

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and f"-{self.name}" in str(key):
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_stack_that_kills_its_workers_fails_alone_and_says_why(one_worker_cluster, tmp_path):
    address, client = one_worker_cluster
    client.register_plugin(DiesFusing("hog"), name="dies-fusing-hog")
    # One worker of one thread: the innocent stack waits on the worker beside the hog each time it dies.
    hog = write_stack(tmp_path / "stacks" / "hog.tif", 6, seed=1)
    innocent = write_stack(tmp_path / "stacks" / "innocent.tif", 6, seed=2)
    out = tmp_path / "out"
    run = cli("--refuse", hog, innocent, "--out", out, "--scheduler", address, "--align", "off")
    stdout, stderr = run.communicate(timeout=400)
    assert run.returncode == 1, stderr
    rows = {row["name"]: row for row in summary_of(out)["stacks"]}
    assert rows["innocent"]["status"] == "done"
    assert tifffile.imread(out / "innocent.fused.tif").shape == (128, 160)
    assert rows["hog"]["status"] == "failed"
    errors = errors_in(stderr)
    assert len(errors) == 1 and str(hog) in errors[0]
    assert "worker process died while fusing it" in errors[0] and "out of memory" in errors[0]
    assert "KilledWorker" not in stderr and "Attempted to run task" not in stderr
    assert "worker process died while fusing it" in rows["hog"]["error"]


async def dask_setup(scheduler) -> None:
    """This module as a scheduler's preload (``distributed.scheduler.preload``): each worker that scheduler has gets a
    ``DiesFusing("hog")``, the program's own local cluster's too."""
    from distributed.protocol.pickle import dumps

    await scheduler.register_worker_plugin(None, dumps(DiesFusing("hog")), name="dies-fusing-hog", idempotent=True)


@pytest.mark.slow
def test_a_stack_that_kills_the_local_clusters_workers_while_they_restart_slowly_fails_alone(tmp_path):
    # The program's own cluster; its worker restarts take longer than dask's lost-worker-timeout, as on a loaded
    # machine (a restart took 6-9 s there, and the timer of one death fired while the nanny was restarting after the
    # next). The nanny was closed, and the batch waited for a worker for ever.
    hog = write_stack(tmp_path / "stacks" / "hog.tif", 6, seed=1)
    innocent = write_stack(tmp_path / "stacks" / "innocent.tif", 6, seed=2)
    out = tmp_path / "out"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "tests.test_batch_on_dask",
           "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "1s",  # (a restart takes longer, idle too)
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}  # (two deaths per try, not four: a quicker test)
    run = cli("--refuse", hog, innocent, "--out", out, "--workers", "1", "--align", "off", env=env)
    with killed_at_the_end(run):
        stdout, stderr = run.communicate(timeout=400)
    assert run.returncode == 1 and (out / "summary.json").is_file(), stderr
    rows = {row["name"]: row for row in summary_of(out)["stacks"]}
    assert rows["innocent"]["status"] == "done"
    assert rows["hog"]["status"] == "failed"
    errors = errors_in(stderr)
    assert len(errors) == 1 and str(hog) in errors[0] and "worker process died while fusing it" in errors[0], stderr


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a file system of 300 kB."""
    with small_tmpfs(tmp_path / "small", "300k") as folder:
        yield folder


@pytest.mark.slow
def test_once_out_is_full_the_other_stacks_are_not_run_and_one_line_says_so(small_disk, tmp_path):
    # Each stack's outputs take about 110 kB: two fit, the third does not.
    stacks = [write_stack(tmp_path / "stacks" / f"s{i}.tif", 6, seed=i) for i in range(8)]
    run = cli("--refuse", *stacks, "--out", small_disk, "--workers", "1", "--align", "off")
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    statuses = [row["status"] for row in summary_of(small_disk)["stacks"]]
    assert statuses == ["done", "done", "failed"] + ["not run"] * 5, stderr
    assert summary_of(small_disk)["counts"]["not run"] == 5
    errors = errors_in(stderr)
    assert len(errors) == 1, stderr
    assert "s2.tif" in errors[0] and "5 more stacks were not run" in errors[0] and "--resume" in errors[0]
    assert "not run" in stdout  # the table
    rows = summary_of(small_disk)["stacks"]
    assert all(f"{small_disk} is full" in row["error"] for row in rows[3:])
    assert sorted(p.name for p in small_disk.glob("*.fused.tif")) == ["s0.fused.tif", "s1.fused.tif"]


@pytest.mark.slow
def test_once_out_is_full_a_stack_whose_outputs_are_complete_there_is_done_not_not_run(small_disk, tmp_path):
    # s5's outputs are complete in --out (fused by a run before; as those of a stack another worker finished after
    # the stop): the batch that fills the disk lists it done, not "not run".
    stacks = [write_stack(tmp_path / "stacks" / f"s{i}.tif", 6, seed=i) for i in range(8)]
    first = cli("--refuse", stacks[5], "--out", small_disk, "--align", "off")
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    run = cli("--refuse", *stacks, "--out", small_disk, "--workers", "1", "--align", "off")
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    statuses = [row["status"] for row in summary_of(small_disk)["stacks"]]
    assert statuses == ["done", "failed"] + ["not run"] * 3 + ["done"] + ["not run"] * 2, stderr
    errors = errors_in(stderr)
    assert len(errors) == 1 and "5 more stacks were not run" in errors[0] and "is full" in errors[0], stderr
    # Not a terminal: no bar, one progress line at the end (a batch this short says no more)
    assert [line for line in stderr.splitlines() if line.startswith("refuse:")] == [
        "refuse: 8 of 8 stacks, 1 failed"], stderr


@pytest.mark.slow
def test_an_out_that_turns_read_only_mid_batch_stops_the_batch_in_one_line(tmp_path):
    # A disk error remounts --out's file system read-only: the stacks left are not read and fused in full only to
    # fail at their writes, one error line each; the batch stops as for a full disk and says it is read-only.
    stacks = [write_stack(tmp_path / "stacks" / f"s{i:02d}.tif", 24, shape=(256, 320), seed=i) for i in range(12)]
    with small_tmpfs(tmp_path / "disk", "50m") as disk:
        out = disk / "out"
        run = cli("--refuse", *stacks, "--out", out, "--workers", "1", "--align", "off")
        with killed_at_the_end(run):
            deadline = time.monotonic() + 240
            while not list(out.glob("*.json")) and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.02)
            remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
            assert remounted.returncode == 0, remounted.stderr
            stdout, stderr = run.communicate(timeout=300)
        statuses = [line.split()[-1] for line in stdout.splitlines()[1:] if not line.startswith("summary")]
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=False)
    assert run.returncode == 1, stderr
    assert statuses.count("failed") == 1 and statuses.count("run") >= 5, stdout  # ("not run": its last word)
    stack_errors = [line for line in errors_in(stderr) if "summary" not in line]
    assert len(stack_errors) == 1, stderr
    assert "is read-only" in stack_errors[0] and "not run" in stack_errors[0] and "--resume" in stack_errors[0]
    assert "is full" not in stderr


def without_root_overrides() -> list[str]:
    """The command prefix that runs a program as this user, but where this is root, without the capabilities by which
    root writes into a folder whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): a chmod then stops it, as it
    stops any other user. The test is skipped where setpriv cannot drop them."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
              "--"]
    try:
        tried = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    except OSError as error:
        pytest.skip(f"root, and setpriv cannot be run to drop root's file overrides: {error}")
    if tried.returncode != 0:
        pytest.skip(f"root, and setpriv cannot drop root's file overrides here: {tried.stderr.strip()}")
    return prefix


@pytest.mark.slow
def test_an_out_whose_permission_is_taken_away_mid_batch_stops_the_batch_in_one_line(tmp_path):
    # A chmod (or a changed owner or ACL) mid-batch: every stack left would be read and fused in full only to fail at
    # its write with EACCES, one error line each; the batch stops as for a full or read-only --out, and its line
    # says permission denied and names the folder.
    stacks = [write_stack(tmp_path / "stacks" / f"s{i:02d}.tif", 24, shape=(256, 320), seed=i) for i in range(12)]
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.Popen([*without_root_overrides(), sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse",
                            *map(str, stacks), "--out", str(out), "--workers", "1", "--align", "off"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                           preexec_fn=with_default_sigint)
    try:
        with killed_at_the_end(run):
            deadline = time.monotonic() + 240
            while not list(out.glob("*.json")) and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.02)
            out.chmod(0o555)
            stdout, stderr = run.communicate(timeout=300)
    finally:
        out.chmod(0o755)
    assert run.returncode == 1, stderr
    statuses = [line.split()[-1] for line in stdout.splitlines()[1:] if not line.startswith("summary")]
    assert statuses.count("failed") == 1 and statuses.count("run") >= 5, stdout  # ("not run": its last word)
    stack_errors = [line for line in errors_in(stderr) if "summary" not in line]
    assert len(stack_errors) == 1, stderr
    said = stack_errors[0]
    assert f"{out} cannot be written: permission denied" in said and "not run" in said and "--resume" in said, said
    assert "is full" not in stderr and "read-only" not in stderr
    assert not list(out.glob(".write-check-*"))  # (the check that the folder refuses new files left nothing)


@pytest.mark.slow
def test_progress_goes_to_a_file_as_plain_lines_while_the_batch_runs(tmp_path):
    # nohup, cron, `| tee`: stderr is a file, where a bar shows nothing until the end. The line's interval (30 s)
    # is cut to none by UMS_FUSION_PROGRESS_LINE_S, leaving one line every 10% of the stacks.
    stacks = [write_stack(tmp_path / "stacks" / f"s{i:02d}.tif", 12, shape=(192, 256), seed=i) for i in range(10)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        run = cli("--refuse", *stacks, "--out", tmp_path / "out", "--workers", "1", "--align", "off",
                  env={**os.environ, "UMS_FUSION_PROGRESS_LINE_S": "0"}, stderr=stderr)
        with killed_at_the_end(run):
            assert _wait_for_line(log, "refuse: 1 of 10 stacks", run, timeout_s=240) is not None, log.read_text()
            assert run.poll() is None  # said while the batch runs, not at its end
            run.communicate(timeout=300)
    assert run.returncode == 0, log.read_text()
    said = log.read_text()
    assert "\r" not in said
    lines = [line for line in said.splitlines() if line.startswith("refuse:")]
    assert lines[-1] == "refuse: 10 of 10 stacks, 0 failed", said
    assert len(lines) == 10 and all(line.endswith(" left") for line in lines[:-1]), said


@pytest.fixture
def scheduler_without_workers():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    try:
        yield cluster
    finally:
        cluster.close()


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout_s: float) -> float | None:
    """Seconds until ``text`` appeared in the file ``path``, or None (the process ended, or ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s and process.poll() is None:
        if text in path.read_text():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


@contextlib.contextmanager
def said_to_have_no_workers(cluster, tmp_path: Path, *options):
    """A one-stack batch on ``cluster``'s scheduler, which has no workers, once it has said so; yields the run and
    its stderr's file. The note comes after 10 s without workers; the program starts in a few (5x that on a busy
    machine)."""
    stack = write_stack(tmp_path / "stacks" / "s0.tif", 6)
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        run = cli("--refuse", stack, "--out", tmp_path / "out", "--scheduler", cluster.scheduler_address, *options,
                  stderr=stderr)
        with killed_at_the_end(run):
            assert _wait_for_line(log, "has no workers yet", run, timeout_s=75) is not None, log.read_text()
            yield run, log


@pytest.mark.slow
def test_a_scheduler_without_workers_is_said_once_and_the_batch_waits_for_them(scheduler_without_workers, tmp_path):
    cluster = scheduler_without_workers
    with said_to_have_no_workers(cluster, tmp_path, "--align", "off") as (run, log):
        cluster.scale(1)
        run.communicate(timeout=300)
    said = log.read_text()
    assert run.returncode == 0, said
    note = [line for line in said.splitlines() if "has no workers yet" in line]
    assert len(note) == 1 and f"dask worker {cluster.scheduler_address}" in note[0]
    assert tifffile.imread(tmp_path / "out" / "s0.fused.tif").shape == (128, 160)


@pytest.mark.slow
def test_ctrl_c_ends_the_wait_for_workers(scheduler_without_workers, tmp_path):
    with said_to_have_no_workers(scheduler_without_workers, tmp_path) as (run, log):
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    assert run.returncode == 130, log.read_text()
    assert summary_of(tmp_path / "out")["counts"]["interrupted"] == 1


@pytest.mark.slow
def test_a_scheduler_whose_workers_died_and_did_not_come_back_is_said_mid_batch(one_worker_cluster, tmp_path):
    # Every worker gone mid-batch and none coming back (a cluster that gave up restarting them, as dask's did on a
    # loaded machine; a job queue's workers whose jobs ended): the batch waited for one without a word.
    address, client = one_worker_cluster
    stack = tmp_path / "stacks" / "waits.tif"
    stack.parent.mkdir()
    os.mkfifo(stack)  # its fusion waits on the pipe: the stack is on the worker when the worker goes
    log = tmp_path / "stderr.txt"
    try:
        with log.open("w") as stderr:
            run = cli("--refuse", stack, "--out", tmp_path / "out", "--scheduler", address, "--align", "off",
                      stderr=stderr)
            with killed_at_the_end(run):
                deadline = time.monotonic() + 120
                while not any(client.processing().values()) and time.monotonic() < deadline:
                    time.sleep(0.1)
                client.cluster.scale(0)  # its worker closed for good
                assert _wait_for_line(log, "has had no workers", run, timeout_s=150) is not None, log.read_text()
                run.send_signal(signal.SIGINT)
                run.communicate(timeout=60)
    finally:
        _release(stack)
    said = log.read_text()
    assert run.returncode == 130, said
    note = [line for line in said.splitlines() if "has had no workers" in line]
    assert len(note) == 1 and f"the scheduler at {address}" in note[0] and f"dask worker {address}" in note[0], said
    assert "Ctrl-C stops" in note[0]


@pytest.mark.slow
def test_workers_that_die_as_the_local_cluster_starts_are_one_error_line(tmp_path):
    # Each worker process dies as it starts, as one the kernel kills for lack of memory.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if '--multiprocessing-fork' in sys.orig_argv:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    stacks = [write_stack(tmp_path / "stacks" / f"s{i}.tif", 6, seed=i) for i in range(2)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO_ROOT)])}
    run = cli("--refuse", *stacks, "--out", tmp_path / "out", "--workers", "2", env=env)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr and "Nanny failed" not in stderr, stderr
    assert errors_in(stderr) == [line for line in stderr.splitlines() if line.strip()], stderr
    [error] = errors_in(stderr)
    assert "the local cluster could not start its worker processes" in error
    assert "out of memory" in error and "--workers 1" in error


# Worker processes that start once: each later one dies as it starts (``later``, run in it before anything else).
WORKERS_START_ONCE = """import os, signal, sys
if '--multiprocessing-fork' in sys.orig_argv:
    try:
        os.close(os.open(os.environ['FIRST_WORKER_STARTED'], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
{later}
"""
# As one the kernel's out-of-memory killer kills: the memory the first one had is taken meanwhile.
KILLED_AS_IT_STARTS = "        os.kill(os.getpid(), signal.SIGKILL)"
# As where the program's files changed under the batch (an update): the worker's preload no longer imports.
PRELOAD_GONE = """        class Gone:
            def find_spec(self, name, path=None, target=None):
                if name == 'fusion.batch':
                    raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        sys.meta_path.insert(0, Gone())"""


def batch_whose_worker_starts_once(tmp_path: Path, later: str) -> tuple[subprocess.Popen, Path]:
    """A batch of two stacks on the program's own cluster of one worker: 'innocent' is fused, then 'hog' kills the
    worker (``DiesFusing``) and every start of a worker after the first dies (``later``)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(WORKERS_START_ONCE.format(later=later))
    # (submitted first, the innocent stack runs first on the one worker)
    stacks = [write_stack(tmp_path / "stacks" / f"{name}.tif", 6, seed=seed) for seed, name in enumerate(
        ["innocent", "hog"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO_ROOT)]),
           "FIRST_WORKER_STARTED": str(tmp_path / "first-worker-started"),
           "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "tests.test_batch_on_dask"}
    out = tmp_path / "out"
    return cli("--refuse", *stacks, "--out", out, "--workers", "1", "--align", "off", env=env), out


@pytest.mark.slow
@pytest.mark.parametrize("later,why", [
    (KILLED_AS_IT_STARTS, "the last was killed by SIGKILL, signal 9, most often out of memory"),
    (PRELOAD_GONE, "the last failed to start: ModuleNotFoundError: No module named 'fusion.batch'"),
])
def test_workers_that_cannot_start_again_end_the_batch_in_one_line_with_what_was_done(tmp_path, later, why):
    # The worker died mid-batch and each restart died as it started: dask's nanny tried again for ever (or closed),
    # and the batch said it had no workers and waited for them until Ctrl-C.
    run, out = batch_whose_worker_starts_once(tmp_path, later)
    with killed_at_the_end(run):
        _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    rows = {row["name"]: row for row in summary_of(out)["stacks"]}
    assert rows["innocent"]["status"] == "done" and (out / "innocent.fused.tif").is_file()
    assert rows["hog"]["status"] == "not run" and why in rows["hog"]["error"], rows["hog"]
    [error] = errors_in(stderr)
    assert error.startswith("error: the local cluster's worker processes could not start again, and 1 of 2 stacks "
                            "were not fused (1 is, its outputs complete): "), stderr
    assert why in error and error.endswith("run the same command with --resume to fuse the rest"), stderr
    assert "has had no workers" not in stderr and "Failed to start process" not in stderr, stderr


@pytest.mark.slow
def test_workers_over_their_memory_limit_as_they_start_end_the_batch_in_one_line(tmp_path):
    # A memory limit too small for a worker to start in (dask's: here a thousandth of the machine's memory): its nanny
    # stopped each worker as it started, and started another, and the batch waited for one until Ctrl-C.
    stacks = [write_stack(tmp_path / "stacks" / f"s{i}.tif", 6, seed=i) for i in range(2)]
    out = tmp_path / "out"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": "0.001"}
    run = cli("--refuse", *stacks, "--out", out, "--workers", "1", "--align", "off", env=env)
    with killed_at_the_end(run):
        _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    [error] = errors_in(stderr)
    # (as the batch runs; or, on a slow machine, as the cluster starts)
    assert "worker processes could not start again" in error or "could not start its worker processes" in error
    assert "the last was stopped by its nanny: it took more memory than its limit lets it, try fewer --workers" in error
    rows = summary_of(out)["stacks"] if (out / "summary.json").is_file() else []
    assert all(row["status"] in ("done", "not run") for row in rows), rows


def test_warnings_that_differ_only_by_their_stack_are_one_line_with_a_count(tmp_path):
    from fusion.batch import stack_warning_lines

    small = "frames of 64x64 px are too small to align (at least 192 px on the short side); slices are not aligned"
    outcomes = [StackOutcome(str(tmp_path / f"s{i:04}.tif"), f"s{i:04}", "done", 6, 0.1,
                             warnings=[f"{tmp_path / f's{i:04}.tif'}: {small}"]) for i in range(300)]
    outcomes[7].warnings.append(f"{tmp_path / 's0007.tif'}: little focus information")
    outcomes[9] = StackOutcome(str(tmp_path / "s0009.tif"), "s0009", "skipped", 6, 0.1,
                               warnings=[f"{tmp_path / 's0009.tif'}: {small}"])  # said when it was fused
    assert stack_warning_lines(outcomes) == [
        f"{tmp_path / 's0000.tif'}: {small} (and 298 more stacks)",
        f"{tmp_path / 's0007.tif'}: little focus information",
    ]
    two = outcomes[:2]
    assert stack_warning_lines(two) == [f"{tmp_path / 's0000.tif'}: {small} (and 1 more stack)"]
    # The summary keeps every stack's own.
    assert [len(outcome.warnings) for outcome in two] == [1, 1]


@pytest.mark.slow
def test_a_batchs_shared_warning_is_printed_once_with_a_count(tmp_path):
    stacks = [write_stack(tmp_path / f"s{i}.tif", 5, shape=(64, 80), seed=i) for i in range(3)]
    run = cli("--refuse", *stacks, "--out", tmp_path / "out", "--workers", "1")
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    small = [line for line in stderr.splitlines() if "too small to align" in line]
    assert small == [f"warning: {stacks[0]}: frames of 80x64 px are too small to align (at least 192 px on the short "
                     "side); slices are not aligned (and 2 more stacks)"]
    assert all(len(row["warnings"]) >= 1 for row in summary_of(tmp_path / "out")["stacks"])  # (each its own)


def test_a_stopped_refusion_ends_at_its_next_slice_and_writes_nothing(tmp_path):
    # A batch's stop is an event that the stack checks between slices, not an exception raised into the worker's
    # thread from outside: one that landed inside numba's first load of a kernel left every later stack on that
    # worker failing ("generator raised StopIteration").
    import threading

    from fusion.refuse import RefusionStopped, refuse_stack

    class SetAtTheFifthLook(threading.Event):  # (as if the batch stopped while slice 4 was read)
        looks = 0

        def is_set(self) -> bool:
            self.looks += 1
            return self.looks >= 5

    stack = write_stack(tmp_path / "stack.tif", 40, shape=(96, 128))
    stop = SetAtTheFifthLook()
    with pytest.raises(RefusionStopped):
        refuse_stack(stack, tmp_path / "out", stop=stop)
    assert stop.looks == 5 and not list((tmp_path / "out").iterdir())
    report = refuse_stack(stack, tmp_path / "again", stop=threading.Event())  # the next stack fuses as usual
    assert report.n_slices == 40


@contextlib.contextmanager
def cluster_started_by_hand(tmp_path: Path, n_workers: int = 2):
    """`dask scheduler` and ``n_workers`` of `dask worker ADDRESS --nthreads 1 --no-nanny` on 127.0.0.1, as a user
    starts them (without a nanny, as on machines of their own, a worker outlives its scheduler until its task ends);
    yields the address and the scheduler's process. Each is killed at the end."""
    from tests.test_batch import _address_when_written

    scheduler_file = tmp_path / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(scheduler_file)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        address = _address_when_written(scheduler_file, deadline=time.monotonic() + 60)
        started += [subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT, env=env, start_new_session=True)
            for _ in range(n_workers)]
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address, started[0]
    finally:
        for process in started:  # (each in a session of its own: its group is it and its children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_a_scheduler_killed_mid_batch_leaves_a_summary_that_says_what_is_on_disk(tmp_path):
    # s0 is small: once its outputs are in place, the other worker is still well into s1, which takes seconds.
    stacks = [write_stack(tmp_path / "stacks" / "s0.tif", 6)] + [
        write_stack(tmp_path / "stacks" / f"s{i}.tif", 160, shape=(512, 640), seed=i) for i in range(1, 6)]
    out = tmp_path / "out"
    with cluster_started_by_hand(tmp_path) as (address, scheduler):
        run = cli("--refuse", *stacks, "--out", out, "--scheduler", address, "--align", "off")
        with killed_at_the_end(run):
            deadline = time.monotonic() + 180
            while not list(out.glob("s[0-9]*.json")) and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.05)
            scheduler.kill()  # as `kill -9`: its workers live on, one with s1 in hand
            stdout, stderr = run.communicate(timeout=120)
        summary_s = (out / "summary.json").stat().st_mtime
        time.sleep(8)  # what a worker that outlived its scheduler was still to write, it has
    assert run.returncode == 1, stderr
    # One line says what happened and what to do; no traceback of dask's.
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    [error] = errors_in(stderr)
    assert f"the scheduler at {address} went away" in error and "--resume" in error
    # Each row says what is on disk: done where the stack's outputs are complete, lost where none are.
    rows = {row["name"]: row for row in summary_of(out)["stacks"]}
    complete = {path.name.removesuffix(".json") for path in out.glob("s[0-9]*.json")}
    assert {name for name, row in rows.items() if row["status"] == "done"} == complete, stderr
    assert {row["status"] for row in rows.values()} == {"done", "lost"}, rows
    assert all("went away" in row["error"] for row in rows.values() if row["status"] == "lost")
    assert "failed" not in stdout and "lost" in stdout  # the table
    assert summary_of(out)["counts"]["lost"] == len(stacks) - len(complete)
    assert all(path.stat().st_mtime <= summary_s for path in out.glob("s[0-9]*.*")), "written after the summary"
    for name in complete:
        assert tifffile.imread(out / f"{name}.fused.tif").shape == ((128, 160) if name == "s0" else (512, 640))
    # --resume fuses the lost stacks, and only those.
    again = cli("--refuse", *stacks, "--out", out, "--workers", "1", "--align", "off", "--resume")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert summary_of(out)["counts"] == {"done": len(stacks) - len(complete), "skipped": len(complete), "failed": 0}
