"""Slices that come in any z order (an ``absolute`` plan of [20, -4, 44, 4], an OME-TIFF whose planes' PositionZ
are shuffled, an MDA's absolute z-plan) fuse to the depth map, decision and image of the same slices in z order,
and their saved stack says the true spacing between planes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import yaml

import run_session
from acquisition.profile import load_profile
from acquisition.report import plot_focus_curve
from fusion import FusionSettings, StreamingFusion
from simulators.rigs import specimen_renderer
from tests.conftest import REPO_ROOT, rendered

STEP_UM = 3.0
# The first slice stays first: the pyramid's noise floors are calibrated on it, so a stack that starts elsewhere
# fuses (very slightly) differently whatever its order. The rest: far from z order, a fractional index's z nowhere
# near the slices that made it.
SHUFFLED = [0, 8, 3, 11, 1, 6, 10, 2, 9, 4, 7, 5, 12]


@pytest.fixture(scope="module")
def stack():
    stack = rendered(shape=(96, 128), step_um=STEP_UM)
    assert len(stack.slices) == len(SHUFFLED)
    return stack


def fused(stack, order, composition="pyramid"):
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, FusionSettings(composition=composition))
    for index in order:
        engine.push(stack.slices[index], stack.z_um[index])
    return engine.finish()


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
def test_a_shuffled_stack_fuses_to_the_depth_decision_and_image_of_the_stack_in_order(stack, composition):
    in_order = fused(stack, range(len(SHUFFLED)), composition)
    shuffled = fused(stack, SHUFFLED, composition)
    assert np.array_equal(np.isnan(shuffled.depth), np.isnan(in_order.depth))
    np.testing.assert_allclose(shuffled.depth, in_order.depth, rtol=0, atol=1e-4, equal_nan=True)
    assert np.array_equal(shuffled.fused, in_order.fused)
    # The same slice chosen at each pixel, and so the same share of pixels from each slice.
    assert np.array_equal(np.asarray(SHUFFLED)[shuffled.decision], in_order.decision)
    assert np.allclose(np.asarray(shuffled.chosen_fraction()), np.asarray(in_order.chosen_fraction())[SHUFFLED])


@pytest.mark.parametrize("order", ["in order", "shuffled"])
def test_the_depth_of_a_shuffled_stack_is_the_specimens_height(stack, order):
    depth = fused(stack, range(len(SHUFFLED)) if order == "in order" else SHUFFLED).depth
    error_um = np.abs(depth - stack.height_um)[np.isfinite(depth)]
    assert np.isfinite(depth).mean() > 0.9
    assert np.median(error_um) < STEP_UM / 2, np.median(error_um)
    assert np.mean(error_um > 2 * STEP_UM) < 0.02, np.mean(error_um > 2 * STEP_UM)


def test_shuffled_planes_of_an_ome_tiff_refuse_to_the_depth_and_image_of_the_planes_in_order(stack, tmp_path):
    for name, order in (("in_order", range(len(SHUFFLED))), ("shuffled", SHUFFLED)):
        z_um = [stack.z_um[i] for i in order]
        tifffile.imwrite(tmp_path / f"{name}.ome.tif", np.stack([stack.slices[i] for i in order]), photometric="rgb",
                         metadata={"axes": "ZYXS", "Plane": {"PositionZ": z_um, "PositionZUnit": ["µm"] * len(z_um)}})
    assert run_session.main(["--refuse", str(tmp_path / "in_order.ome.tif"), str(tmp_path / "shuffled.ome.tif"),
                             "--out", str(tmp_path / "out"), "--workers", "1", "--align", "off"]) == 0
    in_order, shuffled = (tifffile.imread(tmp_path / "out" / f"{name}.depth.tif") for name in ("in_order", "shuffled"))
    assert np.array_equal(np.isnan(shuffled), np.isnan(in_order)) and np.isfinite(in_order).mean() > 0.9
    np.testing.assert_allclose(shuffled, in_order, rtol=0, atol=1e-4, equal_nan=True)
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "shuffled.fused.tif"),
                          tifffile.imread(tmp_path / "out" / "in_order.fused.tif"))


def test_a_session_with_an_unordered_absolute_plan_maps_the_height_and_saves_the_true_spacing(tmp_path):
    plan_um = [20.0, -4.0, 44.0, 4.0, 36.0, 12.0, 28.0]  # every 8 um from -4 to 44, not in that order
    profile = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    profile["camera"]["specimen"].update(height_px=96, width_px=128)
    profile["camera"]["exposure_ms"] = 1
    profile["camera"]["noise"]["full_scale_exposure_ms"] = 1  # (quick, not dim: the camera collects light over it)
    profile["plan"] = {"z": {"absolute": plan_um}}
    path = tmp_path / "unordered.yaml"
    path.write_text(yaml.safe_dump(profile))
    assert run_session.main(["--profile", str(path), "--out", str(tmp_path / "out")]) == 0
    (folder,) = (tmp_path / "out").iterdir()
    report = json.loads((folder / "session.json").read_text())
    assert [s["z"] for s in report["slices"]] == plan_um
    with tifffile.TiffFile(folder / "stack.ome.tif") as tiff:
        pixels = tiff.ome_metadata.split("<Pixels ")[1].split(">")[0]
    assert 'PhysicalSizeZ="8.0"' in pixels, pixels
    depth = tifffile.imread(folder / "depth.tif")
    height_um = specimen_renderer(load_profile(path)).specimen.height_um
    error_um = np.abs(depth - height_um)[np.isfinite(depth)]
    assert np.isfinite(depth).mean() > 0.8
    assert np.median(error_um) < 4.0, np.median(error_um)   # half a step
    assert np.mean(error_um > 8.0) < 0.02, np.mean(error_um > 8.0)


def test_the_focus_curve_is_drawn_in_z_order(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []

    def recorded(name):
        real = getattr(matplotlib.axes.Axes, name)

        def recording(self, x, y, *args, **kwargs):
            drawn.append((name, list(x), list(y)))
            return real(self, x, y, *args, **kwargs)
        return recording

    for name in ("plot", "bar"):  # what is drawn at which x
        monkeypatch.setattr(matplotlib.axes.Axes, name, recorded(name))
    plot_focus_curve(tmp_path / "curve.png", [20, -4, 44, 4], [2.0, 0.5, 0.1, 1.0], "um", [0.5, 0.0, 0.1, 0.4])
    assert (tmp_path / "curve.png").is_file()
    assert drawn[0] == ("plot", [-4, 4, 20, 44], [0.5, 1.0, 2.0, 0.1])
    assert drawn[1][:2] == ("bar", [-4, 4, 20, 44]) and np.allclose(drawn[1][2], [0, 40, 50, 10])
