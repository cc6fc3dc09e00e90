"""Damaged weights and focus measures that give NaN or infinity are errors, never a quiet wrong image."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from fusion.deep.deep_measure import DEFAULT_WEIGHTS, DeepSpatialFrequency, WeightsError, load_encoder, sha256_of
from fusion.errors import InvalidFocusMeasureError
from fusion.focus_checks import check_focus_map
from fusion.outputs import write_json
from tests.conftest import REPO_ROOT


def flipped_copy(folder, with_record: bool):
    """The shipped weights with 4 kB in the middle flipped (and their record beside them, or not)."""
    data = bytearray(DEFAULT_WEIGHTS.read_bytes())
    middle = len(data) // 2
    for index in range(middle, middle + 4096):
        data[index] ^= 0xFF
    damaged = folder / "ums_unetpp.pt"
    damaged.write_bytes(bytes(data))
    if with_record:
        shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), folder / "ums_unetpp.json")
    return damaged


def test_shipped_weights_record_their_sha256():
    record = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_of(DEFAULT_WEIGHTS)


def test_flipped_bytes_in_the_weights_are_one_line_naming_the_file(tmp_path):
    damaged = flipped_copy(tmp_path, with_record=True)
    # (a copy of the user's own: restoring it from git is no advice; training new weights is)
    with pytest.raises(WeightsError, match=r"ums_unetpp.pt: the weights file is damaged .*train new weights") as caught:
        load_encoder(damaged, "cpu")
    assert "\n" not in str(caught.value)


def test_damaged_weights_without_a_record_give_no_silent_result(tmp_path):
    # Without a record nothing says what the file should hash to; the NaN its network computes on the test input
    # is caught as the weights load (before a session acquires), and a measure's NaN map is caught all the same.
    damaged = flipped_copy(tmp_path, with_record=False)
    with pytest.raises(WeightsError, match=r"ums_unetpp.pt: these weights give NaN or infinite features"):
        DeepSpatialFrequency(weights=damaged, device="cpu").load()
    focus_map = np.full((96, 128), np.nan, np.float32)
    with pytest.raises(InvalidFocusMeasureError,
                       match=r"stack.tif: slice 0 \(counting from 0\): the focus measure 'ums' gave NaN"):
        check_focus_map(focus_map, "ums", "stack.tif", 0)


def test_unreadable_weights_are_one_line_without_torch_advice(tmp_path):
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(DEFAULT_WEIGHTS.read_bytes()[:100_000])  # truncated
    with pytest.raises(WeightsError) as caught:
        load_encoder(garbage, "cpu")
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message and "Re-running" not in message
    assert "weights.pt: not a readable weights file" in message and "train new weights" in message
    assert "git checkout" not in message  # a file of the user's own: git cannot restore it


@pytest.mark.slow
def test_a_focus_measure_that_overflows_is_an_error_naming_it(tmp_path):
    # Valid float32 data at the edge of the range: the single-scale blend's windowed gradient sum
    # overflows to infinity. (The default pyramid fuses float stacks in units of their own range.)
    planes = np.zeros((4, 64, 80), np.float32)
    planes[:, ::2] = 3e38
    planes[:, 1::2] = -3e38
    stack = tmp_path / "extreme.tif"
    tifffile.imwrite(stack, planes, photometric="minisblack", metadata={"axes": "ZYX"})
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", str(stack),
                           "--out", str(tmp_path / "out"), "--composition", "blend"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "extreme.tif: slice 0 (counting from 0): the focus measure 'sf' gave NaN or infinity" in errors[0]
    assert not (tmp_path / "out" / "extreme.fused.tif").exists()
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", str(stack),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.isfinite(tifffile.imread(tmp_path / "out" / "extreme.fused.tif")).all()


def test_reports_are_strict_json(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"score": float("nan"), "scores": [1.0, float("inf"), np.float32(2.5)], "n": np.int64(3)})

    def refuse_constant(token):
        raise ValueError(f"{token} is not JSON")

    data = json.loads(path.read_text(), parse_constant=refuse_constant)
    assert data == {"score": None, "scores": [1.0, None, 2.5], "n": 3}
