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
