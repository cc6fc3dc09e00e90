"""Saved-stack readers: every layout the issue names, and a clear error for every bad input."""

import warnings

import imageio.v3 as imageio
import numpy as np
import pytest
import tifffile

from fusion.errors import (EmptyStackError, InvalidPixelsError, SliceMismatchError, StackLayoutError,
                           StackNotFoundError, UnreadableStackError)
from fusion.readers import natural_key, open_stack

RNG = np.random.default_rng(7)
ZYX = RNG.integers(0, 4096, (5, 24, 32)).astype(np.uint16)
ZYXS = RNG.integers(0, 256, (4, 24, 32, 3)).astype(np.uint8)


def read_all(path):
    with open_stack(path) as stack:
        slices = [pixels for pixels, _ in stack]
        return np.stack(slices), stack.z_positions_um, stack.name


def test_plain_multipage_tiff(tmp_path):
    path = tmp_path / "plain.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in ZYX:
            writer.write(plane, metadata=None)
    data, z_um, name = read_all(path)
    np.testing.assert_array_equal(data, ZYX)
    assert z_um is None and name == "plain"


def test_ome_tiff_zyxs_with_z_positions(tmp_path):
    path = tmp_path / "rgb.ome.tif"
    z_um = [10.0, 12.5, 15.0, 17.5]
    tifffile.imwrite(path, ZYXS, photometric="rgb", metadata={"axes": "ZYXS", "Plane": {"PositionZ": z_um}})
    data, read_z, name = read_all(path)
    np.testing.assert_array_equal(data, ZYXS)
    assert read_z == z_um and name == "rgb"


@pytest.mark.parametrize("axes", ["ZCYX", "CZYX"])
def test_ome_tiff_with_separate_channel_planes(tmp_path, axes):
    path = tmp_path / "planar.ome.tif"
    stored = np.moveaxis(ZYXS, 3, 1) if axes == "ZCYX" else np.moveaxis(ZYXS, 3, 0)
    tifffile.imwrite(path, np.ascontiguousarray(stored), metadata={"axes": axes, "PhysicalSizeZ": 2.0})
    data, z_um, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYXS)
    assert z_um == [0.0, 2.0, 4.0, 6.0]


def test_imagej_hyperstack_with_spacing(tmp_path):
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, ZYX, imagej=True, metadata={"axes": "ZYX", "spacing": 1.5})
    data, z_um, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYX)
    assert z_um == [0.0, 1.5, 3.0, 4.5, 6.0]


@pytest.mark.parametrize("unit,spacing,per_unit,step_um,pixel_um", [
    ("nm", 2500, 1 / 500, 2.5, 0.5),    # Fiji's unit for super-resolution and EM stacks
    ("mm", 0.1, 1 / 0.5, 100.0, 500.0),  # a macro rig's
    ("micron", 2.0, 2.0, 2.0, 0.5),
])
def test_imagej_spacing_and_pixel_size_in_other_units_become_micrometres(tmp_path, unit, spacing, per_unit, step_um,
                                                                         pixel_um):
    path = tmp_path / "fiji_units.tif"
    tifffile.imwrite(path, ZYX, imagej=True, resolution=(per_unit, per_unit),
                     metadata={"axes": "ZYX", "spacing": spacing, "unit": unit})
    with open_stack(path) as stack:
        assert stack.z_positions_um == pytest.approx([k * step_um for k in range(5)])
        assert stack.pixel_size_um() == pytest.approx(pixel_um)


def test_a_tiff_of_several_series_says_that_only_the_first_is_fused(tmp_path):
    path = tmp_path / "two_positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tiff:
        tiff.write(ZYX, metadata={"axes": "ZYX"})
        tiff.write(ZYX[:3], metadata={"axes": "ZYX"})
    with pytest.warns(UserWarning, match=r"holds 2 image series \(positions or time points\); only the first "
                                         r"\(5 pages of \d+x\d+ \w+\) is fused"), open_stack(path) as stack:
        assert stack.n_slices == 5


def test_pages_appended_one_at_a_time_are_one_stack(tmp_path):
    path = tmp_path / "appended.tif"
    for plane in ZYXS:  # as acquisition scripts write a stack: tifffile makes each page a series of its own
        tifffile.imwrite(path, plane, photometric="rgb", append=True)
    data, _, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYXS)


def test_pages_appended_one_at_a_time_and_cut_short_give_the_complete_ones(tmp_path):
    path = tmp_path / "killed.tif"
    for plane in ZYX:
        tifffile.imwrite(path, plane, append=True)
    path.write_bytes(path.read_bytes()[:-600])  # a script killed while writing its last page
    with pytest.warns(UserWarning, match="the file ends inside the last slice.*using the 4 complete slices"):
        data, _, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYX[:4])


@pytest.mark.parametrize("photometric,thumbnail", [("minisblack", np.zeros((6, 8), np.uint16)),
                                                   ("rgb", np.zeros((6, 8, 3), np.uint8))])
def test_a_thumbnail_page_is_no_slice(tmp_path, recwarn, photometric, thumbnail):
    path = tmp_path / "with_preview.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(ZYX, photometric="minisblack", metadata=None)
        writer.write(thumbnail, subfiletype=1, photometric=photometric, metadata=None)  # reduced resolution
    data, _, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYX)
    assert not [w for w in recwarn if "series" in str(w.message)]


@pytest.mark.parametrize("second", [ZYX[::-1], ZYX[:4, :12, :16]], ids=["alike", "smaller"])
def test_stacks_appended_one_after_another_fuse_the_first_and_say_so(tmp_path, second):
    path = tmp_path / "two_times.tif"
    tifffile.imwrite(path, ZYX, append=True)
    tifffile.imwrite(path, second, photometric="minisblack", append=True)
    with pytest.warns(UserWarning, match=r"holds 2 image series \(positions or time points\); only the first"):
        data, _, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYX)


@pytest.mark.parametrize("odd_page", [ZYX[2, :10, :12], ZYX[2].astype(np.uint8), np.stack([ZYX[2]] * 3, axis=-1)],
                         ids=["smaller", "8-bit", "rgb"])
def test_a_page_unlike_the_others_is_named_not_dropped(tmp_path, odd_page):
    path = tmp_path / "odd.tif"
    with tifffile.TiffWriter(path) as writer:  # a plain multi-page file, as PIL or a camera's software writes one
        for index, plane in enumerate(ZYX):
            writer.write(odd_page if index == 2 else plane, metadata=None)
    with pytest.raises(SliceMismatchError, match="odd.tif: page 2 is .* but page 0 is 24x32 uint16"):
        open_stack(path)


