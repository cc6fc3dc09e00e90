"""Which stacks a refusion's arguments name, and the names their outputs are written under."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from fusion.batch import refuse_many, write_interrupted_summary
from fusion.engine import FusionSettings
from fusion.readers import open_stack, stack_name
from fusion.stack_arguments import absolute_path
from tests.conftest import REPO_ROOT

SHAPE = (128, 160)


def planes(n_slices: int, seed: int = 0) -> np.ndarray:
    """A texture at a few blur levels, cycled to ``n_slices``: something to fuse."""
    texture = ndimage.gaussian_filter(np.random.default_rng(seed).random(SHAPE), 1.0)
    levels = [ndimage.gaussian_filter(texture, sigma) for sigma in (0.1, 1, 2, 3, 2, 1)]
    return np.stack([(levels[i % len(levels)] * 255).astype(np.uint8) for i in range(n_slices)])


def multipage_stack(path: Path, n_slices: int = 5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, planes(n_slices, seed), photometric="minisblack", metadata={"axes": "ZYX"})
    return path


def folder_of_slices(folder: Path, n_slices: int = 5, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    for index, plane in enumerate(planes(n_slices, seed)):
        tifffile.imwrite(folder / f"z{index:02d}.tif", plane, photometric="minisblack")
    return folder


def micro_manager_dataset(folder: Path) -> Path:
    multipage_stack(folder / "scan_1_MMStack_Pos0.ome.tif")
    return folder


def ndtiff_dataset(folder: Path) -> Path:
    from ndtiff import NDTiffDataset

    writer = NDTiffDataset(str(folder), summary_metadata={}, writable=True)
    for index, plane in enumerate(planes(3)):
        writer.put_image({"z": index}, plane.astype(np.uint16), {})  # (frames of 8 kB and more: ndtiff 3.1)
    writer.finish()
    writer.close()
    return folder


def single_image(path: Path) -> Path:
    import imageio.v3 as imageio

    imageio.imwrite(path, planes(1)[0])
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


# Each kind of stack, the path to give, and the name its outputs are written under.
STACK_KINDS = {
    "folder of slices, dotted": (lambda root: folder_of_slices(root / "exp.1"), "exp.1"),
    "folder of slices, a date": (lambda root: folder_of_slices(root / "2024.05.01"), "2024.05.01"),
    "folder of slices named like a file": (lambda root: folder_of_slices(root / "a.v1.tif"), "a.v1.tif"),
    "Micro-Manager dataset, dotted": (lambda root: micro_manager_dataset(root / "scan.v2"), "scan.v2"),
    "NDTiff dataset, dotted": (lambda root: ndtiff_dataset(root / "acq.1"), "acq.1"),
    "OME-TIFF": (lambda root: multipage_stack(root / "a.b.ome.tif"), "a.b"),
    "TIFF": (lambda root: multipage_stack(root / "pos.2.TIF"), "pos.2"),
    "live session's stack": (lambda root: multipage_stack(root / "2026.11.27" / "stack.ome.tif"), "2026.11.27"),
    "single PNG": (lambda root: single_image(root / "one.v1.png"), "one.v1"),
}


@pytest.mark.parametrize("kind", STACK_KINDS)
def test_a_stacks_name_is_the_name_its_reader_writes_its_outputs_under(tmp_path, kind):
    make, expected = STACK_KINDS[kind]
    path = make(tmp_path)
    with open_stack(path) as stack:
        assert stack_name(path) == stack.name == expected


def test_a_folders_name_however_it_is_spelled_is_the_one_a_worker_writes_under(tmp_path, monkeypatch):
    folder = folder_of_slices(tmp_path / "exp.1")
    session = multipage_stack(tmp_path / "run.3" / "stack.ome.tif")
    monkeypatch.chdir(folder)
    for spelled in (Path("."), Path("../exp.1/"), Path("../run.3/../run.3/stack.ome.tif")):
        with open_stack(absolute_path(spelled)) as stack:  # (as refuse_many hands a stack to a worker)
            assert stack_name(spelled) == stack.name, spelled
    assert [stack_name(Path(".")), stack_name(Path("../run.3/stack.ome.tif"))] == ["exp.1", "run.3"]
    assert session.is_file()


@pytest.mark.slow
def test_dotted_folders_fuse_in_one_batch_and_resume_skips_them(tmp_path):
    """``exp.1`` and ``exp.2`` were both "exp": the batch was refused as if they would overwrite each other."""
    for index, name in enumerate(("exp.1", "exp.2")):
        folder_of_slices(tmp_path / "data" / name, seed=index)
    out = tmp_path / "out"
    done = run_cli("--refuse", tmp_path / "data" / "*", "--out", out, "--workers", "2", "--align", "off")
    assert done.returncode == 0, done.stderr
    assert "would both write" not in done.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "exp.1.depth.tif", "exp.1.fused.tif", "exp.1.json", "exp.2.depth.tif", "exp.2.fused.tif", "exp.2.json",
        "summary.json"]
    rows = json.loads((out / "summary.json").read_text())["stacks"]
    assert [(row["name"], row["status"]) for row in rows] == [("exp.1", "done"), ("exp.2", "done")]
    assert [json.loads((out / f"{name}.json").read_text())["name"] for name in ("exp.1", "exp.2")] == \
        ["exp.1", "exp.2"]

    again = run_cli("--refuse", tmp_path / "data" / "*", "--out", out, "--workers", "2", "--align", "off",
                    "--resume")
    assert again.returncode == 0, again.stderr
    rows = json.loads((out / "summary.json").read_text())["stacks"]
    assert [(row["name"], row["status"]) for row in rows] == [("exp.1", "skipped"), ("exp.2", "skipped")]
    assert [line.split()[::3] for line in again.stdout.splitlines()[1:3]] == [["exp.1", "skipped"],
                                                                                ["exp.2", "skipped"]]


def test_an_interrupted_batchs_summary_names_dotted_folders_and_counts_the_finished_one(tmp_path):
    """Ctrl-C's summary named the rows "a" and "b" and took the finished a.v1 for interrupted."""
    stacks = [folder_of_slices(tmp_path / "data" / name, seed=index) for index, name in enumerate(("a.v1", "b.v1"))]
    out = tmp_path / "out"
    settings = FusionSettings(align="off")
    finished = refuse_many(stacks[:1], out, settings, progress=False)  # (one stack: no cluster)
    assert [(outcome.name, outcome.status) for outcome in finished] == [("a.v1", "done")]
    for came in (finished, []):  # its outcome came, or the run stopped before it did
        summary = json.loads(write_interrupted_summary(out, stacks, came, settings, 1.0, None).read_text())
        assert [(row["name"], row["status"]) for row in summary["stacks"]] == [("a.v1", "done"),
                                                                               ("b.v1", "interrupted")]
        assert summary["counts"]["done"] == 1
    assert refuse_many(stacks[:1], out, settings, resume=True, progress=False)[0].status == "skipped"
