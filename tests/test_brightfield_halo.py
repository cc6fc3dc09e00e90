"""Bright-field transmitted light: a dark specimen over a bright glow, the halo case.

A defocused slice spreads the dark edge into the glow beside it and so carries more gradient
energy there than the sharp slice: a fusion that trusts local gradients draws dark rings
around every edge. The stack is rendered layer by layer (light spreads across depth edges)
with a disk + Gaussian PSF, spherical aberration and axial chromatic offsets.
"""
import numpy as np
import pytest

from benchmarks.peers import baseline_20_lines
from fusion import FusionSettings, StreamingFusion
from fusion.metrics import edge_band, masked_psnr
from simulators.layered import render_layered_stack
from simulators.optics import CameraNoise
from simulators.psf import DefocusPSF
from simulators.scenes import bright_field_animal


@pytest.fixture(scope="module")
def stack():
    specimen = bright_field_animal((192, 256), np.random.default_rng(0), depth_um=30.0)
    return render_layered_stack(specimen, np.arange(-3, 34, 3.0), DefocusPSF(0.4, 0.7, 0.6, 0.4),
                                CameraNoise(20000, 5, 8), channel_focus_offset_um=(1.0, 0.0, -1.0))


def fused(stack, settings=None):
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, settings)
    for pixels, z in zip(stack.slices, stack.z_um):
        engine.push(pixels, z)
    return engine.finish().fused


def test_edges_are_fused_without_halos(stack):
    band = edge_band(stack.truth)  # within 12 px of the specimen's strong edges
    assert 0.05 < band.mean() < 0.6
    ours = masked_psnr(fused(stack), stack.truth, band)
    best_slice = max(masked_psnr(s, stack.truth, band) for s in stack.slices)
    single_scale = masked_psnr(fused(stack, FusionSettings(composition="blend")), stack.truth, band)
    baseline = masked_psnr(baseline_20_lines(stack.slices), stack.truth, band)
    # Measured: 28.95 dB against 25.70 (best slice), 26.85 (single-scale blend, which halos) and
    # 28.66 (issue 12's 20-line baseline).
    assert ours > best_slice + 2.0, (ours, best_slice)
    assert ours > single_scale + 1.0, (ours, single_scale)
    assert ours > baseline + 0.1, (ours, baseline)
