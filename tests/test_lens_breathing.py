"""The "lens" alignment model: a lens's magnification changes smoothly with focus about its axis, so
each slice's transform is the zoom fitted over the whole sweep, not the chain of noisy pairwise steps."""
import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion
from fusion.align.alignment import describe, max_displacement_px
from fusion.align.lens_breathing import LensBreathing
from fusion.metrics import psnr
from simulators.layered import render_layered_stack
from simulators.optics import CameraNoise
from simulators.psf import DefocusPSF
from simulators.scenes import opaque_surface
from simulators.specimens import load_texture, make_height_map

SHAPE = (288, 384)
ZOOM_PER_UM = 0.0006   # the quality benchmark's breathing lens: 2.5% over the sweep


def zoom_about_centre(scale: float, shape=SHAPE) -> np.ndarray:
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    matrix = np.eye(3)
    matrix[:2, :2] *= scale
    matrix[:2, 2] = centre - scale * centre
    return matrix


def test_the_fit_reads_one_zoom_per_unit_of_focus_and_ignores_false_shifts():
    breathing = LensBreathing()
    rng = np.random.default_rng(0)
    for z in np.arange(0.0, 40.0, 3.0):
        registered = zoom_about_centre(1 + ZOOM_PER_UM * z + rng.normal(0, 2e-4))
        registered[:2, 2] += rng.normal(0, 1.0, 2)  # what defocus makes chained registrations drift by
        breathing.add(float(z), registered)
    assert breathing.zoom_per_unit == pytest.approx(ZOOM_PER_UM, rel=0.05)
    fitted = breathing.transform(39.0, SHAPE)
    assert max_displacement_px(fitted @ np.linalg.inv(zoom_about_centre(1 + ZOOM_PER_UM * 39)), SHAPE) < 0.2


@pytest.mark.slow
def test_a_breathing_sweep_fuses_closer_to_the_truth_with_the_lens_model():
    """Rendered layer by layer (light spills across depth, a disk + Gaussian PSF with spherical
    aberration), the slices zooming 2.5% through the sweep about the frame's centre."""
    rng = np.random.default_rng(3)
    specimen = opaque_surface(load_texture("coffee", SHAPE), make_height_map("irregular", SHAPE, 40.0, rng))
    stack = render_layered_stack(specimen, np.arange(-3.0, 44.0, 3.0), DefocusPSF(0.4, 0.7, 0.5, 0.2),
                                 CameraNoise(20000, 5, 8), breathing_per_um=ZOOM_PER_UM, seed=3)

    def fused(model: str):
        engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype,
                                 FusionSettings(align="on", align_model=model))
        for pixels, z in zip(stack.slices, stack.z_um):
            engine.push(pixels, z)
        return engine.finish()

    lens, free = fused("lens"), fused("scale_shift")
    lens_db, free_db = psnr(lens.fused, stack.truth), psnr(free.fused, stack.truth)
    best_slice_db = max(psnr(s, stack.truth) for s in stack.slices)
    assert lens_db > free_db + 1.0, (lens_db, free_db)
    assert lens_db > best_slice_db + 3.0, (lens_db, best_slice_db)
    last = describe(np.array(lens.alignment[-1]["matrix"] + [[0, 0, 1]]))
    assert last["rotation_deg"] == 0.0
