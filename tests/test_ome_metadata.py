"""The OME-XML that stacks carry, validated against the OME schema with ome-types."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile

from acquisition.profile import load_profile
from acquisition.session import run_profile
from fusion.stack_buffer import StackBuffer
from fusion.readers.tiff import SESSION_PLANE_KEY, pixel_size_um_of
from tests.conftest import REPO_ROOT
from tests.fiji import imagej_calibration, imagej_value_unit
from tests.test_sessions import small


def validated_ome(path) -> ome_types.OME:
    with tifffile.TiffFile(path) as tiff:
        return ome_types.from_xml(tiff.ome_metadata, validate=True)


@pytest.mark.parametrize("name", ["simulated", "simulated-micromanager"])
def test_session_stack_has_relative_times_pixel_size_and_exposure_in_ms(name, tmp_path):
    profile = small(load_profile(REPO_ROOT / "profiles" / f"{name}.yaml"))
    started = time.time()
    outcome = run_profile(profile, tmp_path, progress=False)
    pixels = validated_ome(outcome.folder / "stack.ome.tif").images[0].pixels
    delta_t = [plane.delta_t for plane in pixels.planes]
    assert delta_t[0] == 0 and delta_t == sorted(delta_t) and delta_t[-1] < time.time() - started
    # Each page's own time_s (what a stack cut short by kill -9 keeps) is the same time since the first plane:
    # it was the epoch time (1795820848.85...). Page 0 holds the OME-XML once finalized.
    with tifffile.TiffFile(outcome.folder / "stack.ome.tif") as tiff:
        page_times = [json.loads(page.description)[SESSION_PLANE_KEY]["time_s"] for page in tiff.pages[1:]]
    assert page_times == pytest.approx(delta_t[1:], abs=1e-5) and page_times[0] > 0
    assert pixels.physical_size_x == pixels.physical_size_y == profile.camera.pixel_size_um == 0.65
    assert {p.exposure_time for p in pixels.planes} == {10.0}
    assert {p.exposure_time_unit.value for p in pixels.planes} == {"ms"}
    assert {p.position_z_unit.value for p in pixels.planes} == {"µm"}  # (OME's default is "reference frame")
    for image in ("fused.tif", "depth.tif"):
        with tifffile.TiffFile(outcome.folder / image) as tiff:
            assert pixel_size_um_of(tiff.pages[0]) == pytest.approx(0.65)
            # One description per image: readers disagree on which of two they show (Fiji the last, tifffile the first).
            assert len([tag for tag in tiff.pages[0].tags if tag.name == "ImageDescription"]) == 1


@pytest.mark.parametrize("bits, said", [(12, 12), (16, 16), (8, 8), (0, None)])
def test_session_stack_says_how_many_bits_of_its_samples_are_significant(bits, said, tmp_path):
    """A 12-bit camera's stack (in uint16) did not say so: OME's Pixels SignificantBits (float data: none)."""
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"), z={"bottom": 0, "top": 6, "step": 3})
    noise = profile.camera.noise.model_copy(update={"bit_depth": bits})
    profile = profile.model_copy(update={"camera": profile.camera.model_copy(update={"noise": noise})})
    outcome = run_profile(profile, tmp_path, progress=False)
    assert validated_ome(outcome.folder / "stack.ome.tif").images[0].pixels.significant_bits == said


def test_micromanager_pixel_size_comes_from_the_core(tmp_path):
    """Without pixel_size_um in the profile, the demo configuration's pixel size is used."""
    from acquisition.profile import Profile

    profile = Profile.model_validate({
        "micromanager": {"config": "demo"}, "camera": {"driver": "micromanager", "exposure_ms": 1},
        "focus": {"driver": "micromanager"}, "plan": {"z": {"absolute": [0, 1, 2]}}})
    outcome = run_profile(profile, tmp_path, progress=False)
    assert outcome.completed
    pixels = validated_ome(outcome.folder / "stack.ome.tif").images[0].pixels
    assert pixels.physical_size_x == 1.0  # the demo configuration's 10x objective: 1 µm per pixel


