"""Refusion under hostile inputs: folders of stacks, symlink loops, huge declared sizes, full disks,
stacks without focus information, other settings on --resume, unusual pixel types."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from fusion.errors import StackLayoutError
from fusion.readers import open_stack
from tests.conftest import REPO_ROOT


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, **kwargs)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_stack(path: Path, n_slices: int, shape=(64, 80), seed=0, dtype=np.uint8) -> Path:
    """A mono stack: one texture at a few blur levels, cycled to n_slices."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random(shape), 1.0)
    levels = [ndimage.gaussian_filter(texture, sigma) for sigma in (0.1, 1, 2, 3, 2, 1)]
    scale = 255 if dtype == np.uint8 else np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1
    planes = np.stack([(levels[i % len(levels)] * scale).astype(dtype) for i in range(n_slices)])
    tifffile.imwrite(path, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    return path


# ---- 3: a folder of multi-page TIFFs holds stacks, not slices ----

@pytest.mark.slow
def test_a_folder_of_multipage_tiffs_is_refused_stack_by_stack(tmp_path):
    folder = tmp_path / "positions"
    folder.mkdir()
    write_stack(folder / "a.tif", 8, seed=1)
    write_stack(folder / "b.tif", 8, seed=2)
    done = run_cli("--refuse", folder, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    for name in ("a", "b"):
        assert json.loads((tmp_path / "out" / f"{name}.json").read_text())["n_slices"] == 8
    assert not (tmp_path / "out" / "positions.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut to one page", "empty"])
def test_a_damaged_file_in_a_folder_of_stacks_is_one_failed_row_and_the_others_are_fused(tmp_path, damage):
    # A copy of a plate that stopped short: one well's stack cut after its first page, or never written (0 bytes).
    folder = tmp_path / "plate"
    folder.mkdir()
    wells = [write_stack(folder / f"well{i}.tif", 5, seed=i) for i in range(4)]
    whole = wells[1].read_bytes()
    wells[1].write_bytes(whole[: 64 * 80 + 2000] if damage == "cut to one page" else b"")
    done = run_cli("--refuse", folder, "--out", tmp_path / "out", "--workers", "2", "--align", "off")
    assert done.returncode == 1, done.stderr
    rows = {row["name"]: row for row in json.loads((tmp_path / "out" / "summary.json").read_text())["stacks"]}
    assert {name: row["status"] for name, row in rows.items()} == {
        "well0": "done", "well1": "failed", "well2": "done", "well3": "done"}, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and str(wells[1]) in errors[0], done.stderr
    said = "this empty file (0 bytes)" if damage == "empty" else "truncated or corrupt"
    assert said in errors[0] and "most likely one of them damaged or cut short" in errors[0], errors[0]


def test_a_folder_mixing_slices_and_stacks_is_one_clear_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_stack(folder / "a.tif", 8)
    tifffile.imwrite(folder / "b.tif", np.zeros((64, 80), np.uint8))
    mixed = r"mixed: this folder holds multi-page TIFF stacks \(a.tif \(8 pages\)\)"
    with pytest.raises(StackLayoutError, match=mixed) as raised:
        open_stack(folder)
    # It names the stack to refuse, not a glob that would take the single images too (a live
    # session's folder holds fused.tif and depth.tif beside its stack).
    assert f"refuse the stacks themselves (--refuse {folder / 'a.tif'})" in str(raised.value)
    # The advice leaves b.tif out, and says so: it may be a stack cut short.
    assert "beside them 1 file of one image or none readable (b.tif)" in str(raised.value)


# ---- 6: a symlink loop is one failed row ----

@pytest.mark.slow
def test_a_symlink_loop_among_batch_inputs_is_one_failed_row(tmp_path):
    loop = tmp_path / "loop.tif"
    loop.symlink_to("loop.tif")
    good = [write_stack(tmp_path / f"good{i}.tif", 6, seed=i) for i in range(2)]
    done = run_cli("--refuse", good[0], loop, good[1], "--out", tmp_path / "out", "--workers", "1")
    assert done.returncode == 1
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and "loop.tif: a symbolic link that leads nowhere" in errors[0], done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["status"] for row in summary["stacks"]] == ["done", "failed", "done"]
    assert (tmp_path / "out" / "good1.fused.tif").is_file()


