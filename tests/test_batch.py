"""Batch refusion on real dask clusters: local, separate processes, a dying worker, resume."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from fusion.batch import StackOutcome, format_table, refuse_many
from fusion.stack_arguments import check_unique_names, expand_stack_arguments
from fusion.errors import StackNotFoundError
from tests.conftest import REPO_ROOT, usage_error, with_default_sigint



def write_stack(path: Path, n_slices: int, shape=(128, 160), seed=0) -> Path:
    """A mono stack: one texture at a few blur levels, cycled to n_slices."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random(shape), 1.0)
    levels = [ndimage.gaussian_filter(texture, sigma) for sigma in (0.1, 1, 2, 3, 2, 1)]
    planes = np.stack([(levels[i % len(levels)] * 255).astype(np.uint8) for i in range(n_slices)])
    tifffile.imwrite(path, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    return path


@pytest.fixture(scope="module")
def small_stacks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    good = [write_stack(folder / f"pos{i}.tif", 8, seed=i) for i in range(4)]
    corrupt = folder / "broken.tif"
    corrupt.write_bytes(good[0].read_bytes()[:3000])
    return good, corrupt


@pytest.fixture(scope="module")
def slow_stacks(tmp_path_factory):
    """Stacks that keep a worker busy for a while each, so a test can act while one runs."""
    folder = tmp_path_factory.mktemp("slow")
    return [write_stack(folder / f"deep{i}.tif", 80, shape=(384, 512), seed=i) for i in range(4)]


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, **kwargs)


@pytest.mark.slow
def test_local_cluster_of_two_workers_fuses_good_stacks_and_reports_the_corrupt_one(small_stacks, tmp_path):
    good, corrupt = small_stacks
    done = run_cli("--refuse", *good[:2], corrupt, *good[2:], "--out", tmp_path, "--workers", "2")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.tif" in errors[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["status"] for row in summary["stacks"]] == ["done", "done", "failed", "done", "done"]
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 1}
    for path in good:
        assert tifffile.imread(tmp_path / f"{path.stem}.fused.tif").shape == (128, 160)
    # The table on the terminal: stack, slices, seconds, status.
    assert "pos3" in done.stdout and "broken" in done.stdout and "failed" in done.stdout


def _address_when_written(scheduler_file: Path, deadline: float) -> str:
    """The scheduler's address once its file is whole: it exists for a moment before the JSON is in it."""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.1)
    raise AssertionError(f"the dask scheduler wrote no address to {scheduler_file}")


@pytest.fixture
def separate_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, without nannies."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = _address_when_written(scheduler_file, deadline=time.monotonic() + 60)
    workers = {}
    for name in ("w1", "w2"):
        workers[name] = subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name,
             "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
        processes.append(workers[name])
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield address, workers
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.mark.slow
def test_existing_cluster_through_scheduler_address(separate_cluster, small_stacks, tmp_path):
    address, _ = separate_cluster
    good, _ = small_stacks
    done = run_cli("--refuse", *good, "--out", tmp_path, "--scheduler", address)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scheduler"] == address and summary["counts"]["done"] == 4
    from distributed import Client

    from fusion.scheduler_check import check_scheduler

    with Client(address, timeout="30s") as client:
        worker = next(iter(client.scheduler_info()["workers"]))
    with pytest.raises(OSError, match="that is a dask worker's address, not its scheduler's"):
        check_scheduler(worker)  # an easy mistake: dask then failed with a TypeError traceback


@pytest.mark.slow
def test_a_worker_killed_mid_stack_has_its_stack_redone_on_another(separate_cluster, slow_stacks, tmp_path):
    address, workers = separate_cluster
    from distributed import Client

    cli = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", *map(str, slow_stacks),
                            "--out", str(tmp_path), "--scheduler", address, "--align", "off"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    killed = None
    with Client(address, timeout="30s") as observer:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and cli.poll() is None:
            names = {addr: info["name"] for addr, info in observer.scheduler_info()["workers"].items()}
            # (two calls to the scheduler: a worker may join between them, busy before it is in ``names``)
            busy = [names[addr] for addr, keys in observer.processing().items() if keys and addr in names]
            if busy:
                killed = busy[0]
                workers[killed].send_signal(signal.SIGKILL)
            time.sleep(0.02)
    stdout, stderr = cli.communicate(timeout=300)
    assert killed is not None, "no worker was seen running a stack"
    assert workers[killed].wait(timeout=30) == -signal.SIGKILL
    assert cli.returncode == 0, stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["done"] == len(slow_stacks)
    for path in slow_stacks:
        assert tifffile.imread(tmp_path / f"{path.stem}.fused.tif").shape == (384, 512)


