"""Pixel sizes and z in any unit their file gives them in: every length of OME's UnitsLength, resolution tags in
inches, and pixels that are not square. What the user checks: the pixel size that the fused image and depth map
record (as tifffile, Fiji and napari read their resolution tags), the slices' z, and the warnings."""

import numpy as np
import pytest
import tifffile

from fusion.readers import open_stack
from fusion.refuse import refuse_stack

STACK = np.stack([np.full((48, 64), 30 * k, np.uint8) for k in range(3)])
STACK[:, ::7, ::5] = 255  # some detail


def recorded_pixel_um(path) -> tuple[float, float] | None:
    """(x, y) pixel size in µm that a TIFF's resolution tags record, as a plain reader converts them; None: none."""
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        unit = page.tags["ResolutionUnit"].value if "ResolutionUnit" in page.tags else tifffile.RESUNIT.INCH
        um_per_unit = {tifffile.RESUNIT.CENTIMETER: 1e4, tifffile.RESUNIT.INCH: 25400.0}.get(unit)
        if um_per_unit is None:
            return None
        x_per_unit, y_per_unit = page.get_resolution()
        return um_per_unit / x_per_unit, um_per_unit / y_per_unit


def refused(tmp_path, write):
    """The report of refusing the stack that ``write(path, data)`` wrote, and the pixel size its outputs record."""
    path = tmp_path / "in.ome.tif"
    write(path, STACK)
    report = refuse_stack(path, tmp_path / "out", progress=False)
    recorded = {recorded_pixel_um(report.outputs[kind]) for kind in ("fused", "depth")}
    assert len(recorded) == 1, recorded  # the fused image and the depth map agree
    return report, recorded.pop()


def ome_sized(size, unit, **more):
    return lambda path, data: tifffile.imwrite(path, data, metadata={
        "axes": "ZYX", "PhysicalSizeX": size, "PhysicalSizeXUnit": unit, "PhysicalSizeY": size,
        "PhysicalSizeYUnit": unit, **more})


def pixel_size_warnings(report):
    return [w for w in report.warnings if ("pixel" in w or "PhysicalSize" in w) and "too small to align" not in w]


# ---- OME lengths in any of OME's units ----

# (a size, its OME unit, that size in µm): every length of OME's UnitsLength (ome.xsd, 2016-06)
OME_LENGTHS = [
    (2e-31, "Ym", 0.2), (2e-28, "Zm", 0.2), (2e-25, "Em", 0.2), (2e-22, "Pm", 0.2), (2e-19, "Tm", 0.2),
    (2e-16, "Gm", 0.2), (2e-13, "Mm", 0.2), (2e-10, "km", 0.2), (2e-9, "hm", 0.2), (2e-8, "dam", 0.2),
    (2e-7, "m", 0.2), (2e-6, "dm", 0.2), (2e-5, "cm", 0.2), (2e-4, "mm", 0.2), (0.2, "µm", 0.2), (200, "nm", 0.2),
    (2e5, "pm", 0.2), (2e8, "fm", 0.2), (2e11, "am", 0.2), (2e14, "zm", 0.2), (2e17, "ym", 0.2), (2000, "Å", 0.2),
    (0.01, "thou", 0.254), (1e-4, "li", 0.21166667), (1e-5, "in", 0.254), (1e-6, "ft", 0.3048),
    (1e-6, "yd", 0.9144), (1e-10, "mi", 0.1609344), (1e-3, "pt", 0.35277778), (2e-18, "ua", 0.29919574),
    (2e-23, "ly", 0.18921461), (1e-23, "pc", 0.30856776),
]


@pytest.mark.parametrize("size,unit,size_um", OME_LENGTHS, ids=[unit for _, unit, _ in OME_LENGTHS])
def test_every_ome_length_unit_gives_the_pixel_size_in_micrometres(tmp_path, size, unit, size_um, recwarn):
    ome_sized(size, unit)(tmp_path / "in.ome.tif", STACK)
    with open_stack(tmp_path / "in.ome.tif") as stack:
        assert stack.pixel_size_um() == pytest.approx(size_um, rel=1e-6)
    assert not [str(w.message) for w in recwarn]