# ---- 7: a header that declares an enormous image ----

def huge_tiled_tiff(path: Path) -> Path:
    """A valid 20 MB tiled TIFF declaring 2 x 100000 x 100000 pixels (its tiles compress to nothing)."""
    import zlib

    tile = zlib.compress(bytes(1024 * 1024))
    n_tiles = 2 * ((100000 + 1023) // 1024) ** 2
    tifffile.imwrite(path, (tile for _ in range(n_tiles)), shape=(2, 100000, 100000), dtype=np.uint8,
                     tile=(1024, 1024), compression="zlib", photometric="minisblack", metadata={"axes": "ZYX"})
    return path


def limit_memory_to_8_gb():
    """In the child: a safety net, so that a regression fails with MemoryError instead of filling the machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


@pytest.mark.slow
def test_an_enormous_declared_image_is_refused_before_reading(tmp_path):
    stack = huge_tiled_tiff(tmp_path / "huge.tif")
    good = write_stack(tmp_path / "good.tif", 6)
    done = run_cli("--refuse", stack, good, "--out", tmp_path / "out", "--workers", "1",
                   preexec_fn=limit_memory_to_8_gb)
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "huge.tif: slice 0 (counting from 0) declares 100000 x 100000 pixels" in errors[0]
    assert "GB is available" in errors[0]
    assert (tmp_path / "out" / "good.fused.tif").is_file()


# ---- 10: a full disk ----

def test_a_full_output_disk_names_the_stack_and_the_folder_and_leaves_no_partial_files(tmp_path):
    from tests.test_refuse_outputs import cli_with_trap

    out = tmp_path / "out"
    out.mkdir()
    stack = write_stack(tmp_path / "full.tif", 6)
    # The outputs are written into a hidden folder of the run's own first, each under a temporary name there: on
    # /dev/full, as on a full disk, every write fails with ENOSPC.
    done = subprocess.run(cli_with_trap(".full.fused.tif.partial", "/dev/full", "--refuse", stack, "--out", out),
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{stack}: cannot write full.fused.tif into {out}: No space left on device" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # no staging folder, lock file, fused image


@pytest.mark.parametrize("obstacle", ["full disk", "folder in the way"])
def test_a_depth_map_that_cannot_be_written_leaves_no_fused_image_nor_report(tmp_path, obstacle, monkeypatch):
    """A stack's outputs are all there or none is: a fused image alone looks like a finished result."""
    from fusion.batch import refuse_many
    from tests.test_refuse_outputs import trap_staging

    out = tmp_path / "out"
    out.mkdir()
    stack = write_stack(tmp_path / "s.tif", 6)
    if obstacle == "full disk":  # the fused image fits; the depth map, written next, meets a full disk
        trap_staging(monkeypatch, ".s.depth.tif.partial", "/dev/full")
        why = "No space left on device; free some space there or write elsewhere"
    else:  # all are written; the depth map cannot take its place
        (out / "s.depth.tif").mkdir()
        (out / "s.depth.tif" / "notes.txt").write_text("in the way")
        why = "Is a directory"
    outcome = refuse_many([stack], out, progress=False)[0]
    assert outcome.status == "failed"
    assert outcome.error == f"{stack}: cannot write s.depth.tif into {out}: {why}"
    assert sorted(p.name for p in out.iterdir()) == ([] if obstacle == "full disk" else ["s.depth.tif"])


def test_a_full_tmpfs_leaves_none_of_a_stacks_outputs(tmp_path):
    """As the full disk above, on a real one: a tmpfs that holds the fused image and not the depth map."""
    out = tmp_path / "small"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {mounted.stderr.decode().strip()}")
    try:
        from fusion.batch import refuse_many

        stack = write_stack(tmp_path / "s.tif", 6, shape=(128, 160))  # fused 20 kB, depth map 80 kB
        outcome = refuse_many([stack], out, progress=False)[0]
        assert outcome.status == "failed" and f"cannot write s.depth.tif into {out}" in outcome.error
        assert list(out.iterdir()) == []
    finally:
        subprocess.run(["umount", str(out)], check=True)


# ---- 11: no focus information, one slice ----

@pytest.mark.parametrize("kind", ["identical", "black"])
def test_a_stack_without_focus_information_says_so(tmp_path, kind):
    texture = (ndimage.gaussian_filter(np.random.default_rng(0).random((64, 80)), 1.0) * 255).astype(np.uint8)
    planes = np.zeros((5, 64, 80), np.uint8) if kind == "black" else np.repeat(texture[None], 5, 0)
    stack = tmp_path / f"{kind}.tif"
    tifffile.imwrite(stack, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    done = run_cli("--refuse", stack, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "no focus information" in line]
    assert warnings == [f"warning: {stack}: no focus information: all 5 slices are "
                        f"{'blank' if kind == 'black' else 'equally sharp (identical?)'}; the fused image is "
                        "their average and the depth map says nothing"], done.stderr
    report = json.loads((tmp_path / "out" / f"{kind}.json").read_text())
    assert any("no focus information" in w for w in report["warnings"])


def test_a_stack_whose_focus_barely_changes_says_so(tmp_path):
    # The same sharp frame with fresh noise in each slice (a focus drive that moves no focus): the scores differ,
    # but a depth is known almost nowhere.
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.random((96, 128)), 1.0) * 200
    planes = np.stack([np.clip(texture + rng.normal(0, 2, texture.shape), 0, 255) for _ in range(6)]).astype(np.uint8)
    stack = tmp_path / "still.tif"
    tifffile.imwrite(stack, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    done = run_cli("--refuse", stack, "--out", tmp_path / "out", "--align", "off")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "still.json").read_text())
    assert report["depth_defined_fraction"] < 0.02
    assert [w for w in report["warnings"] if "little focus information" in w], report["warnings"]
    assert "no focus information" not in done.stderr and "little focus information" in done.stderr
    # A real sweep does not say it.
    done = run_cli("--refuse", write_stack(tmp_path / "sweep.tif", 6, shape=(96, 128)), "--out", tmp_path / "out")
    assert done.returncode == 0 and "focus information" not in done.stderr, done.stderr


