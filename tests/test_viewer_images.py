"""What the live view sends to the browser: downscaled previews with automatic contrast."""
import cv2
import numpy as np

from viewer.images import depth_png_bytes, png_bytes, to_display


def test_sixteen_bit_data_is_stretched_to_its_own_range():
    twelve_bit = np.linspace(1000, 1400, 64 * 64).reshape(64, 64).astype(np.uint16)
    shown = to_display(twelve_bit)
    assert shown.dtype == np.uint8 and shown.min() <= 2 and shown.max() >= 253


def test_previews_are_downscaled_pngs_and_full_resolution_on_request():
    image = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3)).astype(np.uint8)
    preview = cv2.imdecode(np.frombuffer(png_bytes(image), np.uint8), cv2.IMREAD_UNCHANGED)
    full = cv2.imdecode(np.frombuffer(png_bytes(image, None), np.uint8), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (720, 960, 3) and full.shape == image.shape
    np.testing.assert_array_equal(full[:, :, ::-1], image)  # PNG holds BGR for OpenCV: same pixels


def test_depth_is_colour_mapped_between_its_limits():
    depth = np.tile(np.linspace(0, 40, 100, dtype=np.float32), (10, 1))
    colours = cv2.imdecode(np.frombuffer(depth_png_bytes(depth, 0, 40), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert tuple(colours[0, 0]) != tuple(colours[0, -1])
    assert colours[0, 0, 2] > colours[0, 0, 1]   # viridis starts purple ...
    assert colours[0, -1, 1] > colours[0, -1, 2]  # ... and ends yellow


def decoded_rgb(png: bytes | None) -> np.ndarray:
    assert png is not None
    return np.asarray(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))[:, :, ::-1]


def test_separate_channels_are_a_composite_each_in_its_own_range():
    """Three fluorescence channels, the third a tenth as bright: as RGB it is near black; as channels it shows."""
    rng = np.random.default_rng(0)
    detail = rng.integers(100, 4000, (64, 64))
    channels = np.stack([detail, detail // 2, detail // 10], axis=-1).astype(np.uint16)
    as_rgb, as_channels = to_display(channels, colour=True), to_display(channels, colour=False)
    assert as_rgb[:, :, 2].max() < 40 and as_channels[:, :, 2].max() >= 250  # blue: ImageJ's third colour
    assert as_channels[:, :, 0].max() >= 250 and as_channels[:, :, 1].max() >= 250


def test_two_and_five_channels_are_drawn_in_imagejs_colours():
    """2 channels could not be drawn (OpenCV has no RGB of 2 samples); the 4th and 5th of 5 were not shown."""
    two = np.zeros((32, 48, 2), np.uint16)
    two[:, :24, 0] = two[:, 24:, 1] = 3000
    colours = decoded_rgb(png_bytes(two))
    assert tuple(colours[0, 0]) == (255, 0, 0) and tuple(colours[0, -1]) == (0, 255, 0)
    five = np.zeros((40, 40, 5), np.float32)
    five[:20, :20, 3] = five[20:, 20:, 4] = 1.0  # grey, then cyan
    colours = decoded_rgb(png_bytes(five, None))
    assert tuple(colours[0, 0]) == (255, 255, 255) and tuple(colours[-1, -1]) == (0, 255, 255)
    assert tuple(colours[0, -1]) == (0, 0, 0)


def test_refuse_view_shows_a_fused_fluorescence_hyperstack_as_a_composite(tmp_path):
    """`--refuse ... --view`: the page learns from the fused TIFF that its 3 channels are not an RGB picture."""
    import tifffile

    from fusion.batch import StackOutcome
    from fusion.refuse import refuse_stack
    from run_session import show_outcome
    from tests.test_channels import fluorescence
    from viewer.state import LiveViewState

    data = fluorescence(np.uint16)  # (Z, C, Y, X)
    data[:, 2] //= 20  # the third channel dim: as RGB, its blue would not show
    tifffile.imwrite(tmp_path / "cells.tif", data, imagej=True, metadata={"axes": "ZCYX", "mode": "composite"})
    report = refuse_stack(tmp_path / "cells.tif", tmp_path / "out", progress=False)
    view = LiveViewState("refusing", mode="refuse")
    show_outcome(view, tmp_path / "out", StackOutcome(report.stack, report.name, "done", report.n_slices, 1.0))
    shown = decoded_rgb(view.png("fused", full=True))
    assert shown.shape == (*data.shape[2:], 3) and shown[:, :, 2].max() >= 250


def test_refuse_view_shows_grey_and_older_two_channel_fused_images(tmp_path):
    """The fused TIFF's first page says whether it is colour: a grey image is not, nor 2 channels kept as the
    samples of one page (YXC, as an earlier version wrote them), which went down the RGB path and failed there
    (OpenCV has no RGB of 2 samples)."""
    import tifffile

    from fusion.batch import StackOutcome
    from fusion.outputs import write_depth_tiff, write_image_tiff
    from fusion.readers.tiff import fused_tiff_is_colour
    from run_session import show_outcome
    from viewer.state import LiveViewState

    two = np.zeros((32, 48, 2), np.uint16)
    two[:, :24, 0] = two[:, 24:, 1] = 3000
    tifffile.imwrite(tmp_path / "old.fused.tif", two, photometric="minisblack", planarconfig="contig")
    write_image_tiff(tmp_path / "grey.fused.tif", two[:, :, 0])
    write_image_tiff(tmp_path / "photo.fused.tif", np.zeros((32, 48, 3), np.uint8))
    write_image_tiff(tmp_path / "cells.fused.tif", two, colour=False)
    assert [fused_tiff_is_colour(tmp_path / f"{name}.fused.tif") for name in ("old", "grey", "photo", "cells")] == \
        [False, False, True, False]
    for name in ("old", "grey"):
        write_depth_tiff(tmp_path / f"{name}.depth.tif", np.zeros((32, 48), np.float32), "um")
        view = LiveViewState("refusing", mode="refuse")
        show_outcome(view, tmp_path, StackOutcome(str(tmp_path / f"{name}.tif"), name, "done", 3, 1.0))
        assert view._fused_colour is False
        shown = decoded_rgb(view.png("fused", full=True))
        assert shown.shape == (32, 48, 3)
    assert tuple(shown[0, 0]) == (255, 255, 255) and tuple(shown[0, -1]) == (0, 0, 0)  # grey: left bright