@pytest.mark.parametrize("size,unit,size_um", [(2000, "Å", 0.2), (1e-5, "in", 0.254), (0.002, "dm", 200.0)])
def test_the_fused_image_and_depth_map_record_the_pixel_size_in_any_ome_unit(tmp_path, size, unit, size_um):
    # Before, a unit outside the reader's table was read as µm: 2000 Å pixels were written as 2000 µm, silently,
    # and 1e-5 in was "1e-05 µm", out of range.
    report, recorded = refused(tmp_path, ome_sized(size, unit))
    assert recorded == pytest.approx((size_um, size_um), rel=1e-6)
    assert not pixel_size_warnings(report)


@pytest.mark.parametrize("unit", ["pixel", "reference frame", "furlong"])
def test_a_pixel_size_in_no_length_unit_is_said_and_not_recorded(tmp_path, unit):
    report, recorded = refused(tmp_path, ome_sized(0.5, unit))
    assert recorded is None
    assert f"{tmp_path / 'in.ome.tif'}: the OME PhysicalSizeX 0.5 is in {unit!r} (PhysicalSizeXUnit), which is not " \
        "a unit of length; the fused image has no pixel size from it" in report.warnings


def test_a_pixel_height_in_no_length_unit_is_said_and_not_recorded(tmp_path):
    write = lambda path, data: tifffile.imwrite(path, data, metadata={  # noqa: E731
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "pixel"})
    report, recorded = refused(tmp_path, write)
    assert recorded is None
    assert any("the OME PhysicalSizeY 0.5 is in 'pixel' (PhysicalSizeYUnit)" in w for w in report.warnings)


# ---- z in OME's units ----

@pytest.mark.parametrize("metadata,z_um", [
    ({"PhysicalSizeZ": 5000, "PhysicalSizeZUnit": "Å"}, [0.0, 0.5, 1.0]),
    ({"PhysicalSizeZ": 0.002, "PhysicalSizeZUnit": "dm"}, [0.0, 200.0, 400.0]),
    ({"Plane": {"PositionZ": [1e-4, 2e-4, 4e-4], "PositionZUnit": ["in"] * 3}}, [2.54, 5.08, 10.16]),
    ({"Plane": {"PositionZ": [1e4, 2e4, 3e4], "PositionZUnit": ["Å"] * 3}}, [1.0, 2.0, 3.0]),
])
def test_z_in_any_ome_length_unit_is_in_micrometres(tmp_path, metadata, z_um, recwarn):
    tifffile.imwrite(tmp_path / "z.ome.tif", STACK, metadata={"axes": "ZYX", **metadata})
    with open_stack(tmp_path / "z.ome.tif") as stack:
        assert stack.z_positions_um == pytest.approx(z_um)
    assert not [str(w.message) for w in recwarn]


def test_a_z_step_in_no_length_unit_is_said_and_the_depth_map_counts_slices(tmp_path):
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, STACK, metadata={"axes": "ZYX", "PhysicalSizeZ": 2, "PhysicalSizeZUnit": "pixel"})
    report = refuse_stack(path, tmp_path / "out", progress=False)
    assert f"{path}: the OME PhysicalSizeZ 2 is in 'pixel' (PhysicalSizeZUnit), which is not a unit of length; the " \
        "depth map takes no z from it" in report.warnings
    with tifffile.TiffFile(report.outputs["depth"]) as tiff:
        assert tiff.imagej_metadata["depth_unit"] == "slice index"


def test_positions_in_the_stage_reference_frame_give_way_to_the_z_step(tmp_path):
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, STACK, metadata={"axes": "ZYX", "PhysicalSizeZ": 2.0, "Plane": {
        "PositionZ": [10, 11, 12], "PositionZUnit": ["reference frame"] * 3}})
    with pytest.warns(UserWarning) as said, open_stack(path) as stack:
        assert stack.z_positions_um == pytest.approx([0.0, 2.0, 4.0])  # not 10, 11, 12 µm
    assert [str(w.message) for w in said] == [
        f"{path}: the OME PositionZ 10 is in 'reference frame' (PositionZUnit), which is not a unit of length; the "
        "depth map takes no z from it"]


# ---- pixels that are not square ----