@pytest.mark.parametrize("bad_z", ["a", None, True])
def test_a_session_stacks_page_records_with_a_z_that_is_no_number_leave_the_depth_in_slice_index(tmp_path, bad_z):
    """(Text or null gave an 'unexpected ValueError'; a bool was read as 1 or 0.)"""
    import json

    from fusion.readers.tiff import SESSION_PLANE_KEY

    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as writer:
        for k, plane in enumerate(ZYX):
            record = {"z": bad_z if k == 2 else 3.0 * k, "unit": "um", "time_s": 0.1 * k}
            writer.write(plane, description=json.dumps({SESSION_PLANE_KEY: record}), metadata=None)
    with pytest.warns(UserWarning, match="the z recorded in its pages is not a number on every page"):
        data, z_um, _ = read_all(path)
    np.testing.assert_array_equal(data, ZYX)
    assert z_um is None


def test_imagej_z_unit_rules_the_spacing_where_it_differs_from_x_and_y(tmp_path):
    path = tmp_path / "fiji_zunit.tif"
    tifffile.imwrite(path, ZYX, imagej=True, metadata={"axes": "ZYX", "spacing": 500, "unit": "micron", "zunit": "nm"})
    with open_stack(path) as stack:
        assert stack.z_positions_um == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


def test_imagej_spacing_in_pixels_is_not_taken_for_micrometres(tmp_path):
    path = tmp_path / "fiji_pixels.tif"
    tifffile.imwrite(path, ZYX, imagej=True, metadata={"axes": "ZYX", "spacing": 1.0, "unit": "pixel"})
    with pytest.warns(UserWarning, match="spacing is in 'pixel', not a length unit"), open_stack(path) as stack:
        assert stack.z_positions_um is None


@pytest.mark.parametrize("metadata,message", [
    ({"axes": "ZYX", "PhysicalSizeZ": 1.0, "Plane": {"PositionZ": [12.5] * 5}},
     "every slice the focus position 12.5 um"),
    ({"axes": "ZYX", "PhysicalSizeZ": 0.0}, "every slice the focus position 0 um"),
    ({"axes": "ZYX", "Plane": {"PositionZ": [0.0, 1.0, float("nan"), 3.0, 4.0]}},
     "a focus position of nan for 1 of 5 slices"),
    # Accepted in silence: a depth map of 0 and 1 only.
    ({"axes": "ZYX", "Plane": {"PositionZ": [0.0, 0.0, 0.0, 1.0, 1.0]}},
     r"several slices one focus position \(slices 0-2 share 0 um; slices 3-4 share 1 um\)"),
    # numpy's "overflow encountered in cast" and a depth map of NaN everywhere.
    ({"axes": "ZYX", "Plane": {"PositionZ": [0.0, 1e300, 2.0, 3.0, 4.0]}},
     r"a focus position of 1e\+300 um for 1 of 5 slices, beyond any focus drive's travel \(±1e\+06\)"),
    # A depth map of 0 everywhere, and of 10000 everywhere: its float32 cannot tell them apart.
    ({"axes": "ZYX", "Plane": {"PositionZ": [k * 1e-300 for k in range(5)]}},
     r"the file's slices' z \(0, 1e-300, 2e-300, ... µm: a step of 1e-300 µm\) cannot be told apart in the depth map, "
     r"which holds z as float32 \(about 7 significant digits\)"),
    ({"axes": "ZYX", "Plane": {"PositionZ": [1e4 + k * 1e-4 for k in range(5)]}},
     r"the file's slices' z \(10000, 10000.0001, 10000.0002, ... µm: a step of 0.0001 µm\) cannot be told apart in "
     r"the depth map, which holds z as float32 \(about 7 significant digits\)"),
])
def test_focus_positions_that_cannot_place_the_slices_are_dropped_with_a_warning(tmp_path, metadata, message):
    """A depth map from them would be one value everywhere (or undefined): it counts slices instead."""
    path = tmp_path / "bad_z.ome.tif"
    tifffile.imwrite(path, ZYX, metadata=metadata)
    with open_stack(path) as stack, pytest.warns(UserWarning, match=f"{message}; the depth map counts slices instead"):
        assert stack.usable_focus_positions() == (None, "um")


def test_one_slice_with_a_position_of_nan_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "one.ome.tif"
    tifffile.imwrite(path, ZYX[:1], metadata={"axes": "ZYX", "Plane": {"PositionZ": [float("nan")]}})
    with open_stack(path) as stack, pytest.warns(UserWarning, match="a focus position of nan for 1 of 1 slices"):
        assert stack.usable_focus_positions() == (None, "um")


def test_imagej_spacing_of_nan_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "fiji_nan.tif"
    tifffile.imwrite(path, ZYX, imagej=True, metadata={"axes": "ZYX", "spacing": float("nan")})
    with open_stack(path) as stack, pytest.warns(UserWarning, match="a focus position of nan for 5 of 5 slices"):
        assert stack.usable_focus_positions() == (None, "um")


def test_micromanager_ome_tiff_dataset_folder(tmp_path):
    dataset = tmp_path / "scan_1"
    dataset.mkdir()
    z_um = [100.0, 101.0, 102.0, 103.0, 104.0]
    tifffile.imwrite(dataset / "scan_1_MMStack_Pos0.ome.tif", ZYX,
                     metadata={"axes": "ZYX", "Plane": {"PositionZ": z_um}})
    (dataset / "DisplaySettings.json").write_text("{}")
    data, read_z, name = read_all(dataset)
    np.testing.assert_array_equal(data, ZYX)
    assert read_z == z_um and name == "scan_1"


def test_ndtiff_dataset_as_pycromanager_writes_it(tmp_path):
    from ndtiff import NDTiffDataset

    # ndtiff 3.1 reads a file's header back before flushing it: frames under 8 kB fail there.
    frames = RNG.integers(0, 4096, (5, 96, 128)).astype(np.uint16)
    folder = tmp_path / "acq_1"
    writer = NDTiffDataset(str(folder), summary_metadata={}, writable=True)
    for index, plane in enumerate(frames):
        writer.put_image({"z": index}, plane, {"ZPosition_um_Intended": 50.0 + 0.5 * index, "PixelSizeUm": 0.325})
    writer.finish()
    writer.close()
    data, z_um, _ = read_all(folder)
    np.testing.assert_array_equal(data, frames)
    assert z_um == [50.0, 50.5, 51.0, 51.5, 52.0]
    with open_stack(folder) as stack:
        assert stack.pixel_size_um() == 0.325  # the fused image keeps it