def test_mda_stack_names_its_channel_and_times_from_the_start_of_the_run(tmp_path):
    from tests.test_mda_handler import slide_core

    import useq

    from fusion.mda import StreamingFusionHandler

    sequence = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"absolute": [0, 5, 10]})
    with slide_core(["DAPI", "FITC"]) as (core, _):
        handler = StreamingFusionHandler(tmp_path, pixel_size_um=0.5)
        core.mda.run(sequence, output=handler)
    second = {r["channel"]: r for r in handler.summary["stacks"]}["FITC"]
    pixels = validated_ome(second["outputs"]["stack"]).images[0].pixels
    assert [c.name for c in pixels.channels] == ["FITC"]
    assert pixels.physical_size_x == 0.5 and [p.position_z for p in pixels.planes] == [0, 5, 10]
    assert pixels.planes[0].delta_t > 0  # FITC's stack began after DAPI's: time since the run began


@pytest.mark.parametrize("bits", [12, 10, 11])
def test_an_mda_stack_of_a_12_bit_camera_says_its_significant_bits(tmp_path, bits):
    """A live session's stack said 12 of 16 bits were significant; an MDA's (the real MMCore, its demo camera set to
    12 bits) did not, so Fiji and napari showed a 12-bit image as 16-bit. An 11-bit camera's then said 12: the
    pixel format in the sequence's metadata (Mono12) rounds the bit depth up; the core says it exactly."""
    import useq

    from fusion.mda import StreamingFusionHandler
    from tests.devices_fixtures import small_demo_core

    core = small_demo_core()
    core.setProperty("Camera", "BitDepth", bits)
    handler = StreamingFusionHandler(tmp_path, pixel_size_um=0.5, core=core)
    core.mda.run(useq.MDASequence(z_plan={"range": 4, "step": 2}), output=handler)
    stack = handler.summary["stacks"][0]["outputs"]["stack"]
    pixels = validated_ome(stack).images[0].pixels
    assert pixels.type.value == "uint16" and pixels.significant_bits == bits  # (its PixelType: 16bit)


def test_unknown_pixel_size_is_left_out_and_a_bad_one_refused(tmp_path):
    buffer = StackBuffer(tmp_path / "s.ome.tif")
    for z in range(3):
        buffer.append(np.zeros((8, 8), np.uint8), z, time.time(), None)
    buffer.finalize({}, "um")
    pixels = validated_ome(buffer.path).images[0].pixels
    assert pixels.physical_size_x is None and pixels.channels[0].name is None
    with pytest.raises(ValueError, match="pixel size must be positive, got -1"):
        StackBuffer(tmp_path / "t.ome.tif", pixel_size_um=-1)


@pytest.mark.parametrize("write,pixel_size_um", [
    # OME (a live session's stack, Micro-Manager's): PhysicalSizeX, in its unit
    (lambda path, data: tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.65,
                                                                         "PhysicalSizeY": 0.65}), 0.65),
    (lambda path, data: tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"}), 0.25),
    # ImageJ (Fiji's "Save As TIFF"): resolution in pixels per unit, the unit in its description
    (lambda path, data: tifffile.imwrite(path, data, imagej=True, resolution=(2, 2),
                                         metadata={"axes": "ZYX", "unit": "um", "spacing": 3.0}), 0.5),
    (lambda path, data: tifffile.imwrite(path, data, photometric="minisblack"), None),   # nothing said: nothing made up
])
def test_a_refused_stack_keeps_its_pixel_size(tmp_path, write, pixel_size_um):
    from fusion.refuse import refuse_stack

    data = np.stack([np.full((48, 64), 30 * k, np.uint8) for k in range(3)])
    data[:, ::7, ::5] = 255  # some detail
    write(tmp_path / "cal.tif", data)
    report = refuse_stack(tmp_path / "cal.tif", tmp_path / "out", progress=False)
    for kind in ("fused", "depth"):
        with tifffile.TiffFile(report.outputs[kind]) as tiff:
            assert pixel_size_um_of(tiff.pages[0]) == pytest.approx(pixel_size_um) if pixel_size_um else \
                pixel_size_um_of(tiff.pages[0]) is None


def test_a_pixel_size_that_is_not_a_number_is_a_warning_not_a_failed_refusion(tmp_path):
    from fusion.refuse import refuse_stack

    data = np.stack([np.full((48, 64), 30 * k, np.uint8) for k in range(3)])
    data[:, ::7, ::5] = 255
    path = tmp_path / "odd.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5})
    with tifffile.TiffFile(path, mode="r+") as tiff:  # as a writer with a bug would leave it
        tiff.pages[0].tags["ImageDescription"].overwrite(tiff.ome_metadata.replace('PhysicalSizeX="0.5"',
                                                                                   'PhysicalSizeX="abc"'))
    report = refuse_stack(path, tmp_path / "out", progress=False)
    assert any("the OME PhysicalSizeX 'abc' is not a number" in w for w in report.warnings)
    with tifffile.TiffFile(report.outputs["fused"]) as tiff:
        assert pixel_size_um_of(tiff.pages[0]) is None