@pytest.mark.slow
@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_resume_after_an_interrupted_run(small_stacks, tmp_path, stop, status):
    """Ctrl-C, or the terminal closing (SIGHUP), to the whole process group: one line, then --resume finishes."""
    good, _ = small_stacks
    # The last stack is a named pipe: opening it waits for a writer, so the run is certainly
    # unfinished when it is interrupted, whatever the machine's speed.
    waiting = tmp_path / "stacks" / "waiting.tif"
    waiting.parent.mkdir()
    os.mkfifo(waiting)
    stacks = [*good, waiting]
    out = tmp_path / "out"
    cli = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", *map(str, stacks),
                            "--out", str(out), "--workers", "1", "--align", "off"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                           preexec_fn=with_default_sigint, process_group=0)
    deadline = time.monotonic() + 180
    while not list(out.glob("*.json")) and time.monotonic() < deadline and cli.poll() is None:
        time.sleep(0.05)
    # As a terminal's Ctrl-C or hangup: to the whole process group, the cluster's worker processes included.
    os.killpg(cli.pid, stop)
    deadline = time.monotonic() + 120
    while cli.poll() is None and time.monotonic() < deadline:
        _release(waiting)  # the worker waiting on the pipe reads an empty stream: the cluster closes sooner
        time.sleep(0.1)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == status, stderr
    assert "--resume" in stderr
    assert "Traceback" not in stderr  # the workers leave Ctrl-C to the program, which closes them
    # (multiprocessing's resource tracker, killed by a hangup, was started again and flooded: "process died
    # unexpectedly", and a KeyError traceback for each semaphore let go after)
    assert "resource_tracker" not in stderr
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "summary.json"}
    assert 0 < len(finished) < len(stacks)
    stopped = json.loads((out / "summary.json").read_text())  # which stacks finished, and which did not
    assert stopped["interrupted"] is True
    assert sorted(f"{row['name']}.json" for row in stopped["stacks"] if row["status"] == "done") == sorted(finished)
    assert [row["status"] for row in stopped["stacks"] if row["name"] == "waiting"] == ["interrupted"]
    assert stopped["counts"]["interrupted"] == len(stacks) - len(finished)

    waiting.unlink()
    write_stack(waiting, 8, seed=9)  # the stack that could not be read is a file now
    done = run_cli("--refuse", *stacks, "--out", out, "--workers", "1", "--resume", "--align", "off")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped"] == len(finished)
    assert summary["counts"]["done"] == len(stacks) - len(finished)
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime  # untouched
    assert not list(out.glob(".*.partial"))


def _release(fifo: Path) -> None:
    """Open the pipe for writing and close it: a reader blocked opening it reads an empty stream."""
    with contextlib.suppress(OSError):  # nobody has it open for reading (yet, or any more)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_stack_arguments_expand_globs_and_lists(small_stacks, tmp_path):
    good, corrupt = small_stacks
    folder = good[0].parent
    listing = tmp_path / "stacks.txt"
    listing.write_text(f"# positions\n{good[0]}\n\n{good[1]}\n")
    assert expand_stack_arguments([str(folder / "pos*.tif")]) == sorted(good)
    assert expand_stack_arguments([f"@{listing}", str(corrupt)]) == [good[0], good[1], corrupt]
    with pytest.raises(StackNotFoundError, match="matches nothing"):
        expand_stack_arguments([str(folder / "nothing*.tif")])
    with pytest.raises(StackNotFoundError, match="no such list file"):
        expand_stack_arguments([f"@{tmp_path / 'missing.txt'}"])
    (tmp_path / "empty.txt").write_text("# none yet\n\n")
    with pytest.raises(StackNotFoundError, match="empty.txt: the list file names no stacks"):
        expand_stack_arguments([f"@{tmp_path / 'empty.txt'}"])