def write_split_micromanager_dataset(folder):
    """A Micro-Manager OME-TIFF dataset whose 6 planes are split over two files, 3 each, as MM splits them at 4 GB; each
    file's OME metadata names both by UUID."""
    planes = RNG.integers(0, 4096, (6, 24, 32)).astype(np.uint16)
    names = ("exp_MMStack_Pos0.ome.tif", "exp_MMStack_Pos0_1.ome.tif")
    uuids = [f"urn:uuid:{digit * 8}-{digit * 4}-{digit * 4}-{digit * 4}-{digit * 12}" for digit in "12"]
    tiff_data = "".join(f'<TiffData FirstZ="{3 * i}" FirstC="0" FirstT="0" IFD="0" PlaneCount="3"><UUID '
                        f'FileName="{name}">{uuid}</UUID></TiffData>'
                        for i, (name, uuid) in enumerate(zip(names, uuids)))
    folder.mkdir()
    for i, (name, uuid) in enumerate(zip(names, uuids)):
        ome = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
               f'UUID="{uuid}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
               'SizeX="32" SizeY="24" SizeZ="6" SizeC="1" SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
               f'{tiff_data}</Pixels></Image></OME>')
        with tifffile.TiffWriter(folder / name) as writer:
            for index in range(3 * i, 3 * i + 3):
                writer.write(planes[index], description=ome if index == 3 * i else None, metadata=None,
                             contiguous=False)
    return planes, names


def test_a_micromanager_dataset_split_over_two_files_reads_without_warnings(tmp_path, recwarn):
    # Its second file's slices each said "<tifffile.TiffPage 0 @8> reading array from closed file" (stderr and the
    # report's warnings).
    planes, _ = write_split_micromanager_dataset(tmp_path / "exp")
    data, _, name = read_all(tmp_path / "exp")
    np.testing.assert_array_equal(data, planes)
    assert name == "exp" and [str(w.message) for w in recwarn] == []


def test_a_micromanager_dataset_missing_one_of_its_files_names_it(tmp_path):
    _, names = write_split_micromanager_dataset(tmp_path / "exp")
    (tmp_path / "exp" / names[1]).unlink()
    with open_stack(tmp_path / "exp") as stack, pytest.raises(
            UnreadableStackError, match=f"page 3 is missing: it is in another file of the dataset, and {names[1]}, "
                                        "which its OME metadata names, is not there: copy the whole dataset folder"):
        for _ in stack:
            pass


def write_ndtiff(folder, metadata=lambda index: {"ZPosition_um_Intended": 50.0 + 0.5 * index}):
    """An NDTiff dataset of 5 frames of 96 x 128 (ndtiff 3.1 fails on frames under 8 kB), as pycromanager writes it."""
    from ndtiff import NDTiffDataset

    frames = RNG.integers(0, 4096, (5, 96, 128)).astype(np.uint16)
    writer = NDTiffDataset(str(folder), summary_metadata={}, writable=True)
    for index, plane in enumerate(frames):
        writer.put_image({"z": index}, plane, metadata(index))
    writer.finish()
    writer.close()
    return frames


@pytest.mark.parametrize("metadata,said", [
    # 'abc' failed the stack: "unexpected ValueError: could not convert string to float: 'abc'".
    (lambda index: {"ZPosition_um_Intended": "abc" if index == 2 else index},
     r"image at {'z': 2} gives ZPosition_um_Intended 'abc', not a number"),
    # One image without a z gave a depth map in slice indices without a word.
    (lambda index: {} if index == 3 else {"ZPosition_um": index},
     r"image at {'z': 3} has no z position \(ZPosition_um_Intended, ZPosition_um, ZPositionUm, Z-um\)"),
])
def test_an_ndtiff_image_whose_z_is_not_a_number_or_missing_counts_slices_with_a_warning(tmp_path, metadata, said):
    folder = tmp_path / "acq_1"
    frames = write_ndtiff(folder, metadata)
    with pytest.warns(UserWarning, match=f"^{folder}: {said}; the depth map counts slices instead$"):
        data, z_um, _ = read_all(folder)
    assert z_um is None
    np.testing.assert_array_equal(data, frames)


def test_an_ndtiff_dataset_cut_short_is_fused_from_its_complete_images_with_a_warning(tmp_path):
    # It failed the stack: "cannot read image at {'z': 3}: ValueError: cannot reshape array of size 0", where a TIFF
    # cut short keeps its complete slices.
    folder = tmp_path / "acq_1"
    frames = write_ndtiff(folder)
    data_file = next(folder.glob("*.tif"))
    with open(data_file, "r+b") as handle:
        handle.truncate(data_file.stat().st_size - 30_000)  # into the 4th image's pixels
    with pytest.warns(UserWarning, match=rf"^{folder}: 2 of its 5 images are cut short \(image at {{'z': 3}}, image "
                                         r"at {'z': 4}\): their file ends before them .*; using the 3 complete slices"):
        data, z_um, _ = read_all(folder)
    np.testing.assert_array_equal(data, frames[:3])
    assert z_um == [50.0, 50.5, 51.0]


def test_an_ndtiff_dataset_missing_its_data_file_names_it(tmp_path):
    folder = tmp_path / "acq_1"
    write_ndtiff(folder)
    data_file = next(folder.glob("*.tif"))
    data_file.unlink()
    with pytest.raises(UnreadableStackError, match=f"^{folder}: {data_file.name}, which holds image at {{'z': 0}} "
                                                   r"\(its NDTiff.index says\), is missing"):
        open_stack(folder)


def test_folder_of_images_in_natural_order(tmp_path):
    for index in (1, 2, 10, 11, 3):
        imageio.imwrite(tmp_path / f"slice_{index}.png", np.full((6, 8, 3), index, np.uint8))
    (tmp_path / "LICENSE").write_text("MIT")
    data, z_um, name = read_all(tmp_path)
    assert [int(plane[0, 0, 0]) for plane in data] == [1, 2, 3, 10, 11]
    assert z_um is None and name == tmp_path.name


