"""A plan the output disk has no room for is refused before anything moves, in one line that says what it needs.

Real parts: small file systems (tmpfs, where mounting is permitted), the simulated rigs, the slide simulator's
UniMMCore for an MDA, the program's own entry run in this process."""
from __future__ import annotations

import os
import re

import pytest

from acquisition.profile import load_profile
from acquisition.rig import open_rig
from acquisition.session import Session, new_session_folder
from acquisition.session_events import SessionListener
from fusion.errors import EmptyStackError
from fusion.readers import open_stack
from fusion.stack_buffer import StackWontFitError
from tests.conftest import REPO_ROOT, small_profile, small_tmpfs
from tests.test_mda_sessions import small_mda_profile

pytestmark = pytest.mark.hardware_sim

PROFILES = REPO_ROOT / "profiles"
# What the refusal says: the plan's count, the room needed and the room free (GB, or MB below a tenth of a GB),
# and how to go on.
REFUSAL = (r"error: {plan} has {count} {unit} of [\d.]+ [kM]B: with the fused images, it needs about "
           r"(?P<needed>{size}) and the disk of \S+ has (?P<free>{size}) free; nothing was acquired: plan fewer {unit} "
           r"\({smaller}\) or write to a disk with more room \(--out\)")


def in_bytes(size: str) -> float:
    number, unit = size.split()
    return float(number) * {"GB": 1e9, "MB": 1e6, "kB": 1e3}[unit]


def refused_in_one_line(stderr: str, **said: str) -> re.Match:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    refusal = re.fullmatch(REFUSAL.format(size=r"[\d.]+ [GMk]B", **said), lines[0])
    assert refusal is not None, lines[0]
    assert in_bytes(refusal["needed"]) > in_bytes(refusal["free"])
    return refusal


def refused_before_it_starts(tmp_path, capsys, specimen: str, plan: str, disk_size: str, count: int) -> None:
    """A simulated rig's session with this ``specimen`` and z ``plan`` on a disk of ``disk_size``: refused in one line,
    nothing left on the disk."""
    import run_session

    profile = tmp_path / "rig.yaml"
    profile.write_text(f"camera: {{driver: simulated, specimen: {{{specimen}}}}}\n"
                       f"focus: {{driver: simulated}}\nplan: {{z: {{{plan}}}}}\n")
    with small_tmpfs(tmp_path / "disk", disk_size) as disk:
        assert run_session.main(["--profile", str(profile), "--out", str(disk)]) == 1
        refused_in_one_line(capsys.readouterr().err, plan="the plan", count=str(count), unit="slices",
                            smaller="a larger step or a shorter range")
        assert list(disk.iterdir()) == []  # no session folder, no stack


def test_a_plan_longer_than_the_disk_has_room_for_is_refused_before_it_starts(tmp_path, capsys):
    # 201 slices of 37 kB on a 2 MB disk: the session ran until the disk was full, 50 slices in.
    refused_before_it_starts(tmp_path, capsys, "height_px: 96, width_px: 128", "bottom: 0, top: 200, step: 1", "2m",
                             count=201)


def test_a_plan_whose_stack_fits_but_not_its_fused_images_is_refused_before_it_starts(tmp_path, capsys):
    # 2 mono 8-bit frames of 1024x768 (1.6 MB) fit a 3 MB disk, their float32 depth map (3.1 MB) does not: the session
    # acquired both slices, wrote fused.tif and ended on 'cannot write depth.tif', without its focus curve.
    refused_before_it_starts(tmp_path, capsys, "height_px: 768, width_px: 1024, color: false",
                             "bottom: 0, top: 10, step: 10", "3m", count=2)


def test_an_auto_range_too_fine_for_the_disk_is_refused_after_its_pre_sweep_with_the_focus_back(tmp_path):
    # The slice count is known once the pre-sweep has found the range: a step of 0.01 µm gives thousands.
    profile = small_profile(load_profile(PROFILES / "simulated-autorange.yaml"),
                            **{"plan.auto_range.step_um": 0.01, "plan.auto_range.binning": 1})
    rig = open_rig(profile)
    try:
        start = rig.focus.position()
        with small_tmpfs(tmp_path / "disk", "2m") as disk:
            session = Session(profile, rig, new_session_folder(disk))
            with pytest.raises(StackWontFitError) as refused:
                session.run(progress=False)
            assert session.range_found is not None and session.planned > 3000  # its pre-sweep ran
            refused_in_one_line(f"error: {refused.value}",
                                plan=r"the plan \(the range its auto-range pre-sweep found\)", count=session.planned,
                                unit="slices", smaller=r"a larger plan\.auto_range\.step_um")
            assert not (session.folder / "stack.ome.tif").exists()
        assert rig.focus.position() == pytest.approx(start)  # where the user had it, as a failed pre-sweep leaves it
    finally:
        rig.close()