def test_a_one_slice_stack_warns_on_stderr(tmp_path):
    done = run_cli("--refuse", write_stack(tmp_path / "single.tif", 1), "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and "only one slice" in done.stderr


# ---- 15: uint32 stacks ----

@pytest.mark.slow
def test_a_uint32_stack_fuses_without_overflow_warnings(tmp_path):
    from tests.conftest import rendered

    sweep = rendered(color=False, bit_depth=16, shape=(256, 320))  # large enough to be aligned
    tifffile.imwrite(tmp_path / "narrow.tif", np.stack(sweep.slices), photometric="minisblack")
    tifffile.imwrite(tmp_path / "wide.tif", np.stack([s.astype(np.uint32) * 65537 for s in sweep.slices]),
                     photometric="minisblack")
    for name in ("narrow", "wide"):
        done = run_cli("--refuse", tmp_path / f"{name}.tif", "--out", tmp_path / "out")
        assert done.returncode == 0, done.stderr
    wide, narrow = (json.loads((tmp_path / "out" / f"{name}.json").read_text()) for name in ("wide", "narrow"))
    # (The one warning says that uint32 is fused as float32.)
    assert [w for w in wide["warnings"] if "fused as float32" not in w] == [] and "overflow" not in done.stderr, \
        wide["warnings"][:3]
    # The same sweep in 16 bits registers the same way.
    for a, b in zip(wide["alignment"], narrow["alignment"]):
        assert a["shift_x_px"] == pytest.approx(b["shift_x_px"], abs=0.01)
        assert a["shift_y_px"] == pytest.approx(b["shift_y_px"], abs=0.01)


# ---- 13: --resume and other settings ----

@pytest.mark.slow
def test_resume_redoes_stacks_made_with_other_settings_and_keeps_the_numbers_of_skipped_ones(tmp_path):
    stack = write_stack(tmp_path / "s.tif", 6)
    out = tmp_path / "out"
    assert run_cli("--refuse", stack, "--out", out).returncode == 0
    first = json.loads((out / "s.json").read_text())

    done = run_cli("--refuse", stack, "--out", out, "--resume", "--method", "laplacian", "--composition", "pick")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 0}
    redone = json.loads((out / "s.json").read_text())
    assert redone["method"] == "laplacian" and redone["settings"]["composition"] == "pick"

    done = run_cli("--refuse", stack, "--out", out, "--resume", "--method", "laplacian", "--composition", "pick")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 0}
    row = summary["stacks"][0]
    assert row["slices"] == 6 and row["seconds"] == redone["seconds"]["total"] != first["seconds"]["total"]