def test_the_first_slice_read_for_the_stacks_format_is_not_decoded_again(tmp_path, monkeypatch):
    for index in range(3):
        imageio.imwrite(tmp_path / f"slice_{index}.png", np.full((6, 8, 3), index + 1, np.uint8))
    with open_stack(tmp_path) as stack:
        decoded = []
        read = stack._read
        monkeypatch.setattr(stack, "_read", lambda index: decoded.append(index) or read(index))
        assert stack.first_slice_format() == ((6, 8, 3), np.dtype(np.uint8))
        first = stack.read_slice(0)
        again = stack.read_slice(0)  # (handed over once: a later read decodes afresh)
    assert decoded == [0, 0] and first is not again
    assert np.array_equal(first, again) and int(first[0, 0, 0]) == 1


def test_a_folder_of_calibrated_tiffs_keeps_their_pixel_size(tmp_path):
    """Fiji's "Image Sequence" export: one ImageJ TIFF per slice, 0.5 µm pixels (2 per micron)."""
    from fusion.readers.tiff import pixel_size_um_of
    from fusion.refuse import refuse_stack

    for index in range(3):
        plane = np.full((48, 64), 40 * index, np.uint8)
        plane[::5, ::7] = 255
        tifffile.imwrite(tmp_path / f"slice_{index:04d}.tif", plane, imagej=True, resolution=(2, 2),
                         metadata={"unit": "micron"})
    with open_stack(tmp_path) as stack:
        assert stack.pixel_size_um() == pytest.approx(0.5)
    report = refuse_stack(tmp_path, tmp_path / "out", progress=False)
    with tifffile.TiffFile(report.outputs["fused"]) as fused:
        assert pixel_size_um_of(fused.pages[0]) == pytest.approx(0.5)


def test_a_folder_refused_into_itself_is_refused_again_from_its_slices_alone(tmp_path):
    from fusion.refuse import refuse_stack

    for index in range(4):
        imageio.imwrite(tmp_path / f"slice_{index}.png", np.full((32, 40, 3), 40 * index, np.uint8))
    for _ in range(2):  # the second time the folder also holds the first run's fused and depth images
        report = refuse_stack(tmp_path, tmp_path, progress=False)
        assert report.n_slices == 4
        # The depth map counts slices: the report says which file each one is.
        assert report.slice_files == [f"slice_{index}.png" for index in range(4)]
    assert sorted(p.name for p in tmp_path.glob(f"{tmp_path.name}.*")) == \
        sorted(f"{tmp_path.name}.{kind}" for kind in ("depth.tif", "fused.tif", "json"))


def test_natural_key_orders_numbers_by_value(shared_data):
    files = sorted((shared_data / "scorpion-microscope").glob("*.png"), key=natural_key)
    assert [f.stem.rsplit("_", 1)[1] for f in files[:3]] == ["1", "2", "3"]


def test_readers_stream_one_slice_at_a_time(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((40, 256, 256), np.uint16), metadata={"axes": "ZYX"})
    import tracemalloc

    with open_stack(path) as stack:
        tracemalloc.start()
        for _ in stack:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * 256 * 256 * 2  # a few slices' worth, not 40


# ---- bad input: each a clear error naming the file ----

def test_missing_path(tmp_path):
    with pytest.raises(StackNotFoundError, match="nowhere.tif: no such file"):
        open_stack(tmp_path / "nowhere.tif")


def test_not_an_image(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(UnreadableStackError, match="notes.txt: not an image stack"):
        open_stack(notes)


def test_garbage_with_a_tiff_name(tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(UnreadableStackError, match="fake.tif: not a readable TIFF"):
        open_stack(fake)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.97])
def test_truncated_tiff(tmp_path, keep_fraction):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, ZYX, metadata={"axes": "ZYX"})
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep_fraction)])
    with pytest.raises((UnreadableStackError, EmptyStackError), match="cut.tif: .*(truncated|missing|readable)"):
        read_all(cut)


def test_corrupt_image_in_a_folder_names_the_image(tmp_path):
    imageio.imwrite(tmp_path / "a1.png", np.zeros((6, 8), np.uint8))
    (tmp_path / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UnreadableStackError, match="a2.png") as caught:
        read_all(tmp_path)
    assert "\n" not in str(caught.value) and "pip install" not in str(caught.value)  # imageio's plugin hint


@pytest.mark.parametrize("content,reason", [(b"", "the file is empty: 0 bytes"),
                                            (b"a text file", "no decoder reads it: damaged, or not the PNG image")])
def test_an_empty_or_mislabelled_image_in_a_folder_says_which_in_one_line(tmp_path, content, reason):
    imageio.imwrite(tmp_path / "a1.png", np.zeros((6, 8), np.uint8))
    (tmp_path / "a2.png").write_bytes(content)
    with pytest.raises(UnreadableStackError, match=f"a2.png is not a readable image \\({reason}"):
        read_all(tmp_path)


def test_three_mono_planes_stored_as_planar_rgb_are_named(tmp_path):
    # What tifffile.imwrite(path, array of shape (3, H, W)) wrote before 2025: one planar RGB image.
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((3, 32, 40), np.uint8), photometric="rgb",
                     planarconfig="separate")
    expected = (r"three.tif: read as one colour image of 3 planes \(planar RGB\), not a stack; if its planes are "
                r"3 slices, save them with photometric='minisblack'")
    with pytest.warns(UserWarning, match=expected), open_stack(tmp_path / "three.tif") as stack:
        assert stack.n_slices == 1


def test_empty_folder(tmp_path):
    (tmp_path / "README.md").write_text("no images here")
    with pytest.raises(EmptyStackError, match="no image files"):
        open_stack(tmp_path)


