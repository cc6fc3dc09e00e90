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
                       r"window_px"),
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