# ---- a pixel size out of all proportion in the metadata ----

@pytest.mark.parametrize("size_um", [1e-30, 1e30])
def test_a_stack_whose_metadata_give_an_absurd_pixel_size_is_fused_without_one_and_a_warning(tmp_path, size_um):
    # 1e-30 µm failed the fused TIFF's writer (no TIFF resolution holds 1e34 pixels a cm); 1e30 µm wrote it as 0/1,
    # which readers divide by.
    from fusion.readers.tiff import pixel_size_um_of
    from fusion.refuse import refuse_stack

    stack = tmp_path / "odd.ome.tif"
    planes = tifffile.imread(write_stack(tmp_path / "plain.tif", 6))
    tifffile.imwrite(stack, planes, metadata={"axes": "ZYX", "PhysicalSizeX": size_um, "PhysicalSizeY": size_um})
    report = refuse_stack(stack, tmp_path / "out", progress=False)
    assert f"{stack}: the OME PhysicalSizeX {size_um:g} µm is not a pixel size on a specimen (0.0001 to 10000 µm); " \
        "the outputs are written without one" in report.warnings
    for kind in ("fused", "depth"):
        with tifffile.TiffFile(report.outputs[kind]) as written:
            assert pixel_size_um_of(written.pages[0]) is None


# ---- a live session's stack of no slices ----

def test_a_session_stack_of_no_slices_is_refused_naming_it(tmp_path):
    # A session that ended before its first slice left a TIFF header, no page: refusing its folder said "a slice must
    # be 2-D or 2-D with colour, got shape (0,)", naming no file.
    from fusion.stack_buffer import StackBuffer

    folder = tmp_path / "20260101-120000"
    buffer = StackBuffer(folder / "stack.ome.tif")
    buffer.finalize({}, "um")
    (folder / "session.json").write_text("{}")
    said = f"error: {folder / 'stack.ome.tif'}: the stack holds no slices: its session ended before its first slice " \
        "(its session.json says why)"
    for given in (folder, folder / "stack.ome.tif"):
        done = run_cli("--refuse", given, "--out", tmp_path / "out")
        assert done.returncode == 1 and error_lines(done.stderr) == [said], done.stderr


def test_an_empty_tiff_among_a_folders_slices_is_named(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((64, 80), np.uint8))
    tifffile.TiffWriter(folder / "b.tif").close()  # a header, no image
    with open_stack(folder) as stack, pytest.raises(Exception, match=f"^{folder}: b.tif holds no image$"):
        stack.read_slice(1)