def test_a_folder_of_slice_folders_says_how_to_refuse_each_of_them(tmp_path):
    """A folder of sessions or of slice folders holds no slices itself: the error says to give them all."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "z0.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "notes").mkdir()
    with pytest.raises(EmptyStackError, match=r"no image files .* it holds 2 folders of stacks or slices \(e.g. a\): "
                                              r"to refuse each, give them all, e.g. --refuse .*/\*"):
        open_stack(tmp_path)
    with pytest.raises(EmptyStackError, match=r"in this folder$"):  # no hint where no folder holds slices
        open_stack(tmp_path / "notes")


def test_ndtiff_dataset_with_zero_images(tmp_path):
    folder = tmp_path / "empty_acq"
    folder.mkdir()
    (folder / "NDTiff.index").write_bytes(b"")
    with pytest.raises((EmptyStackError, UnreadableStackError), match="empty_acq"):
        open_stack(folder)


def test_slices_of_different_shapes(tmp_path):
    imageio.imwrite(tmp_path / "s1.png", np.zeros((6, 8), np.uint8))
    imageio.imwrite(tmp_path / "s2.png", np.zeros((6, 9), np.uint8))
    with pytest.raises(SliceMismatchError, match="s2.png is 6x9 uint8 but s1.png is 6x8 uint8"):
        read_all(tmp_path)


def test_slices_of_different_dtypes(tmp_path):
    tifffile.imwrite(tmp_path / "s1.tif", np.zeros((6, 8), np.uint8))
    tifffile.imwrite(tmp_path / "s2.tif", np.zeros((6, 8), np.uint16))
    with pytest.raises(SliceMismatchError, match="s2.tif is 6x8 uint16"):
        read_all(tmp_path)


def test_infinity_in_float_data(tmp_path):
    """(NaN reads as it is: no data, which the engine takes from other slices; tests/test_no_data.py.)"""
    data = np.zeros((3, 6, 8), np.float32)
    data[2, 1, 1] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "ZYX"})
    assert np.isnan(read_all(path)[0][2, 1, 1])
    data[2, 1, 1] = -np.inf
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(InvalidPixelsError, match=r"nan.tif: slice 2 \(counting from 0\) holds infinity"):
        read_all(path)


def test_several_positions_and_times_are_not_one_stack(tmp_path):
    path = tmp_path / "tz.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 6, 8), np.uint8), metadata={"axes": "TZYX"})
    with pytest.raises(StackLayoutError, match="tz.ome.tif: axes TZYX"):
        open_stack(path)


@pytest.mark.parametrize("dtype, detail", [(np.float64, "7 significant digits"), (np.uint32, "beyond 2^24"),
                                           (np.int16, "")])
def test_pixel_types_fused_as_float32_say_so_once(tmp_path, dtype, detail):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, (ZYX // 2).astype(dtype), metadata={"axes": "ZYX"})
    with open_stack(path) as stack, pytest.warns(UserWarning, match=f"{np.dtype(dtype)} pixels are fused as float32") \
            as caught:
        slices = [pixels for pixels, _ in stack]
    assert all(s.dtype == np.float32 for s in slices)
    assert len(caught) == 1 and detail in str(caught[0].message)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_slices_taken_with_the_camera_turned_are_read_as_they_are_shown(tmp_path, suffix):
    from PIL import Image, ImageOps

    stored = RNG.integers(0, 255, (3, 24, 32, 3)).astype(np.uint8)  # landscape as the sensor stores it
    for k, pixels in enumerate(stored):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = 6  # the camera held a quarter turn clockwise: shown portrait
        image.save(tmp_path / f"s{k}{suffix}", exif=exif, quality=95)
    with open_stack(tmp_path) as stack:
        assert stack.declared_size(0)[:2] == (32, 24)
        slices = [pixels for pixels, _ in stack]
    for k, pixels in enumerate(slices):
        shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"s{k}{suffix}")))  # as viewers show it
        assert pixels.shape == (32, 24, 3)
        np.testing.assert_array_equal(pixels, shown)


@pytest.mark.parametrize("orientation", [3, 6, 2])
def test_a_slice_whose_exif_orientation_alone_differs_is_turned_as_the_first_one_is(tmp_path, orientation, recwarn):
    """A camera pointing straight down writes its orientation tag at random: followed, slice 2 came out upside down
    (or turned) over the same scene, and the fused image was a double exposure with only an alignment warning."""
    from PIL import Image

    for k, pixels in enumerate(ZYXS[:3]):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        if k == 2:
            exif[0x0112] = orientation
        image.save(tmp_path / f"s{k}.png", exif=exif)
    data, _, _ = read_all(tmp_path)
    np.testing.assert_array_equal(data, ZYXS[:3])  # as stored, as the first slice is shown
    said = [str(w.message) for w in recwarn if "EXIF orientation" in str(w.message)]
    assert len(said) == 1 and f"s2.png's EXIF orientation ({orientation}: shown " in said[0], said
    assert "differs from s0.png's (1: shown as stored), though their pixels are stored alike" in said[0], said


def test_a_slice_taken_turned_is_read_as_its_exif_orientation_shows_it(tmp_path, recwarn):
    """Where a slice's pixels are stored turned (the camera was turned for it, and says so), its tag is followed."""
    from PIL import Image

    for k, pixels in enumerate(ZYXS[:3]):
        stored = np.ascontiguousarray(np.rot90(pixels, 1)) if k == 2 else pixels  # 32x24 as stored
        image = Image.fromarray(stored)
        exif = image.getexif()
        if k == 2:
            exif[0x0112] = 6  # shown a quarter turn clockwise: 24x32, as the others
        image.save(tmp_path / f"s{k}.png", exif=exif)
    data, _, _ = read_all(tmp_path)
    np.testing.assert_array_equal(data, ZYXS[:3])
    assert not [w for w in recwarn if "EXIF orientation" in str(w.message)]


def test_a_slice_of_another_size_turned_by_its_exif_orientation_is_named_as_the_cause(tmp_path):
    from PIL import Image

    for k, pixels in enumerate(ZYXS[:3]):
        image = Image.fromarray(pixels[:, :30] if k == 2 else pixels)
        exif = image.getexif()
        if k == 2:
            exif[0x0112] = 6  # this one shot with the camera turned, and cropped
        image.save(tmp_path / f"s{k}.jpg", exif=exif)
    with pytest.raises(SliceMismatchError, match="s2.jpg is 30x24x3 uint8 but s0.jpg is 24x32x3 uint8: s2.jpg is "
                                                 "shown a quarter turn round, as its EXIF orientation says"):
        read_all(tmp_path)


@pytest.mark.parametrize("mode, options", [("RGB", {}), ("RGB", {"progressive": True}), ("RGB", {"subsampling": 0}),
                                           ("L", {}), ("L", {"progressive": True})])
