"""A session's stack that was never finalized (kill -9, power cut) keeps every slice's z."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.stack_buffer import StackBuffer
from fusion.readers import open_stack


def unfinalized_stack(path, n_slices: int, planned_slices: int | None = None) -> StackBuffer:
    buffer = StackBuffer(path, planned_slices=planned_slices)
    for index in range(n_slices):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
    buffer._file.close()  # as if the process died: never finalized
    return buffer


@pytest.mark.parametrize("n_slices", [3, 7, 8, 12, 40])
def test_every_slice_of_an_unfinalized_stack_keeps_its_z(tmp_path, n_slices):
    # tifffile hands back pages without their description from the 8th page of a series on.
    buffer = unfinalized_stack(tmp_path / "stack.ome.tif", n_slices)
    with open_stack(buffer.path) as stack:
        assert stack.n_slices == n_slices
        assert stack.z_positions_um == [index * 1.5 for index in range(n_slices)]
        assert int(stack.read_slice(n_slices - 1)[0, 0]) == (n_slices - 1) * 5


def test_finalized_stack_keeps_every_z_too(tmp_path):
    buffer = StackBuffer(tmp_path / "stack.ome.tif")
    for index in range(12):
        buffer.append(np.full((32, 48), index, np.uint8), z=index * 2.0, time_s=index, exposure_ms=10.0)
    buffer.finalize({"name": "test"}, "um")
    with open_stack(buffer.path) as stack:
        assert stack.z_positions_um == [index * 2.0 for index in range(12)]


def test_an_unfinalized_stack_keeps_its_pixel_size(tmp_path):
    """After kill -9 there is no OME-XML: each page's record says the pixel size too."""
    buffer = StackBuffer(tmp_path / "stack.ome.tif", pixel_size_um=0.65)
    for index in range(3):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
    buffer._file.close()  # as if the process died: never finalized
    with open_stack(buffer.path) as stack:
        assert stack.pixel_size_um() == pytest.approx(0.65)


def test_a_full_disk_leaves_the_stack_as_it_was_with_every_z(tmp_path, monkeypatch):
    """A MOCK of a full disk (free space reported as none; a real one needs a mounted filesystem): finalize
    does not start the OME description, which tifffile would point at before writing it, past the end."""
    import shutil

    import fusion.stack_buffer as stack_buffer

    buffer = StackBuffer(tmp_path / "stack.ome.tif")
    for index in range(4):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
    full = shutil._ntuple_diskusage(total=1 << 30, used=1 << 30, free=0)  # type: ignore[attr-defined]
    monkeypatch.setattr(stack_buffer.shutil, "disk_usage", lambda path: full)
    with pytest.raises(stack_buffer.StackWriteError, match="no room on the disk for its OME description; each "
                                                           "slice keeps its z in its own page"):
        buffer.finalize({"name": "test"}, "um")
    with open_stack(buffer.path) as stack:
        assert stack.z_positions_um == [index * 1.5 for index in range(4)]


def test_a_slice_that_cannot_be_written_says_where_and_what_is_safe(tmp_path, monkeypatch):
    """A MOCK of the write failing as on a full disk (ENOSPC; a real one: a mounted filesystem): the error names the
    file and the slices kept, and the part of the slice that was written is taken back."""
    import errno

    import fusion.stack_buffer as stack_buffer

    buffer = StackBuffer(tmp_path / "stack.ome.tif")
    for index in range(2):
        buffer.append(np.full((32, 48), index, np.uint8), z=float(index), time_s=index, exposure_ms=10.0)

    size = buffer.path.stat().st_size

    def no_space(*args, **kwargs):  # part of the slice reaches the disk, then it is full
        buffer._file.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(buffer._writer, "write", no_space)
    with pytest.raises(stack_buffer.StackWriteError, match=r"cannot write slice 2 \(counting from 0\) to "
                                                           r".*stack.ome.tif: No space left on device; the 2 slices "
                                                           r"before it are"):
        buffer.append(np.zeros((32, 48), np.uint8), z=2.0, time_s=2, exposure_ms=10.0)
    assert buffer.n_slices == 2
    assert buffer.path.stat().st_size == size  # the part written is gone: its room is what session.json needs
    with open_stack(buffer.path) as stack:
        assert stack.z_positions_um == [0.0, 1.0]


def test_a_description_that_cannot_be_written_leaves_every_z(tmp_path):
    """Room on the disk but not for this file (a file-size limit, as a quota would): tifffile had already pointed the
    first page past the end when the write failed, and every slice lost its z. Real: RLIMIT_FSIZE in a child."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    script = f"""