def test_an_mda_plan_longer_than_the_disk_has_room_for_is_refused_before_it_starts(tmp_path, capsys):
    # 240 frames of 38 kB on a 2 MB disk: the MDA ran to its end, every frame after the 50th not stored.
    import run_session

    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        assert run_session.main(["--profile", str(small_mda_profile(tmp_path)), "--out", str(disk)]) == 1
        refused_in_one_line(capsys.readouterr().err, plan="the mda plan", count=240, unit="frames",
                            smaller="fewer positions, channels, time points or z steps")
        assert list(disk.iterdir()) == []


class _FillsTheDisk(SessionListener):
    """Another program fills the disk while the session starts: after its room was checked, before its first slice."""

    def session_started(self, session, planned_slices):
        free = os.statvfs(session.folder).f_bavail * os.statvfs(session.folder).f_frsize
        (session.folder.parent / "filler").write_bytes(b"\0" * (free - 4096))  # room for a TIFF header, not a slice


def test_a_session_whose_disk_fills_before_its_first_slice_leaves_no_empty_stack(tmp_path):
    # It left an 8-byte stack.ome.tif (a TIFF header, no slice), which --refuse then called "a slice must be 2-D or
    # 2-D with colour, got shape (0,)".
    profile = small_profile(load_profile(PROFILES / "simulated.yaml"))
    rig = open_rig(profile)
    try:
        with small_tmpfs(tmp_path / "disk", "2m") as disk:
            outcome = Session(profile, rig, new_session_folder(disk), [_FillsTheDisk()]).run(progress=False)
            assert outcome.report.acquired_slices == 0 and "cannot write slice 0" in outcome.report.ended_by
            assert not (outcome.folder / "stack.ome.tif").exists() and "stack" not in outcome.report.outputs
            (disk / "filler").unlink()
            with pytest.raises(EmptyStackError, match=f"^{outcome.folder}: a live session's folder with no stack: its "
                                                      r"session acquired no slice \(its session.json says why\)$"):
                open_stack(outcome.folder)
    finally:
        rig.close()


def test_a_disk_filled_whole_before_the_first_slice_says_so_naming_the_stack_and_leaves_no_file(tmp_path, monkeypatch,
                                                                                               capsys):
    # Filled to its last byte, the disk had no room for the stack's TIFF header: "the session ended before its first
    # slice: unexpected OSError: [Errno 28] No space left on device", naming no file, and a 0-byte stack.ome.tif was
    # left, which --refuse called "not a readable image (the file is empty: 0 bytes)".
    import run_session
    from acquisition.session import Session as SessionClass
    from tests.test_mda_disk_full import fill

    looked = SessionClass._look_before_the_stack

    def then_another_program_fills_the_disk(session, start):
        frame = looked(session, start)   # (after the room was checked)
        fill(session.folder.parent)
        return frame

    monkeypatch.setattr(SessionClass, "_look_before_the_stack", then_another_program_fills_the_disk)
    profile = tmp_path / "rig.yaml"
    profile.write_text("camera: {driver: simulated, specimen: {height_px: 96, width_px: 128}}\n"
                       "focus: {driver: simulated}\nplan: {z: {bottom: 0, top: 4, step: 2}}\n")
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        assert run_session.main(["--profile", str(profile), "--out", str(disk)]) == 1
        err = capsys.readouterr().err
        folder, = [path for path in disk.iterdir() if path.is_dir()]
        assert f"error: the session ended before its first slice: cannot start {folder / 'stack.ome.tif'}: No space " \
               "left on device; nothing was acquired" in err.splitlines(), err
        assert "unexpected" not in err and "Errno" not in err
        assert not (folder / "stack.ome.tif").exists()
        (disk / "filler").unlink()
        with pytest.raises(EmptyStackError, match=f"^{folder}: "):
            open_stack(folder)