@pytest.mark.parametrize("pixel_size_um", [25.0, 2.5, 0.65])
def test_fiji_shows_the_fused_and_depth_pixel_size_in_micrometres(tmp_path, pixel_size_um):
    """Fiji reads resolution tags in centimetres as cm, turning them into µm only for pixels up to 10 µm, but for
    any size where an ImageJ description says ``unit=um``: our images have both, and plain readers (tifffile, PIL),
    which know no ImageJ description, read the size from the tags in cm (a unit of NONE gave them none)."""
    from PIL import Image

    from fusion.readers import open_stack
    from fusion.refuse import refuse_stack

    data = np.stack([np.full((48, 64), 30 * k, np.uint8) for k in range(3)])
    data[:, ::7, ::5] = 255
    tifffile.imwrite(tmp_path / "cal.tif", data, imagej=True, resolution=(1 / pixel_size_um, 1 / pixel_size_um),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.0})
    report = refuse_stack(tmp_path / "cal.tif", tmp_path / "out", progress=False)
    for kind in ("fused", "depth"):
        path = Path(report.outputs[kind])
        width, unit = imagej_calibration(path)
        assert unit == "µm" and width == pytest.approx(pixel_size_um)
        with tifffile.TiffFile(path) as tiff:  # and our own readers (napari's layers, a refusion of it) agree
            assert pixel_size_um_of(tiff.pages.first) == pytest.approx(pixel_size_um)
            assert tiff.imagej_metadata["unit"] == "um"
            page = tiff.pages.first  # plain tags: pixels per cm
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            assert 1e4 / page.get_resolution()[0] == pytest.approx(pixel_size_um)
        with Image.open(path) as image:  # (PIL gives centimetre tags in dots per inch)
            assert 25400 / image.info["dpi"][0] == pytest.approx(pixel_size_um)
        with open_stack(path) as again:
            assert again.pixel_size_um() == pytest.approx(pixel_size_um)
    with tifffile.TiffFile(report.outputs["depth"]) as tiff:  # the depth map's own unit stays readable
        assert tiff.imagej_metadata["depth_unit"] == "um"


@pytest.mark.parametrize("unit,shown", [("um", "µm"), ("dpt", "dpt"), ("mA", "mA"), ("slice index", None)])
def test_fiji_shows_depth_values_in_the_depth_unit(tmp_path, unit, shown):
    """ImageJ's ``vunit``: Fiji shows a depth map's values with their unit (a slice index has none to show)."""
    from fusion.outputs import write_depth_tiff
    from fusion.readers.tiff import depth_unit_of

    write_depth_tiff(tmp_path / "depth.tif", np.zeros((48, 64), np.float32), unit, pixel_size_um=0.5)
    assert imagej_value_unit(tmp_path / "depth.tif") == shown
    assert imagej_calibration(tmp_path / "depth.tif") == pytest.approx((0.5, "µm"))
    with tifffile.TiffFile(tmp_path / "depth.tif") as tiff:  # our reader's unit, as before
        assert depth_unit_of(tiff.pages.first) == unit and tiff.imagej_metadata["depth_unit"] == unit


@pytest.mark.parametrize("kind", ["fused", "depth"])
def test_our_reader_reads_the_pixel_size_of_images_written_before_with_resolution_unit_none(tmp_path, kind):
    """Before, the tags were in pixels per µm with ResolutionUnit NONE and ``unit=um`` in the ImageJ description."""
    from fusion.readers import open_stack

    image = np.zeros((48, 64), np.float32 if kind == "depth" else np.uint16)
    properties = {"depth_unit": "um"} if kind == "depth" else {}
    description = tifffile.imagej_description(image.shape, axes="YX", unit="um", **properties)
    tifffile.imwrite(tmp_path / f"old.{kind}.tif", image, resolution=(1 / 0.65, 1 / 0.65), resolutionunit="NONE",
                     description=description, metadata=None)
    with tifffile.TiffFile(tmp_path / f"old.{kind}.tif") as tiff:
        assert pixel_size_um_of(tiff.pages.first) == pytest.approx(0.65)
    with open_stack(tmp_path / f"old.{kind}.tif") as again:
        assert again.pixel_size_um() == pytest.approx(0.65)
    assert imagej_calibration(tmp_path / f"old.{kind}.tif") == pytest.approx((0.65, "µm"))  # (Fiji read them too)


