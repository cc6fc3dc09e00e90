"""An 8-bit palette stack (ImageJ's 8-bit with a colour table: a confocal channel saved in green, Fire) keeps its
colour table: its fused image is a palette image with the same table, where it was a plain grey one before."""
import numpy as np
import pytest
import tifffile

from fusion.readers.tiff import read_image_tiff
from tests.conftest import rendered
from tests.test_refuse_cli import run_cli


def _green_table() -> np.ndarray:
    table = np.zeros((3, 256), np.uint16)
    table[1] = np.arange(256) * 257
    return table


def _write(path, slices, colormap):
    tifffile.imwrite(path, np.stack(slices), photometric="palette", colormap=colormap)
    return path


@pytest.fixture(scope="module")
def grey_slices():
    return list(rendered("astronaut", "dome", color=False, bit_depth=8, shape=(96, 128)).slices)


def test_a_palette_stack_keeps_its_colour_table_and_fuses_as_its_grey(tmp_path, grey_slices):
    done = run_cli("--refuse", _write(tmp_path / "green.tif", grey_slices, _green_table()), "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "colour table" not in done.stderr
    tifffile.imwrite(tmp_path / "grey.tif", np.stack(grey_slices), photometric="minisblack", metadata={"axes": "ZYX"})
    assert run_cli("--refuse", tmp_path / "grey.tif", "--out", tmp_path / "out").returncode == 0
    with tifffile.TiffFile(tmp_path / "out" / "green.fused.tif") as fused:
        page = fused.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        np.testing.assert_array_equal(page.colormap, _green_table())
    np.testing.assert_array_equal(read_image_tiff(tmp_path / "out" / "green.fused.tif"),
                                  read_image_tiff(tmp_path / "out" / "grey.fused.tif"))


def test_a_palette_whose_colours_do_not_follow_the_index_is_said(tmp_path, grey_slices):
    """A palette picture (a GIF's table) has indices that need not follow the light: fused by them, and said."""
    shuffled = _green_table()[:, np.random.default_rng(0).permutation(256)]
    done = run_cli("--refuse", _write(tmp_path / "gif.tif", grey_slices, shuffled), "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "its colour table does not grow brighter with the index" in done.stderr
