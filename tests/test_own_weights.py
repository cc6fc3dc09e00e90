"""Weights of one's own for the "ums" measure (python -m fusion.deep.train --export writes them): from the command
line (--weights) and a profile (fusion.weights), as the shipped file is used, with a clear line for a file that is
not there before anything is fused or moved. Real parts: run_session's entry in this process, tifffile files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import run_session
from fusion.deep.deep_measure import DEFAULT_WEIGHTS
from fusion.engine import FusionSettings
from tests.conftest import REPO_ROOT, rendered


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory) -> Path:
    stack = rendered(shape=(48, 64), depth_um=12.0, step_um=4.0)
    path = tmp_path_factory.mktemp("stack") / "small.ome.tif"
    tifffile.imwrite(path, np.stack(stack.slices), photometric="rgb", metadata={"axes": "ZYXS"})
    return path


def test_a_stack_is_fused_with_weights_given_on_the_command_line(small_stack, tmp_path):
    # There was no way to give them: only the shipped file was read (a user overwrote it to try their own).
    own = tmp_path / "mine.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, own)
    for out, weights in (("shipped", []), ("own", ["--weights", str(own)])):
        assert run_session.main(["--refuse", str(small_stack), "--out", str(tmp_path / out), "--method", "ums",
                                 "--align", "off", *weights]) == 0
    report = json.loads((tmp_path / "own" / "small.json").read_text())
    assert report["settings"]["weights"] == str(own)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "own" / "small.fused.tif"),
                                  tifffile.imread(tmp_path / "shipped" / "small.fused.tif"))  # the same weights


def test_weights_that_are_not_there_are_a_usage_error_before_anything_is_fused(small_stack, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_session.main(["--refuse", str(small_stack), "--out", str(tmp_path / "out"), "--method", "ums",
                          "--weights", str(tmp_path / "none.pt")])
    assert exit_.value.code == 2
    assert f"--weights {tmp_path / 'none.pt'}: no such weights file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("there", [True, False])
def test_weights_for_another_measure_are_said_to_do_nothing(small_stack, tmp_path, capsys, there):
    weights = DEFAULT_WEIGHTS if there else tmp_path / "none.pt"  # (not read: no error for a file not there)
    assert run_session.main(["--refuse", str(small_stack), "--out", str(tmp_path / "out"), "--align", "off",
                             "--weights", str(weights)]) == 0
    assert "--weights has no effect: it applies to --method ums; the sf measure has none" in capsys.readouterr().err


def test_a_profile_names_its_weights_and_one_that_is_not_there_stops_the_session_before_it_moves(tmp_path, capsys):
    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["camera"]["specimen"].update(height_px=48, width_px=64)
    data["fusion"] = {**data.get("fusion", {}), "method": "ums", "weights": str(tmp_path / "none.pt")}
    profile = tmp_path / "own-weights.yaml"
    profile.write_text(yaml.safe_dump(data))
    assert run_session.main(["--profile", str(profile), "--out", str(tmp_path / "sessions")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none.pt'}: no such weights file" in err and "Traceback" not in err
    assert not list((tmp_path / "sessions").glob("*/stack.ome.tif"))  # nothing acquired


@pytest.mark.parametrize("missing", ["none.pt", "a-folder"])
def test_a_profiles_weights_that_are_not_there_are_refused_when_it_loads(tmp_path, missing):
    """fusion.weights naming a file that is not there was taken when the profile loaded, and refused only as the
    session began: refused with the profile's other bad keys now, naming the key and the file."""
    from acquisition.profile import ProfileError, load_profile

    (tmp_path / "a-folder").mkdir()
    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["fusion"] = {**data.get("fusion", {}), "method": "ums", "weights": str(tmp_path / missing)}
    profile = tmp_path / "own-weights.yaml"
    profile.write_text(yaml.safe_dump(data))
    there = "is a folder" if missing == "a-folder" else "no such weights file"
    with pytest.raises(ProfileError, match=rf"own-weights.yaml: fusion.weights: {tmp_path / missing}: {there} "):
        load_profile(profile)
    data["fusion"]["method"] = "sf"   # (read by no other measure: said to have no effect, as --weights is)
    profile.write_text(yaml.safe_dump(data))
    assert load_profile(profile).fusion.weights == str(tmp_path / missing)