def test_pixels_that_are_not_square_are_said_and_no_one_size_is_recorded_for_both(tmp_path):
    # Before, a 0.2 x 0.6 µm pixel was recorded as 0.2 µm for both sides, silently: heights measured 3x too short.
    write = lambda path, data: tifffile.imwrite(path, data, metadata={  # noqa: E731
        "axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.6})
    report, recorded = refused(tmp_path, write)
    assert recorded is None
    assert f"{tmp_path / 'in.ome.tif'}: its pixels are 0.2 x 0.6 µm (x by y), not square; the fused image and depth " \
        "map hold one pixel size for both sides, so they are written without one (give them each side's size in " \
        "Fiji: Image > Properties)" in report.warnings


def test_non_square_pixels_in_units_are_compared_in_micrometres(tmp_path):
    write = lambda path, data: tifffile.imwrite(path, data, metadata={  # noqa: E731
        "axes": "ZYX", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.5})
    report, recorded = refused(tmp_path, write)  # 500 nm by 0.5 µm: square
    assert recorded == pytest.approx((0.5, 0.5)) and not pixel_size_warnings(report)


def test_a_pixel_square_but_for_its_calibrations_rounding_keeps_its_size(tmp_path):
    write = lambda path, data: tifffile.imwrite(path, data, metadata={  # noqa: E731
        "axes": "ZYX", "PhysicalSizeX": 0.6500002, "PhysicalSizeY": 0.65})
    report, recorded = refused(tmp_path, write)
    assert recorded == pytest.approx((0.6500002, 0.6500002)) and not pixel_size_warnings(report)


def test_resolution_tags_of_pixels_that_are_not_square_are_said_too(tmp_path):
    path = tmp_path / "tags.tif"
    tifffile.imwrite(path, STACK, photometric="minisblack", resolution=(1e4 / 0.2, 1e4 / 0.6),
                     resolutionunit="CENTIMETER")
    report = refuse_stack(path, tmp_path / "out", progress=False)
    assert any("its pixels are 0.2 x 0.6 µm (x by y), not square" in w for w in report.warnings)
    assert recorded_pixel_um(report.outputs["fused"]) is None


# ---- resolution tags in inches ----

@pytest.mark.parametrize("pixel_um", [0.5, 6.45, 42.0])
def test_resolution_tags_in_inches_give_the_pixel_size(tmp_path, pixel_um):
    # Before, only centimetres (or an ImageJ unit) were read: tags in inches, TIFF's default unit, gave no size.
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, STACK, photometric="minisblack", resolution=(25400 / pixel_um, 25400 / pixel_um),
                     resolutionunit="INCH")
    report = refuse_stack(path, tmp_path / "out", progress=False)
    for kind in ("fused", "depth"):
        assert recorded_pixel_um(report.outputs[kind]) == pytest.approx((pixel_um, pixel_um))
    assert not pixel_size_warnings(report)


@pytest.mark.parametrize("dpi", [1, 72, 96, 150, 300, 350, 600, 1200])
def test_a_documents_dots_per_inch_are_no_pixel_size_and_no_noise(tmp_path, dpi):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, STACK, photometric="minisblack", resolution=(dpi, dpi), resolutionunit="INCH")
    report = refuse_stack(path, tmp_path / "out", progress=False)
    for kind in ("fused", "depth"):
        assert recorded_pixel_um(report.outputs[kind]) is None
    assert not pixel_size_warnings(report)


def test_resolution_tags_without_a_unit_are_in_inches_as_tiff_says(tmp_path):
    path = tmp_path / "no_unit.tif"
    tifffile.imwrite(path, STACK, photometric="minisblack", resolution=(25400 / 0.5, 25400 / 0.5),
                     resolutionunit="INCH", metadata=None)
    data = path.read_bytes()  # (tifffile always writes ResolutionUnit: renumber it as a private tag, as if absent)
    entry = (296).to_bytes(2, "little") + (3).to_bytes(2, "little")
    path.write_bytes(data.replace(entry, (65000).to_bytes(2, "little") + (3).to_bytes(2, "little")))
    with tifffile.TiffFile(path) as tiff:
        assert "ResolutionUnit" not in tiff.pages.first.tags
    report = refuse_stack(path, tmp_path / "out", progress=False)
    assert recorded_pixel_um(report.outputs["fused"]) == pytest.approx((0.5, 0.5))


def test_positions_in_mm_are_whole_micrometres_not_float_noise(tmp_path):
    """1.001 mm read as 1000.9999999999999 µm, in the report and the depth map's positions."""
    path = tmp_path / "mm.ome.tif"
    tifffile.imwrite(path, STACK, metadata={"axes": "ZYX", "Plane": {"PositionZ": [1.001, 1.002, 1.003],
                                                                     "PositionZUnit": ["mm"] * 3}})
    with open_stack(path) as stack:
        assert stack.z_positions_um == [1001.0, 1002.0, 1003.0]