def test_jpeg_slices_read_as_pillow_decodes_them(tmp_path, mode, options):
    """The fast JPEG decoder (libjpeg-turbo by imagecodecs) gives Pillow's values to the bit, and a JPEG named .png
    (the scorpion stack's) is read as the JPEG it is."""
    from PIL import Image

    for k, pixels in enumerate(ZYXS):
        Image.fromarray(pixels).convert(mode).save(tmp_path / f"s{k}{'.png' if k == 1 else '.jpg'}", "JPEG", **options)
    data, _, _ = read_all(tmp_path)
    expected = [np.asarray(Image.open(path)) for path in sorted(tmp_path.iterdir())]
    np.testing.assert_array_equal(data, np.stack(expected))


@pytest.mark.parametrize("kept_bytes", [3, 4, 10, 20, 200, -200, -2])
def test_a_truncated_jpeg_is_named_not_fused_with_grey_where_it_was_cut(tmp_path, kept_bytes):
    from PIL import Image

    for k, pixels in enumerate(ZYXS):
        Image.fromarray(pixels).save(tmp_path / f"s{k}.jpg", quality=95)
    whole = (tmp_path / "s2.jpg").read_bytes()
    (tmp_path / "s2.jpg").write_bytes(whole[:kept_bytes])
    with pytest.raises(UnreadableStackError, match=r"s2.jpg is not a readable image \(truncated or damaged: the file "
                                                   "ends before its image does"):
        read_all(tmp_path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_cmyk_jpeg_slices_are_read_as_their_rgb_colours(tmp_path, suffix, recwarn):
    """Also under a .png name: its C, M, Y were read as red, green, blue and its K dropped as "alpha"."""
    from PIL import Image

    for k, pixels in enumerate(ZYXS):
        Image.fromarray(pixels).convert("CMYK").save(tmp_path / f"s{k}{suffix}", "JPEG", quality=95)
    data, _, _ = read_all(tmp_path)
    assert data.shape == ZYXS.shape  # not 4 samples, which were written as RGB plus alpha (K): see-through, inverted
    for k in range(len(ZYXS)):
        np.testing.assert_array_equal(data[k], np.asarray(Image.open(tmp_path / f"s{k}{suffix}").convert("RGB")))
    assert not [w for w in recwarn if "alpha" in str(w.message)]


def test_an_rgba_png_named_jpg_is_said_to_lose_its_transparency(tmp_path, recwarn):
    from PIL import Image

    for k, pixels in enumerate(ZYXS):
        image = np.dstack([pixels, np.full(pixels.shape[:2], 255 if k else 0, np.uint8)])
        Image.fromarray(image, "RGBA").save(tmp_path / f"s{k}.jpg", "PNG")
    data, _, _ = read_all(tmp_path)
    np.testing.assert_array_equal(data, ZYXS)
    assert len([w for w in recwarn if "alpha channel (transparency) is not fused" in str(w.message)]) == 1


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_not_fused_and_transparency_is_said_once(tmp_path, mode, recwarn):
    from PIL import Image

    for k, pixels in enumerate(ZYXS):
        image = np.asarray(Image.fromarray(pixels).convert(mode)).copy()
        image[:4, :, -1] = 0 if k == 1 else 255  # part of one slice transparent
        Image.fromarray(image, mode).save(tmp_path / f"s{k}.png")
    data, _, _ = read_all(tmp_path)
    expected = [np.asarray(Image.open(tmp_path / f"s{k}.png").convert(mode[:-1])) for k in range(len(ZYXS))]
    np.testing.assert_array_equal(data, np.stack(expected))  # grey or RGB: alpha steered a grey stack's focus
    said = [w for w in recwarn if "alpha channel (transparency) is not fused" in str(w.message)]
    assert len(said) == 1


def test_a_slice_whose_link_leads_nowhere_is_named_not_passed_over(tmp_path):
    for k, pixels in enumerate(ZYX):
        tifffile.imwrite(tmp_path / f"s{k}.tif", pixels)
    (tmp_path / "s2.tif").unlink()
    (tmp_path / "s2.tif").symlink_to(tmp_path / "unmounted" / "s2.tif")  # a share not mounted
    with pytest.raises(UnreadableStackError, match=r"s2.tif is a link to .*unmounted/s2.tif, which does not exist"):
        open_stack(tmp_path)
    (tmp_path / "s2.tif").unlink()
    (tmp_path / "s2.tif").symlink_to("s9.tif")
    (tmp_path / "s9.tif").symlink_to("s2.tif")
    with pytest.raises(UnreadableStackError, match=r"s2.tif is a link to s9.tif, which leads round in a loop"):
        open_stack(tmp_path)


@pytest.mark.parametrize("suffix,orientation", [(".png", None), (".png", 8), (".jpg", None), (".jpg", 3)])
def test_an_image_slice_is_opened_and_decoded_once(tmp_path, monkeypatch, suffix, orientation):
    """Its size was checked, its pixels decoded and its EXIF orientation read by three openings of the file;
    Pillow decodes a PNG without EXIF to look for it after the pixels, so such a PNG was decoded three times
    (a 5 MP slice read in 0.31 s, not 0.12 s). A JPEG's pixels are decoded by imagecodecs, a PNG's by Pillow."""
    import imagecodecs
    from PIL import Image, ImageFile, ImageOps

    for k, pixels in enumerate(RNG.integers(0, 255, (2, 24, 32, 3)).astype(np.uint8)):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        if orientation is not None:
            exif[0x0112] = orientation
        image.save(tmp_path / f"s{k}{suffix}", exif=exif, quality=95)
    opened, decoded = [], []
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def counted_open(file, *args, **kwargs):
        opened.append(file)
        return real_open(file, *args, **kwargs)

    def counted_load(image):
        if image.tile:  # (pixels still to decode; load() is called again on a decoded image)
            decoded.append(image)
        return real_load(image)

    real_jpeg_decode = imagecodecs.jpeg8_decode

    def counted_jpeg_decode(data, *args, **kwargs):
        decoded.append(data)
        return real_jpeg_decode(data, *args, **kwargs)

    with open_stack(tmp_path) as stack:
        shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"s1{suffix}")))  # as viewers show it
        stack.read_slice(0)
        monkeypatch.setattr(Image, "open", counted_open)
        monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
        monkeypatch.setattr(imagecodecs, "jpeg8_decode", counted_jpeg_decode)
        pixels = stack.read_slice(1)
    assert len(opened) == 1 and len(decoded) == 1
    np.testing.assert_array_equal(pixels, shown)