def test_a_glob_skips_files_that_are_not_image_stacks_and_says_how_many(small_stacks, tmp_path):
    """A README or a metadata file beside the stacks is not a failed stack; an image file that cannot be read is."""
    good, corrupt = small_stacks
    for path in (good[0], corrupt):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "README.md").write_text("positions 0-3, 2 um steps\n")
    (tmp_path / "acquisition.json").write_text("{}")
    (tmp_path / "folder").mkdir()  # a folder is a stack (of slices, or an NDTiff dataset) and stays
    with pytest.warns(UserWarning, match=r"\*: skipped 2 files that are not image stacks \(README.md, acquisition.json"
                                         r"\); stacks are folders and .* files") as caught:
        stacks = expand_stack_arguments([str(tmp_path / "*")])
    assert len(caught) == 1 and ".tif" in str(caught[0].message) and ".png" in str(caught[0].message)
    assert stacks == [tmp_path / "broken.tif", tmp_path / "folder", tmp_path / "pos0.tif"]
    only_notes = str(tmp_path / "*.*[dn]")  # README.md, acquisition.json
    with pytest.raises(StackNotFoundError, match=r"matches only 2 files that are not image stacks"):
        expand_stack_arguments([only_notes])
    assert expand_stack_arguments([str(tmp_path / "README.md")]) == [tmp_path / "README.md"]  # named: its error


def test_a_batch_report_has_no_rows_for_the_notes_beside_the_stacks(small_stacks, tmp_path):
    good, _ = small_stacks
    source = tmp_path / "data"
    source.mkdir()
    (source / good[0].name).write_bytes(good[0].read_bytes())
    (source / "README.md").write_text("one position\n")
    (source / "pos0.json").write_text("{}")
    done = run_cli("--refuse", source / "*", "--out", tmp_path / "out", "--align", "off")
    assert done.returncode == 0, done.stderr
    assert "skipped 2 files that are not image stacks" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(row["name"], row["status"]) for row in summary["stacks"]] == [("pos0", "done")]


