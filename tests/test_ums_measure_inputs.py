"""The "ums" measure on the inputs a hostile tester gave it: a dark or dim first slice, small and thin frames,
weights that load but compute NaN, and weights that are not the exported encoder's."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from fusion import FusionSettings, StreamingFusion
from fusion.deep.deep_measure import DEFAULT_WEIGHTS, DeepSpatialFrequency, WeightsError, load_encoder
from fusion.deep.network import UMSAutoencoder, UNetPlusPlus
from fusion.metrics import psnr
from tests.conftest import rendered

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped weights")


def fused_with_ums(slices: list[np.ndarray]) -> np.ndarray:
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(measure="ums", device="cpu"))
    for pixels in slices:
        engine.push(pixels)
    return engine.finish().fused


@pytest.fixture(scope="module")
def small_stack():
    return rendered(texture="coffee", surface="steps", shape=(96, 128), step_um=6.0)


@pytest.mark.parametrize("first", ["dark", "dim"])
def test_a_dark_or_dim_first_slice_fuses_as_well_as_the_stack_without_it(small_stack, first):
    """The intensity scale once came from slice 0: a dark first frame (the light came on after the first snap)
    or a dim one (a lamp warming up) made every later slice saturate, and the fused image was ruined."""
    slices = list(small_stack.slices)
    rng = np.random.default_rng(1)
    extra = (rng.integers(0, 4, size=slices[0].shape) if first == "dark" else slices[0] * 0.3).astype(np.uint8)
    without = psnr(fused_with_ums(slices), small_stack.truth)
    with_it = psnr(fused_with_ums([extra] + slices), small_stack.truth)
    assert with_it > without - 0.5, (with_it, without)


def nan_weights(folder):
    """The shipped weights with one NaN in their first floating tensor, without a record (a diverged export)."""
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float("nan")
    path = folder / "diverged.pt"
    torch.save(state, path)
    return path


def test_weights_that_compute_nan_are_refused_before_a_session_acquires(tmp_path, monkeypatch):
    import fusion.focus_measures as focus_measures
    from fusion.engine import check_measure_can_run

    weights = nan_weights(tmp_path)
    with pytest.raises(WeightsError, match=r"diverged.pt: these weights give NaN or infinite features") as caught:
        load_encoder(weights, "cpu")
    assert "\n" not in str(caught.value) and "git checkout" not in str(caught.value)
    # What a session calls before it moves anything (acquisition/session.py), with these weights as the measure's.
    monkeypatch.setitem(focus_measures.MEASURES, "ums", lambda window_px=31, device="auto":
                        DeepSpatialFrequency(window_px=window_px, device=device, weights=weights))
    with pytest.raises(WeightsError, match="diverged.pt: these weights give NaN"):
        check_measure_can_run(FusionSettings(measure="ums", device="cpu"))


@pytest.mark.parametrize("shape", [(8, 8), (1, 640), (16, 640), (32, 6400)])
def test_small_and_thin_frames_are_measured_and_fused(shape):
    """A frame under 16 px a side after the downscale once failed with torch's 'Output size is too small'."""
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, size=shape).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    measure = DeepSpatialFrequency(device="cpu")
    sharp_map, blurred_map = measure.measure_batch([sharp, blurred])
    assert sharp_map.shape == shape and np.isfinite(sharp_map).all()
    assert sharp_map.mean() > blurred_map.mean()
    fused = fused_with_ums([blurred.astype(np.uint8), sharp.astype(np.uint8)])
    assert fused.shape[:2] == shape


def test_a_wide_strip_keeps_its_aspect_ratio():
    """32x6400 was squashed to 8x480; now it is seen at 16x3200 (the short side kept at the network's least)."""
    measure = DeepSpatialFrequency(device="cpu")
    assert measure._feature_factor(32, 6400) == 0.5
    assert measure._feature_factor(480, 640) == 0.75
    assert measure._feature_factor(8, 8) == 1.0


def test_weights_of_another_architecture_name_a_key_and_a_shape(tmp_path):
    other = tmp_path / "other.pt"
    torch.save(UNetPlusPlus(filters=(8, 8, 16, 16, 32)).state_dict(), other)
    with pytest.raises(WeightsError, match=r"other.pt: these weights do not fit .*of the wrong shape, the first "
                                           r"'x0_0\.body\.0\.weight': \(8, 1, 7, 7\) where the network has "
                                           r"\(16, 1, 7, 7\)"):
        load_encoder(other, "cpu")
    partial = tmp_path / "partial.pt"
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("x0_4")} | {"head.weight": torch.zeros(1)}, partial)
    with pytest.raises(WeightsError, match=r"missing, the first 'x0_4\.body\.0\.weight'; 1 unexpected, the first "
                                           r"'head\.weight'"):
        load_encoder(partial, "cpu")


def test_a_training_checkpoint_given_as_weights_says_how_to_export_it(tmp_path):
    checkpoint = tmp_path / "ck.pt"
    torch.save({"model": UMSAutoencoder().state_dict(), "optimiser": {}, "step": 1}, checkpoint)
    with pytest.raises(WeightsError, match=r"ck.pt: this is a training checkpoint .*python -m fusion.deep.train "
                                           r"--steps 0 --out .*ck.pt --export WEIGHTS.pt"):
        load_encoder(checkpoint, "cpu")


def test_a_record_that_is_json_but_not_an_object_says_what_it_holds(tmp_path):
    weights = tmp_path / "mine.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    (tmp_path / "mine.json").write_text(json.dumps([1, 2]))
    with pytest.raises(WeightsError, match=r"mine.json: the weights' record is JSON but not an object \(it holds a "
                                           r"list") as caught:
        load_encoder(weights, "cpu")
    assert "git checkout" not in str(caught.value)  # the user's own file: git cannot restore it