@pytest.mark.slow
def test_resume_skips_stacks_when_only_options_with_no_effect_differ(tmp_path):
    # Each of these the run itself warns "has no effect" (the pyramid composition, the sf measure): the outputs
    # would be the same, so the stacks fused before are kept.
    stacks = [write_stack(tmp_path / f"s{i}.tif", 6, seed=i) for i in range(2)]
    out = tmp_path / "out"
    assert run_cli("--refuse", *stacks, "--out", out).returncode == 0
    reports = {path.name: path.read_text() for path in out.glob("s[0-9].json")}
    for options in (["--feather-px", "3"], ["--window-px", "15"], ["--sharpness", "8"], ["--device", "cpu"],
                    ["--feather-px", "3", "--window-px", "15", "--device", "cpu"]):
        done = run_cli("--refuse", *stacks, "--out", out, "--resume", *options)
        assert done.returncode == 0, done.stderr
        assert "has no effect" in done.stderr or "does not use it" in done.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert [row["status"] for row in summary["stacks"]] == ["skipped", "skipped"], options
        assert {path.name: path.read_text() for path in out.glob("s[0-9].json")} == reports  # untouched
    # An option that changes the outputs still fuses again, and what counts is recorded as asked.
    done = run_cli("--refuse", *stacks, "--out", out, "--resume", "--composition", "pick", "--feather-px", "3")
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 2, done.stderr
    assert json.loads((out / "s0.json").read_text())["settings"]["feather_px"] == 3
    done = run_cli("--refuse", *stacks, "--out", out, "--resume", "--composition", "pick", "--feather-px", "2")
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 2, done.stderr


# ---- float64 values beyond float32's range ----

def test_a_float64_stack_beyond_float32_s_range_is_said_to_be_so_not_to_hold_infinity(tmp_path):
    """A float64 stack of finite values up to 1e300 failed with 'slice 0 ... holds infinity', which it does not (its
    conversion to float32 made the infinity): the error says the values exceed float32's range, the largest, and by
    what to divide them, naming the file and the slice."""
    planes = np.random.default_rng(0).random((4, 32, 40))
    planes[2] *= 1e300  # (slices 0 and 1 fit: the slice named is the one beyond)
    tifffile.imwrite(tmp_path / "huge.tif", planes, photometric="minisblack", metadata={"axes": "ZYX"})
    done = run_cli("--refuse", tmp_path / "huge.tif", "--out", tmp_path / "out")
    assert done.returncode != 0
    said = float(f"{planes[2].max():.3g}")
    assert error_lines(done.stderr) == [
        f"error: {tmp_path / 'huge.tif'}: slice 2 (counting from 0) holds values up to {said:.3g}, beyond float32's "
        "range (±3.4e+38), which fusion computes in: scale the stack's values down (divide them by 1e263, say)"]
    assert "infinity" not in done.stderr


def test_a_stack_whose_z_step_the_depth_map_cannot_hold_is_fused_with_depths_in_slices_and_a_warning(tmp_path):
    """Positions 1e-4 µm apart at 1e4 µm (float32 rounds them all to 10000) gave a depth map of 10000 everywhere, said
    to be in µm: the positions are refused, naming them and the step, and the depth map counts slices instead."""
    planes = tifffile.imread(write_stack(tmp_path / "plain.tif", 6))
    tifffile.imwrite(tmp_path / "far.ome.tif", planes,
                     metadata={"axes": "ZYX", "Plane": {"PositionZ": [1e4 + k * 1e-4 for k in range(6)]}})
    done = run_cli("--refuse", tmp_path / "far.ome.tif", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (f"warning: {tmp_path / 'far.ome.tif'}: the file's slices' z (10000, 10000.0001, 10000.0002, ... µm: a step "
            "of 0.0001 µm) cannot be told apart in the depth map, which holds z as float32 (about 7 significant "
            "digits); the depth map counts slices instead") in done.stderr.splitlines()
    report = json.loads((tmp_path / "out" / "far.json").read_text())
    depth = tifffile.imread(tmp_path / "out" / "far.depth.tif")
    assert report["depth_unit"] == "slice index" and np.nanmax(depth) <= 5 and np.nanmin(depth) < np.nanmax(depth)