import resource, sys
import numpy as np
from fusion.stack_buffer import StackBuffer, StackWriteError
buffer = StackBuffer({str(tmp_path / "stack.ome.tif")!r}, pixel_size_um=0.65)
for index in range(3):
    buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
size = buffer.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 200, resource.RLIM_INFINITY))  # not the OME-XML's room
try:
    buffer.finalize({{"name": "x" * 2000}}, "um")
except StackWriteError as error:
    print(error)
    sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "its OME description could not be written" in done.stdout and "stack.ome.tif" in done.stdout
    with open_stack(tmp_path / "stack.ome.tif") as stack:
        assert stack.z_positions_um == [0.0, 1.5, 3.0]
        assert stack.pixel_size_um() == pytest.approx(0.65)
        assert int(stack.read_slice(2)[0, 0]) == 10


UNFINISHED = ("a live session's stack that its session never finished (no OME description: the session was killed, "
              "is still running, or had no room to write it): it holds {n} of the {planned} slices its session "
              "planned")
# (a stack written before its pages recorded the plan)
UNFINISHED_UNKNOWN_PLAN = ("a live session's stack that its session never finished (no OME description: the session "
                           "was killed, is still running, or had no room to write it): it holds the {n} slices written "
                           "before it stopped, which may be fewer than the session planned (the stack does not record "
                           "how many)")


@pytest.mark.parametrize("planned_slices,says", [(21, UNFINISHED.format(n=5, planned=21)),
                                                 (None, UNFINISHED_UNKNOWN_PLAN.format(n=5))])
def test_refusing_an_unfinished_session_stack_says_how_many_slices_it_lacks(tmp_path, planned_slices, says):
    # A stack cut short by kill -9 was refused as if whole: nothing said it lacks the plan's later slices.
    import json
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    buffer = unfinalized_stack(tmp_path / "20260101-120000" / "stack.ome.tif", 5, planned_slices)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", str(buffer.path),
                           "--out", str(tmp_path / "refused")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    said = f"{buffer.path}: {says}"
    assert f"warning: {said}" in done.stderr.splitlines(), done.stderr
    assert said in json.loads((tmp_path / "refused" / "20260101-120000.json").read_text())["warnings"]  # its report
    summary = json.loads((tmp_path / "refused" / "summary.json").read_text())
    assert said in summary["stacks"][0]["warnings"]


@pytest.mark.parametrize("planned_slices,says", [
    (5, None), (None, None),  # whole (or planned as it stands): nothing to say
    (8, "a live session's stack short of its plan (its session.json says why): it holds 5 of the 8 slices its "
        "session planned"),
])
def test_a_finished_session_stack_says_only_the_slices_it_lacks(tmp_path, planned_slices, says):
    from fusion.refuse import refuse_stack

    buffer = StackBuffer(tmp_path / "session" / "stack.ome.tif", planned_slices=planned_slices)
    for index in range(5):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
    buffer.finalize({"name": "test"}, "um")
    report = refuse_stack(buffer.path, tmp_path / "refused", progress=False)
    said = [warning for warning in report.warnings if "live session's stack" in warning]
    assert said == ([] if says is None else [f"{buffer.path}: {says}"])


@pytest.mark.parametrize("keep_share", [0.003, 0.02, 0.1, 0.5, 0.99])
def test_a_session_killed_while_writing_its_first_slice_says_so(tmp_path, keep_share):
    """kill -9 during the first slice's write: refusing the stack said "cannot reshape array of size 0 into shape
    ()", "corrupted IFD structure" or "the TIFF has zero slices", where the README promises what happened."""
    from fusion.errors import EmptyStackError

    whole = unfinalized_stack(tmp_path / "whole.ome.tif", 1).path.read_bytes()
    cut = tmp_path / "stack.ome.tif"
    cut.write_bytes(whole[:max(16, int(len(whole) * keep_share))])
    with pytest.raises(EmptyStackError, match=r"the stack holds no whole slice: its session was stopped \(killed\?\) "
                                              r"while writing its first"):
        open_stack(cut).close()
    # Any other file cut inside its first slice says that much.
    other = tmp_path / "copy.tif"
    other.write_bytes(whole[:int(len(whole) * 0.5)])
    with pytest.raises(EmptyStackError, match="the file ends inside its first slice"):
        open_stack(other).close()
