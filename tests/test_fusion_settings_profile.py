"""One fusion-settings model: a profile's fusion: section and the command line both become FusionSettings."""
from __future__ import annotations

import subprocess
import sys

import pytest

from acquisition.profile import ProfileError, load_profile, with_fusion_overrides
from fusion.engine import FusionSettings
from run_session import build_parser, fusion_overrides, refuse_settings
from tests.conftest import REPO_ROOT
from tests.test_profile_checks import RIG, write_profile

PLAN = "plan: {z: {range: 4, step: 1}}\n"


def test_every_engine_setting_is_reachable_from_a_profile(tmp_path):
    path = write_profile(tmp_path, RIG + PLAN + "fusion: {method: laplacian, composition: pick, window_px: 15, "
                                   "sharpness: 8, mode_filter_px: 0, feather_px: 2.5, align: off, "
                                   "align_model: affine, device: cpu}\n")
    assert load_profile(path).fusion_settings() == FusionSettings(
        measure="laplacian", composition="pick", window_px=15, sharpness=8.0, mode_filter_px=0, feather_px=2.5,
        align="off", align_model="affine", device="cpu")


def test_a_profile_without_fusion_settings_takes_the_engines_defaults():
    assert load_profile(REPO_ROOT / "profiles" / "simulated.yaml").fusion_settings() == FusionSettings()


@pytest.mark.parametrize("fusion,message", [
    ("{windw_px: 15}", r"rig.yaml: fusion.windw_px: unknown key 'windw_px' \(did you mean 'window_px'\?\); "
                       r"allowed here: align, align_model, "
                       r"composition, decision_channel, device, feather_px, method, mode_filter_px, sharpness, "
                       r"weights, window_px"),
    ("{sharpness: -1}", r"rig.yaml: fusion: sharpness must be a positive number, got -1"),
    # Not a number, or infinite: an all-black image, or a crash after the whole stack was acquired.
    ("{sharpness: .nan}", r"rig.yaml: fusion.sharpness: Input should be a finite number"),
    ("{sharpness: .inf}", r"rig.yaml: fusion.sharpness: Input should be a finite number"),
    ("{feather_px: .inf}", r"rig.yaml: fusion.feather_px: Input should be a finite number"),
    ("{feather_px: .nan}", r"rig.yaml: fusion.feather_px: Input should be a finite number"),
    ("{device: tpu}", r"rig.yaml: fusion: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
    ("{mode_filter_px: -3}", r"rig.yaml: fusion: mode_filter_px must be 0 \(off\) or more, got -3"),
    ("{window_px: many}", r"rig.yaml: fusion.window_px: Input should be a valid integer"),
    ("{window_px: 0}", r"rig.yaml: fusion.window_px: focus window must be at least 1 pixel, got 0"),
    ("{method: tenengrad}", r"rig.yaml: fusion.method: unknown fusion method 'tenengrad'; choose one of"),
    # Finite, but a feather of 1e4 px on a 320 x 256 frame ran for minutes, deaf to SIGTERM in the native call;
    # windows past 2**63 failed in the kernels after the whole stack was acquired.
    ("{feather_px: 1.0e+4}", r"rig.yaml: fusion: feather_px must be at most 1000 px, got 10000.0: wider than a frame"),
    ("{window_px: 100000000000000000000}",
     r"rig.yaml: fusion: window_px must be at most 1000 px, got 100000000000000000000"),
    ("{mode_filter_px: 1000001}", r"rig.yaml: fusion: mode_filter_px must be at most 1000 px, got 1000001"),
    ("{sharpness: 1.0e+300}", r"rig.yaml: fusion: sharpness must be at most 1000, got 1e\+300: beyond it the blend "
                              r"weighs only the sharpest slice; compose by pick instead"),
])
def test_a_bad_fusion_section_names_the_key(tmp_path, fusion, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write_profile(tmp_path, RIG + PLAN + f"fusion: {fusion}\n"))


def test_the_command_line_overrides_the_profile_and_says_so_when_it_cannot(tmp_path):
    path = write_profile(tmp_path, RIG + PLAN + "fusion: {composition: blend, sharpness: 8}\n")
    args = build_parser().parse_args(["--profile", str(path), "--align", "off", "--sharpness", "16"])
    settings = with_fusion_overrides(load_profile(path), fusion_overrides(args)).fusion_settings()
    assert (settings.composition, settings.sharpness, settings.align) == ("blend", 16.0, "off")
    bad = build_parser().parse_args(["--profile", str(path), "--window-px", "-4"])
    with pytest.raises(ProfileError, match=r"command line: fusion.window_px: focus window"):
        with_fusion_overrides(load_profile(path), fusion_overrides(bad))


def test_a_refusion_without_options_takes_the_engines_defaults_but_aligns_auto():
    parser = build_parser()
    assert refuse_settings(parser, parser.parse_args(["--refuse", "x.tif", "--out", "o"])) == \
        FusionSettings(align="auto")
    settings = refuse_settings(parser, parser.parse_args(["--refuse", "x.tif", "--out", "o", "--method", "ums",
                                                          "--align", "off"]))
    assert settings == FusionSettings(measure="ums", align="off")


@pytest.mark.slow
def test_a_bad_override_of_a_live_session_is_one_clear_error(tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--sharpness", "0", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    assert "error: command line: fusion: sharpness must be a positive number, got 0" in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["evidence_sigma_px", "band_sigma_px", "noise_floor"])
def test_pyramid_weighting_refuses_what_is_not_a_number(name):
    from fusion.multiscale import PyramidWeighting

    with pytest.raises(ValueError, match=f"pyramid weighting: {name} must be 0 or a positive number, got nan"):
        PyramidWeighting(**{name: float("nan")})


def test_cuda_without_a_gpu_names_the_device_not_the_weights():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU that torch can use")
    from fusion.deep.deep_measure import DeviceUnavailableError, load_encoder

    with pytest.raises(DeviceUnavailableError, match=r"device 'cuda': torch sees no CUDA GPU here"):
        load_encoder(device="cuda")


def test_widths_and_sharpness_up_to_their_limits_are_taken():
    settings = FusionSettings(composition="pick", window_px=1000, mode_filter_px=1000, feather_px=1000.0)
    assert (settings.window_px, settings.mode_filter_px, settings.feather_px) == (1000, 1000, 1000.0)
    assert FusionSettings(composition="blend", sharpness=1000.0).sharpness == 1000.0


def test_a_z_of_minus_zero_is_fused_as_zero():
    import math

    import numpy as np

    from fusion.engine import StreamingFusion

    engine = StreamingFusion((32, 32), np.uint8)
    rng = np.random.default_rng(0)
    for z in (-0.0, -2.0):  # a stack with a negative PhysicalSizeZ: 0 * -2.0 is -0.0
        engine.push(rng.integers(0, 255, (32, 32), dtype=np.uint8), z)
    first = engine.finish().z_positions[0]
    assert first == 0.0 and math.copysign(1.0, first) == 1.0


def _no_torch_device(kind: str):
    """Skip unless torch is installed and has no ``kind`` ("cuda" or "mps") GPU here."""
    torch = pytest.importorskip("torch")
    present = torch.cuda.is_available() if kind == "cuda" else torch.backends.mps.is_available()
    if present:
        pytest.skip(f"this machine has a {kind} GPU that torch can use")


def test_mps_without_an_apple_gpu_names_the_device_not_the_weights():
    _no_torch_device("mps")
    from fusion.deep.deep_measure import DeviceUnavailableError, load_encoder

    # It said "not a readable weights file: it is damaged ... restore the shipped file".
    with pytest.raises(DeviceUnavailableError, match=r"^device 'mps': torch sees no Apple GPU here "
                                                     r"\(torch.backends.mps.is_available\(\) is False\); use "
                                                     r"--device cpu, or auto$"):
        load_encoder(device="mps")


def test_a_cuda_index_past_the_gpus_torch_sees_names_the_ones_there(monkeypatch):
    torch = pytest.importorskip("torch")
    from fusion.deep.deep_measure import DeviceUnavailableError, load_encoder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, as a one-GPU machine has
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match=r"^device 'cuda:1': torch sees 1 CUDA GPU here \(cuda:0 to "
                                                     r"cuda:0\); use one of them, --device cpu, or auto$"):
        load_encoder(device="cuda:1")


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_a_live_session_whose_fusion_device_is_missing_fails_before_anything_moves(tmp_path, kind):
    _no_torch_device(kind)
    # It acquired all 17 slices, then wrote no fused image: "error: fusion failed: DeviceUnavailableError".
    path = write_profile(tmp_path, RIG + PLAN + f"fusion: {{method: ums, device: {kind}}}\n")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path), "--out",
                           str(tmp_path / "sessions")], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    gpu = "CUDA GPU" if kind == "cuda" else "Apple GPU"
    assert done.stderr.strip().splitlines() == [
        f"error: device '{kind}': torch sees no {gpu} here (torch.{'cuda' if kind == 'cuda' else 'backends.mps'}"
        ".is_available() is False); use --device cpu, or auto"]
    assert not (tmp_path / "sessions").exists()  # no session folder: no device was opened, nothing acquired