def test_a_glob_over_its_own_out_folder_passes_over_the_last_runs_outputs(small_stacks, tmp_path):
    """`--refuse "data/*.tif" --out data`, run again: the fused images and depth maps of the first run (named as
    ``fusion.output_names`` names them) are not stacks, as they are not in a folder of slices; one warning says so."""
    good, _ = small_stacks
    data = tmp_path / "data"
    data.mkdir()
    (data / good[0].name).write_bytes(good[0].read_bytes())
    first = run_cli("--refuse", data / "*.tif", "--out", data, "--align", "off")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in data.glob("*.tif")) == ["pos0.depth.tif", "pos0.fused.tif", "pos0.tif"]
    (data / "README.md").write_text("one position\n")
    again = run_cli("--refuse", data / "*", "--out", data, "--align", "off")
    assert again.returncode == 0, again.stderr
    summary = json.loads((data / "summary.json").read_text())
    assert [(row["name"], row["status"]) for row in summary["stacks"]] == [("pos0", "done")]
    skipped = [line for line in again.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1, again.stderr  # one warning for all that was passed over
    assert "skipped 2 outputs of earlier fusions (pos0.depth.tif, pos0.fused.tif)" in skipped[0]
    assert "and 3 files that are not image stacks (README.md, pos0.json, summary.json)" in skipped[0]
    with pytest.raises(StackNotFoundError, match=r"matches only 1 output of an earlier fusion \(pos0.fused.tif\)"):
        expand_stack_arguments([str(data / "*.fused.tif")])
    with pytest.raises(StackNotFoundError, match=r"the stacks given are only 1 output of an earlier fusion"):
        expand_stack_arguments([str(data / "pos0.fused.tif")])  # named alone, it is still a result, not a stack


def test_our_outputs_are_passed_over_however_they_are_named(small_stacks, tmp_path):
    """`--refuse data/*.tif --out data` run twice, the shell's glob naming the first run's outputs one by one:
    they are known for ours (named so, with their report beside) and passed over with one line, as they are by a
    quoted glob and in a folder; a depth map alone is known by its description; a fused image named so without a
    report of ours beside it is anyone's image, and a stack."""
    good, _ = small_stacks
    data = tmp_path / "data"
    data.mkdir()
    (data / good[0].name).write_bytes(good[0].read_bytes())
    assert run_cli("--refuse", data / "pos0.tif", "--out", data, "--align", "off").returncode == 0
    as_a_shell_expands = sorted(data.glob("*.tif"))
    assert [p.name for p in as_a_shell_expands] == ["pos0.depth.tif", "pos0.fused.tif", "pos0.tif"]
    again = run_cli("--refuse", *as_a_shell_expands, "--out", data, "--align", "off")
    assert again.returncode == 0, again.stderr
    skipped = [line for line in again.stderr.splitlines() if "skipped" in line]
    assert skipped == ["warning: skipped 2 outputs of earlier fusions (pos0.depth.tif, pos0.fused.tif); "
                       "our results, not stacks"], again.stderr
    assert sorted(p.name for p in data.glob("*.tif")) == ["pos0.depth.tif", "pos0.fused.tif", "pos0.tif"]
    summary = json.loads((data / "summary.json").read_text())
    assert [(row["name"], row["status"]) for row in summary["stacks"]] == [("pos0", "done")]
    # The run's own warnings are in its summary too, not only on the terminal.
    assert summary["warnings"] == [skipped[0].removeprefix("warning: ")]

    with pytest.warns(UserWarning, match=r"\*.tif: skipped 2 outputs of earlier fusions"):
        assert expand_stack_arguments([str(data / "*.tif")]) == [data / "pos0.tif"]
    with pytest.warns(UserWarning, match=r"data: skipped 2 outputs of earlier fusions"):
        assert expand_stack_arguments([str(data)]) == [data / "pos0.tif"]
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("pos0.depth.tif", "pos0.fused.tif"):
        (alone / name).write_bytes((data / name).read_bytes())
    with pytest.raises(StackNotFoundError, match=r"only 1 output of an earlier fusion \(pos0.depth.tif\)"):
        expand_stack_arguments([str(alone / "pos0.depth.tif")])
    assert expand_stack_arguments([str(alone / "pos0.fused.tif")]) == [alone / "pos0.fused.tif"]


@pytest.mark.slow
def test_a_glob_over_session_folders_refuses_each_sessions_stack(tmp_path):
    """A glob's folders are read as the same folders named one by one: a live session's folder holds its stack
    (stack.ome.tif) beside its fused.tif and depth.tif, and is refused as that stack."""
    sessions = tmp_path / "sessions"
    names = ["20261127-211834", "20261127-211834-2"]
    for index, name in enumerate(names):
        (sessions / name).mkdir(parents=True)
        write_stack(sessions / name / "stack.ome.tif", 6, seed=index)
        tifffile.imwrite(sessions / name / "fused.tif", np.zeros((128, 160), np.uint8))
        tifffile.imwrite(sessions / name / "depth.tif", np.zeros((128, 160), np.float32))
        (sessions / name / "session.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a session's own fused.tif and depth.tif go without saying)
        assert expand_stack_arguments([str(sessions / "*")]) == [sessions / name / "stack.ome.tif" for name in names]
    done = run_cli("--refuse", sessions / "*", "--out", tmp_path / "out", "--workers", "1", "--align", "off")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(row["name"], row["status"], row["slices"]) for row in summary["stacks"]] == \
        [(name, "done", 6) for name in names]


@pytest.mark.slow
def test_a_local_cluster_has_no_more_workers_than_stacks_to_fuse(small_stacks, tmp_path):
    from distributed import default_client

    good, _ = small_stacks
    workers_seen = []  # by the scheduler, as each stack comes back
    outcomes = refuse_many(good[:2], tmp_path, n_workers=5, progress=False,
                           on_outcome=lambda outcome: workers_seen.append(len(default_client().nthreads())))
    assert [outcome.status for outcome in outcomes] == ["done", "done"]
    assert workers_seen == [2, 2]


def test_more_workers_than_the_machine_can_use_is_a_usage_error(tmp_path, capsys):
    cores = os.cpu_count() or 1
    stderr = usage_error(capsys, "--refuse", tmp_path / "s.tif", "--out", tmp_path / "out", "--workers", 4 * cores + 1)
    assert f"--workers {4 * cores + 1} is more than this machine can use: at most {4 * cores} (4 per core" in stderr
    assert not (tmp_path / "out").exists()


def test_resume_keeps_a_skipped_stacks_warnings_in_the_summary_and_does_not_repeat_them(small_stacks, tmp_path):
    good, _ = small_stacks
    first = run_cli("--refuse", good[0], "--out", tmp_path)
    said = [line for line in first.stderr.splitlines() if line.startswith("warning:")]
    assert said  # (frames of 128x160 px are too small to align)
    again = run_cli("--refuse", good[0], "--out", tmp_path, "--resume")
    assert again.returncode == 0 and not [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    row = json.loads((tmp_path / "summary.json").read_text())["stacks"][0]
    assert row["status"] == "skipped" and [f"warning: {w}" for w in row["warnings"]] == said


def test_resume_fuses_again_a_stack_whose_outputs_are_damaged(small_stacks, tmp_path):
    """Only a whole set is skipped: each output must open as a TIFF of the stack's size holding all its pixels."""
    good, _ = small_stacks
    out = tmp_path / "out"
    assert refuse_many([good[0]], out, progress=False)[0].status == "done"
    fused, depth = out / "pos0.fused.tif", out / "pos0.depth.tif"
    damages = {"not a TIFF": lambda: depth.write_text("junk\n"),
               "cut short": lambda: fused.write_bytes(fused.read_bytes()[: fused.stat().st_size // 2]),
               "another size": lambda: tifffile.imwrite(depth, np.zeros((64, 160), np.float32))}
    for damage, make in damages.items():
        make()
        assert refuse_many([good[0]], out, resume=True, progress=False)[0].status == "done", damage
        assert refuse_many([good[0]], out, resume=True, progress=False)[0].status == "skipped", damage
    assert tifffile.imread(fused).shape == tifffile.imread(depth).shape == (128, 160)


def test_a_lists_relative_paths_are_its_folders_and_a_missing_one_names_its_line(small_stacks, tmp_path,
                                                                                  monkeypatch):
    good, _ = small_stacks
    data = tmp_path / "data"
    data.mkdir()
    (data / "pos0.tif").write_bytes(good[0].read_bytes())
    listing = data / "stacks.txt"
    listing.write_text(f"# written beside the stacks\npos0.tif\n{good[1]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert expand_stack_arguments(["@../data/stacks.txt"]) == [Path("../data/pos0.tif"), good[1]]
    listing.write_text("pos0.tif\n\nmissing.tif\n")
    with pytest.raises(StackNotFoundError, match=r"data/missing.tif: no such file or folder "
                                                 r"\(line 3 of \.\./data/stacks.txt\)"):
        expand_stack_arguments(["@../data/stacks.txt"])
    listing.write_text("pos0.tif\nnone*.tif\n")
    with pytest.raises(StackNotFoundError, match=r"the pattern matches nothing \(line 2 of \.\./data/stacks.txt\)"):
        expand_stack_arguments(["@../data/stacks.txt"])


def test_two_stacks_with_one_name_are_refused_up_front(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="would both write s.fused.tif"):
        check_unique_names([tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif"])


def test_a_stack_given_twice_is_fused_once_with_a_warning(small_stacks, tmp_path):
    good, _ = small_stacks
    listing = tmp_path / "again.txt"
    listing.write_text(f"{good[1]}\n")
    link = tmp_path / "link.tif"
    link.symlink_to(good[0])
    with pytest.warns(UserWarning, match="given more than once; fused once") as caught:
        assert expand_stack_arguments([str(good[0]), str(good[1]), f"@{listing}", str(link)]) == good[:2]
    assert len(caught) == 2


@pytest.mark.parametrize("name", ["summary.tif", "Summary.tif"])  # one file on macOS and Windows
def test_a_stack_named_summary_is_refused_up_front(tmp_path, name):
    with pytest.raises(ValueError, match=f"{name}: its report would be summary.json"):
        check_unique_names([tmp_path / name])


def test_an_unlistable_folder_is_one_stack_to_report_not_an_error_before_the_batch(small_stacks, tmp_path,
                                                                                    monkeypatch):
    """(A chmod 000 folder, as a user; root reads any folder, so the listing's PermissionError is made here.)"""
    good, _ = small_stacks
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def refused(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    assert expand_stack_arguments([str(good[0]), str(locked)]) == [good[0], locked]


def test_a_folder_with_a_broken_slice_link_fails_alone_and_the_others_are_fused(small_stacks, tmp_path):
    good, _ = small_stacks
    slices = tmp_path / "slices"
    slices.mkdir()
    for k, plane in enumerate(tifffile.imread(good[0])[:3]):
        tifffile.imwrite(slices / f"s{k}.tif", plane)
    (slices / "s3.tif").symlink_to(tmp_path / "offline" / "s3.tif")
    assert expand_stack_arguments([str(good[1]), str(slices)]) == [good[1], slices]
    done = run_cli("--refuse", good[1], slices, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "s3.tif is a link to" in done.stderr and (tmp_path / "out" / f"{good[1].stem}.fused.tif").is_file()


def test_resume_fuses_again_a_different_stack_of_the_same_name_or_one_that_changed(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    stack = write_stack(first / "s.tif", 6, seed=1)
    write_stack(second / "s.tif", 6, seed=2)
    out = tmp_path / "out"
    assert refuse_many([stack], out, progress=False)[0].status == "done"
    assert refuse_many([stack], out, resume=True, progress=False)[0].status == "skipped"
    # Another stack of the same name: fused again, and its report says which stack it is.
    with pytest.warns(UserWarning, match=r"s.tif: replaced .*s.fused.tif, fused earlier from another stack of "
                                         r"that name \(.*first.s.tif\)"):
        assert refuse_many([second / "s.tif"], out, resume=True, progress=False)[0].status == "done"
    assert json.loads((out / "s.json").read_text())["stack"].endswith(str(Path("second") / "s.tif"))
    assert refuse_many([second / "s.tif"], out, resume=True, progress=False)[0].status == "skipped"
    # The same stack with slices added since: fused again, with all of them.
    write_stack(second / "s.tif", 9, seed=2)
    outcome = refuse_many([second / "s.tif"], out, resume=True, progress=False)[0]
    assert outcome.status == "done" and outcome.slices == 9


def test_a_stack_of_the_same_name_that_fails_replaces_nothing_and_says_so(tmp_path):
    """It was said to replace the outputs of the stack fused earlier, before it failed and replaced nothing."""
    import warnings
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    out = tmp_path / "out"
    assert refuse_many([write_stack(tmp_path / "first" / "s.tif", 6, seed=1)], out, progress=False)[0].status == "done"
    fused_before = (out / "s.fused.tif").read_bytes()
    damaged = tmp_path / "second" / "s.tif"
    damaged.write_bytes(write_stack(tmp_path / "whole.tif", 6, seed=2).read_bytes()[:3000])  # cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert refuse_many([damaged], out, progress=False)[0].status == "failed"
    assert not [w for w in caught if "replace" in str(w.message)], [str(w.message) for w in caught]
    assert (out / "s.fused.tif").read_bytes() == fused_before


def test_resume_by_another_path_to_the_same_stack_skips_it_without_a_warning(tmp_path, monkeypatch):
    """The report keeps the stack's absolute path: a relative one, read from another working folder,
    named another stack ("replaces ... fused earlier from another stack")."""
    import warnings
    (tmp_path / "data").mkdir()
    write_stack(tmp_path / "data" / "s.tif", 5, seed=4)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    assert refuse_many([Path("data/s.tif")], out, progress=False)[0].status == "done"
    monkeypatch.chdir(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert refuse_many([Path("s.tif")], out, resume=True, progress=False)[0].status == "skipped"
        assert refuse_many([Path("s.tif")], out, progress=False)[0].status == "done"  # fused again, no warning


def test_notes_beside_a_folder_of_slices_do_not_count_as_a_change(tmp_path):
    import cv2
    folder = tmp_path / "slices"
    folder.mkdir()
    for index, plane in enumerate(tifffile.imread(write_stack(tmp_path / "planes.tif", 4, seed=6))):
        cv2.imwrite(str(folder / f"z{index}.png"), plane)
    assert refuse_many([folder], tmp_path / "out", progress=False)[0].status == "done"
    (folder / "notes.txt").write_text("objective 10x")
    (folder / "Thumbs.db").write_bytes(b"\0")
    assert refuse_many([folder], tmp_path / "out", resume=True, progress=False)[0].status == "skipped"


def test_resume_of_a_folder_ignores_the_outputs_written_into_it(tmp_path):
    import cv2
    folder = tmp_path / "slices"
    folder.mkdir()
    planes = tifffile.imread(write_stack(tmp_path / "planes.tif", 5, seed=3))
    for index, plane in enumerate(planes):
        cv2.imwrite(str(folder / f"z{index}.png"), plane)
    assert refuse_many([folder], folder, progress=False)[0].status == "done"  # --out inside the stack itself
    assert refuse_many([folder], folder, resume=True, progress=False)[0].status == "skipped"
    cv2.imwrite(str(folder / "z9.png"), planes[0])  # a slice added
    outcome = refuse_many([folder], folder, resume=True, progress=False)[0]
    assert outcome.status == "done" and outcome.slices == 6


# A batch, then dask work, then a batch again, in one process that had not yet imported distributed (a notebook, a
# napari console): a process of its own, as the suite's own process may have imported it long before.
AFTER_A_BATCH = """
import sys
from pathlib import Path

import dask.array

from fusion.batch import refuse_many

stacks, out = [Path(arg) for arg in sys.argv[1:3]], Path(sys.argv[3])
print([outcome.status for outcome in refuse_many(stacks, out / "first", n_workers=1, progress=False)])
print(int(dask.array.ones((4, 4), chunks=2).sum().compute()))
print([outcome.status for outcome in refuse_many(stacks, out / "second", n_workers=1, progress=False)])
"""


@pytest.mark.slow
def test_after_a_batch_the_same_process_computes_with_dask_and_fuses_another_batch(small_stacks, tmp_path):
    """The batch's dask setting, left, took distributed's config with it: dask then failed with
    KeyError: 'distributed' (napari could open no stack lazily) and a second batch with KeyError: 'comm'."""
    good, _ = small_stacks
    done = subprocess.run([sys.executable, "-c", AFTER_A_BATCH, *map(str, good[:2]), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['done', 'done']", "16", "['done', 'done']"]


def test_single_stack_runs_without_a_cluster(small_stacks, tmp_path):
    good, _ = small_stacks
    outcomes = refuse_many([good[0]], tmp_path, progress=False)
    assert [o.status for o in outcomes] == ["done"] and outcomes[0].slices == 8


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the signal masks from /proc (Linux)")
def test_worker_processes_started_while_ctrl_c_is_blocked_never_hear_it(default_sigint):
    # A terminal's Ctrl-C reaches every process in its group; a dask worker still starting died of
    # it with "Fatal Python error" and a traceback. Started inside this block, they inherit SIGINT
    # blocked, and a Ctrl-C that came meanwhile stops this process once the cluster has started (as
    # in _run_on_dask: held, since threads started earlier, here pytest's, may take the signal).
    from distributed import LocalCluster

    from fusion.batch import _workers_deaf_to_ctrl_c
    from fusion.held_signals import signals_held

    with pytest.raises(KeyboardInterrupt), signals_held(), _workers_deaf_to_ctrl_c():
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        os.kill(os.getpid(), signal.SIGINT)  # held until the blocks end
        worker_pid = next(iter(cluster.workers.values())).process.process.pid
        status = Path(f"/proc/{worker_pid}/status").read_text()
    try:
        blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        assert blocked & (1 << (signal.SIGINT - 1)), status
    finally:
        cluster.close()


def test_live_sessions_refused_together_are_named_after_their_folders(tmp_path):
    """Every live session writes stack.ome.tif: refused together they would all be 'stack'."""
    sessions = []
    for index, folder in enumerate(("20261127-170533", "20261127-171027")):
        (tmp_path / folder).mkdir()
        sessions.append(write_stack(tmp_path / folder / "stack.ome.tif", 5, seed=index))
    check_unique_names(sessions)  # no "would both write stack.fused.tif"
    outcomes = refuse_many(sessions, tmp_path / "out", progress=False)
    assert [outcome.status for outcome in outcomes] == ["done", "done"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.fused.tif")) == \
        ["20261127-170533.fused.tif", "20261127-171027.fused.tif"]


def test_the_end_table_keeps_its_columns_with_wide_and_accented_names():
    # スタック takes eight columns on a terminal, not four; "é" written as e and a combining accent takes one.
    names = ["スタック", "Stack", "we\u0301ll"]
    table = format_table([StackOutcome(f"/data/{name}.tif", name, "done", slices=6, seconds=1.5) for name in names])
    columns = {len(line) + sum(char in "スタック" for char in line) - line.count("\u0301")
               for line in (line.rsplit(" ", 1)[0] for line in table.splitlines())}  # (up to the status)
    assert len(columns) == 1, table
    assert table.splitlines()[1].startswith("スタック  ")  # (the widest name: two spaces to the next column)


@pytest.fixture
def threads_cluster():
    """A scheduler and one worker of one thread, in this process: a fault injected here reaches the worker."""
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                           silence_logs=logging.CRITICAL)  # (its address: inproc://, within this process)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def failing_depth_writes(monkeypatch, failing: set[str]) -> None:
    """A MOCK of a failing disk under --out (no real one can be had here): the depth map's write fails with EIO, as
    the kernel reports a block it cannot write, for the stacks named in ``failing`` (all: "*")."""
    import errno

    import fusion.refuse

    real = fusion.refuse.write_depth_tiff

    def write_depth_tiff(path, *args, **kwargs):
        if "*" in failing or path.name.removesuffix(".depth.tif") in failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fusion.refuse, "write_depth_tiff", write_depth_tiff)


def test_io_errors_writing_out_for_three_stacks_in_a_row_stop_the_batch(threads_cluster, tmp_path, monkeypatch):
    # EIO on every write: the stacks left were each read and fused in full only to fail at their writes. Three in a
    # row (none written between) are a failing disk: the rest are not run, and the third's error says so.
    from fusion.batch import IO_ERRORS_TO_STOP

    stacks = [write_stack(tmp_path / f"s{i}.tif", 5, seed=i) for i in range(7)]
    failing_depth_writes(monkeypatch, {"*"})
    outcomes = refuse_many(stacks, tmp_path / "out", scheduler=threads_cluster, progress=False)
    assert IO_ERRORS_TO_STOP == 3
    assert [o.status for o in outcomes] == ["failed"] * 3 + ["not run"] * 4, [o.error for o in outcomes]
    assert "Input/output error" in outcomes[0].error and "not run" not in outcomes[0].error
    third = outcomes[2].error
    assert f"{tmp_path / 'out'} gives I/O errors (EIO) on write, for 3 stacks in a row" in third, third
    assert "4 more stacks were not run" in third and "--resume" in third, third


def test_an_io_error_of_one_stacks_write_fails_that_stack_alone(threads_cluster, tmp_path, monkeypatch):
    # One bad block on a disk that works otherwise: EIO at one stack's write is that stack's failure, and each stack
    # written between two such failures starts the count again.
    stacks = [write_stack(tmp_path / f"s{i}.tif", 5, seed=i) for i in range(6)]
    failing_depth_writes(monkeypatch, {"s0", "s1", "s3", "s4"})
    outcomes = refuse_many(stacks, tmp_path / "out", scheduler=threads_cluster, progress=False)
    assert [o.status for o in outcomes] == ["failed", "failed", "done", "failed", "failed", "done"], \
        [o.error for o in outcomes]


def test_permission_denied_on_a_stacks_own_file_is_not_a_folder_that_refuses_writes(tmp_path):
    # EACCES reading a stack (or on a file of another user's in the way) says nothing of --out: the folder takes a
    # new file, so the batch goes on. (Whether a folder refuses one: the batch test that chmods --out.)
    import errno

    from fusion.errors import OutputError
    from fusion.outputs import unwritable_folder

    try:
        raise OutputError("cannot write s.fused.tif into out: Permission denied", tmp_path / "s.tif") from \
            PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OutputError as error:
        assert unwritable_folder(error, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # (the check left nothing)


def test_resume_takes_a_setting_added_since_a_report_at_its_default(tmp_path):
    # Any setting added later (top-level or in the pyramid's) is missing from older reports, which were made as its
    # default makes them now; a key this version does not know is another version's, and fuses again.
    from fusion.batch import finished_report, with_later_settings_at_their_defaults
    from fusion.engine import FusionSettings

    defaults = FusionSettings().to_json()
    older = {key: value for key, value in defaults.items() if key not in ("weights", "device")}
    older["pyramid"] = {key: value for key, value in defaults["pyramid"].items() if key != "noise_floor"}
    assert with_later_settings_at_their_defaults(older, defaults) == defaults
    assert with_later_settings_at_their_defaults({**defaults, "unknown": 1}, defaults) is None
    assert with_later_settings_at_their_defaults({**defaults, "pyramid": {**defaults["pyramid"], "new": 1}},
                                                 defaults) is None
    stack = write_stack(tmp_path / "s.tif", 5)
    out = tmp_path / "out"
    assert refuse_many([stack], out, progress=False)[0].status == "done"
    report = json.loads((out / "s.json").read_text())
    report["settings"] = older
    (out / "s.json").write_text(json.dumps(report))
    assert finished_report(out, stack, FusionSettings()) is not None
    assert finished_report(out, stack, FusionSettings(pyramid={"noise_floor": 8.0})) is None  # not the default
    report["settings"] = {**older, "unknown": 1}
    (out / "s.json").write_text(json.dumps(report))
    assert finished_report(out, stack, FusionSettings()) is None