def test_a_profile_records_its_weights_as_the_file_used(tmp_path, monkeypatch):
    from acquisition.profile import load_profile

    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["fusion"] = {**data.get("fusion", {}), "method": "ums", "weights": "mine.pt"}
    profile = tmp_path / "own-weights.yaml"
    profile.write_text(yaml.safe_dump(data))
    shutil.copyfile(DEFAULT_WEIGHTS, tmp_path / "mine.pt")
    monkeypatch.chdir(tmp_path)  # (relative to the folder the program runs in, as the README says)
    assert load_profile(profile).fusion.weights == str(tmp_path / "mine.pt")  # session.json: not "mine.pt"


def test_the_settings_take_a_path_and_refuse_what_is_none():
    assert FusionSettings(measure="ums", weights=Path("/x/w.pt")).weights == "/x/w.pt"  # (JSON in reports)
    with pytest.raises(TypeError, match="weights"):
        FusionSettings(weights=" ")
    # Under another measure, weights change nothing: --resume does not fuse again for them.
    assert FusionSettings(weights="/x/w.pt").that_count() == FusionSettings().that_count()


def test_resume_skips_a_stack_whose_report_predates_the_weights_setting(small_stack, tmp_path, capsys):
    # Reports written before there was a weights setting have no "weights" key: they were made with the shipped file,
    # as weights left out is now. --resume fused them again (any other key set was another version's settings).
    out = tmp_path / "out"
    assert run_session.main(["--refuse", str(small_stack), "--out", str(out), "--method", "ums", "--align", "off"]) == 0
    report_path = out / "small.json"
    report = json.loads(report_path.read_text())
    del report["settings"]["weights"]
    report_path.write_text(json.dumps(report))
    assert run_session.main(["--refuse", str(small_stack), "--out", str(out), "--method", "ums", "--align", "off",
                             "--resume"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert "weights" not in json.loads(report_path.read_text())["settings"]  # (not fused again: not rewritten)
    # With weights of one's own, that older report was not made with them: fused again
    own = tmp_path / "mine.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, own)
    assert run_session.main(["--refuse", str(small_stack), "--out", str(out), "--method", "ums", "--align", "off",
                             "--resume", "--weights", str(own)]) == 0
    assert json.loads(report_path.read_text())["settings"]["weights"] == str(own)


def test_weights_on_the_command_line_take_variables_as_a_profiles_do(small_stack, tmp_path, monkeypatch, capsys):
    # --weights expanded only ~ (a $VARIABLE in it was taken as a folder of that name: "no such weights file"), where
    # a profile's fusion.weights expands both: one helper for both now.
    from acquisition.profile import load_profile

    own = tmp_path / "models" / "mine.pt"
    own.parent.mkdir()
    shutil.copyfile(DEFAULT_WEIGHTS, own)
    monkeypatch.setenv("UMS_TEST_MODELS", str(own.parent))
    monkeypatch.chdir(tmp_path)
    assert run_session.main(["--refuse", str(small_stack), "--out", str(tmp_path / "out"), "--method", "ums",
                             "--align", "off", "--weights", "$UMS_TEST_MODELS/mine.pt"]) == 0
    assert json.loads((tmp_path / "out" / "small.json").read_text())["settings"]["weights"] == str(own)
    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["fusion"] = {**data.get("fusion", {}), "method": "ums", "weights": "${UMS_TEST_MODELS}/../models/mine.pt"}
    profile = tmp_path / "own-weights.yaml"
    profile.write_text(yaml.safe_dump(data))
    assert Path(load_profile(profile).fusion.weights).resolve() == own
    # A variable that is not set is said as a profile says it, as a usage error
    monkeypatch.delenv("UMS_TEST_MODELS")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_session.main(["--refuse", str(small_stack), "--out", str(tmp_path / "out"), "--method", "ums",
                          "--weights", "$UMS_TEST_MODELS/mine.pt"])
    assert exit_.value.code == 2
    assert "--weights '$UMS_TEST_MODELS/mine.pt' names the environment variable $UMS_TEST_MODELS, which is not set" \
        in capsys.readouterr().err