def test_an_mda_session_whose_fusion_device_is_missing_fails_before_the_core_opens(tmp_path, monkeypatch):
    _no_torch_device("cuda")
    import acquisition.mda_session as mda_session

    def core_opened(profile):
        raise AssertionError("the core was opened before fusion was checked")

    monkeypatch.setattr(mda_session, "open_mda_rig", core_opened)
    profile = with_fusion_overrides(load_profile(REPO_ROOT / "profiles" / "simulated-mda.yaml"),
                                    {"method": "ums", "device": "cuda"})
    with pytest.raises(ProfileError, match=r"^device 'cuda': torch sees no CUDA GPU here"):
        mda_session.run_mda_profile(profile, tmp_path / "sessions")
    assert not (tmp_path / "sessions").exists()


def test_damaged_weights_fail_a_live_session_before_anything_moves(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from acquisition import session
    from fusion.deep import deep_measure

    record = tmp_path / "ums_unetpp.json"  # a record whose sha256 the shipped weights do not have: damaged
    record.write_text('{"sha256": "%s"}' % ("0" * 64))
    monkeypatch.setattr(deep_measure, "weights_record", lambda weights: record)
    monkeypatch.setattr(session, "open_rig", lambda profile: pytest.fail("the rig opened before fusion was checked"))
    profile = load_profile(write_profile(tmp_path, RIG + PLAN + "fusion: {method: ums, device: cpu}\n"))
    with pytest.raises(ProfileError, match=r"ums_unetpp.pt: the weights file is damaged \(its sha256 is"):
        session.run_profile(profile, tmp_path / "sessions", progress=False)