@pytest.mark.parametrize("pixel_size_um,imagej_description,shown", [
    (5.0, False, (5.0, "µm")),      # tags in cm alone: up to 0.001 cm (10 µm) Fiji shows µm ...
    (10.0, False, (10.0, "µm")),
    (25.0, False, (0.0025, "cm")),  # ... above, cm
    (5.0, True, (0.0005, "cm")),    # an ImageJ description that says cm: µm only up to 1e-4 cm (1 µm)
    (0.5, True, (0.5, "µm")),
])
def test_fiji_model_shows_centimetre_tags_in_micrometres_up_to_imagejs_threshold(tmp_path, pixel_size_um,
                                                                                   imagej_description, shown):
    """Recent ImageJ's FileOpener.setCalibration: threshold 0.001 cm, 1e-4 cm where the description starts with
    "ImageJ" (older releases, and this model before, had 1e-4 cm for every file)."""
    per_cm = 1e4 / pixel_size_um
    if imagej_description:
        tifffile.imwrite(tmp_path / "cal.tif", np.zeros((8, 8), np.uint8), resolution=(per_cm, per_cm),
                         resolutionunit="CENTIMETER", metadata=None,
                         description=tifffile.imagej_description((8, 8), axes="YX", unit="cm"))
    else:
        tifffile.imwrite(tmp_path / "cal.tif", np.zeros((8, 8), np.uint8), resolution=(per_cm, per_cm),
                         resolutionunit="CENTIMETER", metadata=None)
    width, unit = imagej_calibration(tmp_path / "cal.tif")
    assert (width, unit) == (pytest.approx(shown[0]), shown[1])


def test_a_stack_carries_its_pixel_size_for_bio_formats_and_for_fijis_own_tiff_opener(tmp_path):
    """Bio-Formats reads the OME PhysicalSizeX in µm; Fiji's File > Open (ImageJ's TIFF reader, which skips OME-XML)
    reads the resolution tags of the pages, before and after the OME description is written (a killed session)."""
    buffer = StackBuffer(tmp_path / "s.ome.tif", pixel_size_um=2.5)
    for z in range(3):
        buffer.append(np.zeros((8, 8), np.uint16), z, time.time(), None)
    lengths_um = {"µm": 1.0, "cm": 1e4}

    def imagej_pixel_um():
        width, unit = imagej_calibration(buffer.path) or (None, None)
        assert unit in lengths_um, f"Fiji's TIFF opener sees no length: {width} {unit!r}"
        return width * lengths_um[unit]

    assert imagej_pixel_um() == pytest.approx(2.5)
    buffer.finalize({}, "um")
    assert imagej_pixel_um() == pytest.approx(2.5)
    pixels = validated_ome(buffer.path).images[0].pixels
    assert pixels.physical_size_x == 2.5 and pixels.physical_size_x_unit.value == "µm"


def test_an_mda_session_stack_of_an_11_bit_camera_says_11_significant_bits(tmp_path):
    """An MDA session's stacks said the bits of the pixel format pymmcore-plus puts in the sequence's metadata, which
    rounds the bit depth up: the demo camera at 11 bits said 12. The session gives the handler its core."""
    from acquisition.mda_session import run_mda_profile
    from acquisition.profile import Profile

    profile = Profile.model_validate({
        "micromanager": {"config": "demo",
                         "properties": {"Camera": {"BitDepth": 11, "OnCameraCCDXSize": 128, "OnCameraCCDYSize": 96}}},
        "camera": {"driver": "micromanager", "exposure_ms": 1, "pixel_size_um": 0.5},
        "focus": {"driver": "micromanager"}, "mda": {"z_plan": {"range": 4, "step": 2}}})
    outcome = run_mda_profile(profile, tmp_path, progress=False)
    stack, = (record["outputs"]["stack"] for record in outcome.report.stacks)
    assert validated_ome(stack).images[0].pixels.significant_bits == 11