@pytest.mark.parametrize("written_as", [{}, {"photometric": "minisblack", "metadata": {"axes": "ZYX"}}])
def test_frames_one_pixel_wide_are_refused_as_such_not_as_a_corrupt_file(tmp_path, written_as):
    # tifffile keeps frames 1 px wide several to a page: read page by page, the stack looked truncated, or like
    # one that runs along Y.
    path = tmp_path / "thin.tif"
    tifffile.imwrite(path, np.zeros((7, 256, 1), np.uint8), **written_as)
    with pytest.raises(StackLayoutError, match="not one frame per page .* frames this thin cannot be fused"):
        open_stack(path)


def test_a_negative_z_step_starts_at_zero_not_minus_zero(tmp_path):
    path = tmp_path / "down.ome.tif"
    tifffile.imwrite(path, ZYX, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": -2.0})
    with open_stack(path) as stack:
        z_um = stack.z_positions_um
    assert z_um == [0.0, -2.0, -4.0, -6.0, -8.0] and str(z_um[0]) == "0.0"


def test_a_folder_passes_over_our_outputs_but_not_slices_only_named_like_them(tmp_path):
    # One rule for "ours" in folders as on the command line: named as ours and with a report of ours beside it.
    for k in range(3):
        imageio.imwrite(tmp_path / f"s{k}.png", RNG.integers(0, 255, (24, 32)).astype(np.uint8))
    imageio.imwrite(tmp_path / "s3.fused.tif", RNG.integers(0, 255, (24, 32)).astype(np.uint8))  # someone's slice
    with open_stack(tmp_path) as stack:
        assert stack.n_slices == 4
    (tmp_path / "s3.json").write_text("{}")  # now it is a refusion's output, with its report
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (passed over without a word, as a reader always did)
        with open_stack(tmp_path) as stack:
            assert stack.n_slices == 3


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_image_slice_too_large_for_memory_is_refused_by_its_header(tmp_path, monkeypatch, suffix):
    import fusion.memory
    from fusion.errors import StackTooLargeError

    imageio.imwrite(tmp_path / f"s0{suffix}", np.zeros((24, 32, 3), np.uint8))
    monkeypatch.setattr(fusion.memory, "available_memory_bytes", lambda: 1000)
    with open_stack(tmp_path) as stack, pytest.raises(StackTooLargeError) as caught:
        stack.read_slice(0)
    assert str(caught.value).startswith(f"{tmp_path}: s0{suffix} declares 24 x 32 pixels x 3 of uint8: fusing it "
                                        "needs about")


# ---- PNGs that Pillow reads wrong: 16-bit colour, and transparency in a tRNS chunk ----

def write_png16(path, pixels):
    """A 16-bit PNG as a scientific camera's software or a script writes one with OpenCV, which takes BGR(A): the
    channels flipped so that the file holds ``pixels``' RGB(A). Grey + alpha, which OpenCV does not write, by
    libpng (imagecodecs)."""
    import cv2
    import imagecodecs

    if pixels.ndim == 3 and pixels.shape[2] == 2:
        path.write_bytes(imagecodecs.png_encode(pixels))
    else:
        assert cv2.imwrite(str(path), pixels[:, :, [2, 1, 0, 3][:pixels.shape[2]]] if pixels.ndim == 3 else pixels)
    assert path.read_bytes()[24] == 16  # IHDR's bit depth


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


WIDE = RNG.integers(0, 65536, (3, 24, 32, 4)).astype(np.uint16)  # every bit used, the low byte too


@pytest.mark.parametrize("samples", [3, 4, 2, 1], ids=["rgb", "rgba", "grey+alpha", "grey"])
def test_16_bit_pngs_are_read_at_their_depth(tmp_path, samples, recwarn):
    """Pillow decoded 16-bit RGB, RGBA and grey + alpha to 8 bits (grey + alpha to RGBA): the fused image lost the
    low byte of every sample. 16-bit grey it read whole."""
    stored = WIDE[..., :samples] if samples > 1 else WIDE[..., 0]
    if samples in (2, 4):
        stored = stored.copy()
        stored[..., -1] = 65535  # opaque: nothing to say about alpha
    for k, pixels in enumerate(stored):
        write_png16(tmp_path / f"s{k}.png", pixels)
    with open_stack(tmp_path) as stack:
        assert stack.declared_size(0) == (24, 32, samples, np.dtype(np.uint16))
    data, _, _ = read_all(tmp_path)
    np.testing.assert_array_equal(data, stored[..., :-1].squeeze(-1) if samples == 2 else
                                  stored[..., :3] if samples == 4 else stored)
    assert not [w for w in recwarn if "alpha" in str(w.message)]


def test_a_16_bit_colour_png_shown_turned_is_read_as_shown_and_decoded_once(tmp_path, monkeypatch):
    """Its EXIF orientation is honoured as an 8-bit PNG's, also where the eXIf chunk follows the pixels; Pillow's PNG
    reader would decode the pixels (at 8 bits) to look there."""
    from PIL import Image, ImageFile

    exif = Image.Exif()
    exif[0x0112] = 6  # shown a quarter turn clockwise
    for k, pixels in enumerate(WIDE[:2, ..., :3]):
        write_png16(tmp_path / f"s{k}.png", pixels)
        data = (tmp_path / f"s{k}.png").read_bytes()  # eXIf between the last IDAT and IEND
        (tmp_path / f"s{k}.png").write_bytes(data[:-12] + png_chunk(b"eXIf", exif.tobytes()[6:]) + data[-12:])
    decoded = []
    real_load = ImageFile.ImageFile.load

    def counted_load(image):
        if image.tile:
            decoded.append(image)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    with open_stack(tmp_path) as stack:
        assert stack.declared_size(1) == (32, 24, 3, np.dtype(np.uint16))
        pixels = stack.read_slice(1)
    np.testing.assert_array_equal(pixels, np.rot90(WIDE[1, ..., :3], -1))
    assert not decoded


def test_a_16_bit_colour_png_too_large_for_memory_is_refused_by_its_header(tmp_path, monkeypatch):
    import fusion.memory
    from fusion.errors import StackTooLargeError

    write_png16(tmp_path / "s0.png", WIDE[0, ..., :3])
    monkeypatch.setattr(fusion.memory, "available_memory_bytes", lambda: 1000)
    with open_stack(tmp_path) as stack, pytest.raises(StackTooLargeError, match="s0.png declares 24 x 32 pixels x 3 "
                                                                                 "of uint16: fusing it needs about"):
        stack.read_slice(0)


def test_a_damaged_16_bit_colour_png_is_named_in_one_line(tmp_path):
    write_png16(tmp_path / "s0.png", WIDE[0, ..., :3])
    write_png16(tmp_path / "s1.png", WIDE[1, ..., :3])
    data = (tmp_path / "s1.png").read_bytes()
    (tmp_path / "s1.png").write_bytes(data[:len(data) // 2])  # cut inside its pixels
    with pytest.raises(UnreadableStackError, match=r"s1.png is not a readable image \(") as caught:
        read_all(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_stack_of_16_bit_colour_pngs_is_fused_at_16_bits(tmp_path):
    from scipy import ndimage

    from fusion.refuse import refuse_stack

    texture = ndimage.gaussian_filter(np.random.default_rng(3).random((64, 80, 3)), (1, 1, 0))
    low_bits = np.random.default_rng(4).integers(0, 256, texture.shape)
    slices = [(ndimage.gaussian_filter(texture, (sigma, sigma, 0)) * 60000).astype(np.uint16) | low_bits.astype(
        np.uint16) for sigma in (0.1, 1.5, 3.0, 1.5)]
    folder = tmp_path / "camera"
    folder.mkdir()
    for k, pixels in enumerate(slices):
        write_png16(folder / f"s{k}.png", pixels)
    report = refuse_stack(folder, tmp_path / "out", progress=False)
    fused = tifffile.imread(report.outputs["fused"])
    assert fused.shape == (64, 80, 3) and fused.dtype == np.uint16
    assert len(np.unique(fused & 0xFF)) > 200  # the low byte is the slices', not 0 or a copy of the high byte
    assert np.abs(fused.astype(float) - slices[0]).mean() < 16  # the sharp slice, to its low bits (1.2 here)


def _palette_png(path, indices, transparent_index):
    from PIL import Image

    image = Image.fromarray(indices, "P")
    image.putpalette(np.random.default_rng(5).integers(0, 256, 16 * 3).astype(np.uint8).tobytes())
    image.save(path, **({} if transparent_index is None else {"transparency": transparent_index}))


def _colour_key_png(path, pixels, key):
    from PIL import Image

    Image.fromarray(pixels).save(path, transparency=key)  # a tRNS chunk: this one RGB colour is transparent


@pytest.mark.parametrize("kind,transparent", [("palette", True), ("palette", False), ("palette without tRNS", False),
                                              ("colour key", True), ("colour key", False)])
def test_transparency_of_a_trns_chunk_is_said_once_and_a_palette_is_fused_as_its_colours(tmp_path, recwarn, kind,
                                                                                        transparent):
    """A palette PNG's transparent entries and an RGB PNG's transparent colour (tRNS) went unsaid, as LA and RGBA
    PNGs' alpha did not; said only where some pixel is transparent."""
    from PIL import Image

    for k in range(3):
        planted = transparent and k == 1  # part of one slice transparent
        if kind.startswith("palette"):
            indices = np.random.default_rng(k).integers(0, 15, (24, 32)).astype(np.uint8)
            if planted:
                indices[:4] = 15
            _palette_png(tmp_path / f"s{k}.png", indices, None if "without" in kind else 15)
        else:
            pixels = ZYXS[k] | 1  # (no pixel is black but those planted)
            if planted:
                pixels[:4] = 0
            _colour_key_png(tmp_path / f"s{k}.png", pixels, (0, 0, 0))
    data, _, _ = read_all(tmp_path)
    expected = [np.asarray(Image.open(tmp_path / f"s{k}.png").convert("RGB")) for k in range(3)]
    np.testing.assert_array_equal(data, np.stack(expected))  # the colours, not the palette's indices
    said = [w for w in recwarn if "alpha channel (transparency) is not fused" in str(w.message)]
    assert len(said) == int(transparent)


def _saved_stack(path, z, unit="um"):
    from fusion.stack_buffer import StackBuffer

    buffer = StackBuffer(path, pixel_size_um=0.5)
    for index, position in enumerate(z):
        buffer.append(ZYX[index], z=float(position), time_s=float(index), exposure_ms=10.0, unit=unit)
    buffer.finalize({}, unit)
    return path


@pytest.mark.parametrize("z", [[0.0, 2.0, 4.0], [2.0]], ids=["three slices", "one slice"])
def test_a_live_session_folder_opens_as_its_stack(tmp_path, z):
    """open_stack(session folder) told a Python user to run --refuse on its stack.ome.tif; the command line reads the
    folder as that stack, and so does open_stack now (fusion.stack_arguments.stacks_in: the one rule). A session of
    one slice opened as a folder of images, without its z."""
    import json

    from fusion.outputs import write_image_tiff

    folder = tmp_path / "20240501-101010"
    folder.mkdir()
    _saved_stack(folder / "stack.ome.tif", z)
    write_image_tiff(folder / "fused.tif", ZYX[0])
    (folder / "session.json").write_text(json.dumps({}))
    with open_stack(folder) as stack:
        assert stack.path == folder / "stack.ome.tif" and stack.name == folder.name
        assert [at for _, at in stack] == z


def test_iterating_a_stack_gives_what_push_takes_a_lens_stack_its_focal_powers(tmp_path):
    """Iteration gave z_positions_um: None for a tunable lens's stack (its z in dpt), and the NaN of a bad ImageJ
    spacing, which push refuses. It gives usable_focus_positions now."""
    from fusion import StreamingFusion

    path = _saved_stack(tmp_path / "lens.stack.ome.tif", [-1.5, 0.0, 1.5], unit="dpt")
    with open_stack(path) as stack:
        assert [z for _, z in stack] == [-1.5, 0.0, 1.5] and stack.usable_focus_positions()[1] == "dpt"
    path = tmp_path / "fiji_nan.tif"
    tifffile.imwrite(path, ZYX, imagej=True, metadata={"axes": "ZYX", "spacing": float("nan")})
    engine = StreamingFusion(ZYX.shape[1:], ZYX.dtype)
    with open_stack(path) as stack, pytest.warns(UserWarning, match="a focus position of nan for 5 of 5 slices"):
        for pixels, z in stack:
            assert z is None
            engine.push(pixels, z)
