"""The UMS-Fusion network, its unsupervised training, its weights and the "ums" focus measure."""

import numpy as np
import pytest
import torch

from fusion.deep.deep_measure import DEFAULT_WEIGHTS, WeightsError, load_encoder
from fusion.deep.network import UMSAutoencoder, UNetPlusPlus, feature_spatial_frequency
from fusion.deep.train import random_batch, reconstruction_loss, spatial_frequency, train


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("shape", [(64, 64), (50, 70), (33, 17)])
def test_unetpp_gives_16_feature_channels_at_full_resolution(shape):
    model = UMSAutoencoder().eval()
    with torch.inference_mode():
        reconstruction, features = model(torch.zeros(2, 1, *shape))
    assert features.shape == (2, 16, *shape) and reconstruction.shape == (2, 1, *shape)
    assert sum(p.numel() for p in model.encoder.parameters()) < 2_000_000  # a few MB shipped


def test_feature_spatial_frequency_is_the_windowed_gradient_magnitude():
    features = torch.zeros(1, 2, 20, 20)
    features[0, 0, :, 10:] = 1.0  # one vertical edge in channel 0
    measure = feature_spatial_frequency(features, window_px=3)[0]
    assert measure[10, 10] == pytest.approx(3.0, rel=1e-4)  # three rows of |1 - 0| in the window
    assert measure[10, 2] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_a_training_step_lowers_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = UMSAutoencoder()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = random_batch([np.random.default_rng(0).random((64, 64), dtype=np.float32)], 4, 32,
                         np.random.default_rng(1))
    losses = []
    for _ in range(8):
        reconstruction, _ = model(batch)
        loss, _ = reconstruction_loss(reconstruction, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.usefixtures("one_torch_thread")
def test_published_sf_loss_variant_ignores_detail():
    flat, stripes = torch.full((1, 1, 8, 8), 0.5), torch.zeros(1, 1, 8, 8)
    stripes[..., ::2] = 1.0  # same mean brightness, all detail
    assert spatial_frequency(stripes) > spatial_frequency(flat) + 0.5
    # Without subtracting the centre pixel the "frequency" of a flat grey beats that of stripes.
    assert spatial_frequency(flat, true_difference=False) == pytest.approx(0.5 * np.sqrt(2), rel=1e-4)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_training_checkpoints_resume_and_export(tmp_path):
    images = [np.random.default_rng(0).random((80, 80), dtype=np.float32)]
    first = train(2, tmp_path / "ck.pt", batch=2, crop_px=32, images=images, log_every=1)
    resumed = train(2, tmp_path / "ck2.pt", resume=tmp_path / "ck.pt", batch=2, crop_px=32, images=images,
                    log_every=1)
    assert first["steps"] == 2 and resumed["steps"] == 4
    assert (tmp_path / "ck2.json").is_file()
    from fusion.deep.train import export_weights

    export_weights(tmp_path / "ck2.pt", tmp_path / "weights.pt")
    encoder, _ = load_encoder(tmp_path / "weights.pt", "cpu")
    assert isinstance(encoder, UNetPlusPlus)


def test_corrupt_or_mismatched_weights_are_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="corrupt.pt: not a readable weights file"):
        load_encoder(corrupt, "cpu")
    mismatched = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), mismatched)
    with pytest.raises(WeightsError, match="other.pt: these weights do not fit the UMS-Fusion UNet\\+\\+"):
        load_encoder(mismatched, "cpu")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_encoder(tmp_path / "missing.pt", "cpu")


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped weights")
def test_ums_fuses_a_synthetic_stack_closer_to_truth_than_any_slice(rgb_stack):
    from fusion import FusionSettings, StreamingFusion
    from fusion.metrics import psnr

    slices, z_um = rgb_stack.slices[::2], rgb_stack.z_um[::2]  # every other slice: 6 um apart (CPU time)
    engine = StreamingFusion(slices[0].shape, np.uint8, FusionSettings(measure="ums"))
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    fused = engine.finish().fused
    assert psnr(fused, rgb_stack.truth) > max(psnr(s, rgb_stack.truth) for s in slices) + 3


def test_shipped_weights_come_with_their_training_record():
    record = DEFAULT_WEIGHTS.with_suffix(".json")
    assert DEFAULT_WEIGHTS.is_file() and record.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 8_000_000
    import json

    data = json.loads(record.read_text())
    assert data["steps"] > 0 and "final_losses" in data and data["command"].startswith("python -m fusion.deep.train")


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped weights")
def test_batched_and_reduced_precision_measures_agree_with_single_float32(rgb_stack):
    """Batching slices and half precision (float16 on CUDA; bfloat16 is its CPU stand-in here)
    must not change which slice is sharpest."""
    from fusion.deep.deep_measure import DeepSpatialFrequency
    from fusion.focus_measures import to_gray

    grays = [to_gray(p)[:96, :128] for p in rgb_stack.slices[:4]]  # a quarter: emulated bfloat16 is slow
    single = DeepSpatialFrequency(device="cpu", precision="float32")
    reference = np.stack([single(g) for g in grays])
    batched = np.stack(DeepSpatialFrequency(device="cpu", precision="float32").measure_batch(grays))
    np.testing.assert_allclose(batched, reference, rtol=1e-4, atol=1e-3 * reference.max())
    half = np.stack(DeepSpatialFrequency(device="cpu", precision="bfloat16").measure_batch(grays))
    assert np.corrcoef(half.ravel(), reference.ravel())[0, 1] > 0.99
    assert (half.argmax(axis=0) == reference.argmax(axis=0)).mean() > 0.9
    with pytest.raises(ValueError, match="unknown precision"):
        DeepSpatialFrequency(precision="float8")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped weights")
def test_a_live_session_with_the_deep_measure_reads_its_weights_once(tmp_path, monkeypatch):
    """The check before anything is acquired and the fusion after it share one read of the weights
    (it read them twice: 0.05 to 0.3 s of a session)."""
    from acquisition.profile import load_profile
    from acquisition.session import run_profile
    from fusion.deep import deep_measure
    from tests.test_profile_checks import RIG, write_profile

    monkeypatch.setattr(deep_measure, "_last_loaded", None, raising=False)  # as in a new process
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda file, *args, **kwargs: reads.append(file) or real_load(file, *args,
                                                                                                    **kwargs))
    # A small specimen: the full-size default (768 x 1024 px) spent 10 s fusing on one thread, and the weights are
    # read (or not) the same way at any size.
    rig = RIG.replace("driver: simulated}", "driver: simulated, specimen: {height_px: 96, width_px: 128}}", 1)
    profile = load_profile(write_profile(tmp_path, rig + "plan: {z: {range: 4, step: 1}}\n"
                                                         "fusion: {method: ums, device: cpu}\n"))
    assert profile.camera.specimen.height_px == 96
    outcome = run_profile(profile, tmp_path / "sessions", progress=False)
    assert outcome.completed and (outcome.folder / "fused.tif").is_file()
    assert outcome.report.device_used == "cpu"
    assert reads == [DEFAULT_WEIGHTS]


def test_weights_changed_after_loading_are_checked_again(tmp_path):
    """A weights file read once is not taken as read again once it has changed: damage found later is found."""
    import shutil

    weights = tmp_path / "ums_unetpp.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), weights.with_suffix(".json"))
    encoder, _ = load_encoder(weights, "cpu")
    assert load_encoder(weights, "cpu")[0] is encoder  # unchanged: the same encoder, not read again
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size, rewritten in place
    with pytest.raises(WeightsError, match="ums_unetpp.pt: the weights file is damaged"):
        load_encoder(weights, "cpu")
